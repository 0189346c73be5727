import threading

from erofsd.lru import Lru


def test_forgets_the_least_recently_used_first():
    lru: Lru[str, int] = Lru(2)
    lru.put("a", 1)
    lru.put("b", 2)
    assert lru.get("a") == 1  # a is now newer than b
    lru.put("c", 3)
    assert (lru.get("a"), lru.get("b"), lru.get("c")) == (1, None, 3)


def test_weights_bound_the_total_and_replacing_a_key_does_not_count_twice():
    lru: Lru[int, bytes] = Lru(10, len)
    lru.put(1, b"x" * 6)
    lru.put(1, b"y" * 6)
    lru.put(2, b"z" * 4)
    assert lru.get(1) == b"y" * 6 and lru.get(2) == b"z" * 4
    lru.put(3, b"w" * 5)  # 6 + 4 + 5 > 10: the oldest (1) goes, and that is enough
    assert (lru.get(1), lru.get(2), lru.get(3)) == (None, b"z" * 4, b"w" * 5)
    lru.put(4, b"v" * 11)  # heavier than everything: not kept, nothing evicted
    assert lru.get(4) is None and lru.get(2) == b"z" * 4 and lru.get(3) == b"w" * 5


def test_get_or_make_makes_only_what_is_missing():
    lru: Lru[str, int] = Lru(4)
    made = []
    assert lru.get_or_make("a", lambda: made.append("a") or 1) == 1
    assert lru.get_or_make("a", lambda: made.append("again") or 2) == 1
    assert made == ["a"]


def test_a_stored_none_is_told_apart_from_a_missing_key():
    lru: Lru[str, None] = Lru(4)
    unknown = object()
    assert lru.get("k", unknown) is unknown
    lru.put("k", None)
    assert lru.get("k", unknown) is None


def test_concurrent_puts_keep_the_bound():
    lru: Lru[int, int] = Lru(50)

    def fill(base: int) -> None:
        for i in range(2000):
            lru.put(base + i, i)
            lru.get(base + i // 2)

    threads = [threading.Thread(target=fill, args=(n * 10_000,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(lru) == 50
