"""The shared-domain registry: each rule of DESIGN section 3, then a stress test."""

from __future__ import annotations

import dataclasses
import random
import threading
import time
from collections import Counter

import pytest

from erofsd.domain import DomainRegistry, default_fsid, validate_name
from erofsd.errors import AlreadyExists, ErofsdError, InvalidName, NotFound


@dataclasses.dataclass(frozen=True)
class Blob:
    """A blob record as the registry takes it: anything with a digest."""

    digest: str


def blobs(*digests: str) -> list[Blob]:
    return [Blob(d) for d in digests]


class Ledger:
    """Real bookkeeping of acquire/release calls, with optional injected failures."""

    def __init__(self, fail=None, delay: float = 0.0) -> None:
        self.opened: Counter = Counter()
        self.closed: Counter = Counter()
        self.fail = fail or (lambda volume, blob: False)
        self.delay = delay
        self.lock = threading.Lock()

    def acquire(self, volume, record):
        blob = record.digest
        if self.delay:
            time.sleep(random.uniform(0, self.delay))
        if self.fail(volume, blob):
            raise ErofsdError(f"injected failure opening {blob}")
        with self.lock:
            self.opened[(volume, blob)] += 1
        return (volume, blob)

    def release(self, obj):
        with self.lock:
            self.closed[obj] += 1

    @property
    def live(self) -> Counter:
        return self.opened - self.closed


@pytest.fixture
def ledger():
    return Ledger()


@pytest.fixture
def reg(ledger):
    return DomainRegistry(ledger.acquire, ledger.release)


def cookie_counts(reg):
    return {(c["volume"], c["blob"]): c["refcount"] for c in reg.status()["cookies"]}


def test_private_mounts_get_their_own_volume(reg, ledger):
    a = reg.register("img1", None, blobs("base", "app1"))
    b = reg.register("img2", None, blobs("base", "app2"))
    assert (a.name, a.volume, b.volume) == ("img1", "erofs,img1", "erofs,img2")
    assert ledger.opened[("erofs,img1", "base")] == ledger.opened[("erofs,img2", "base")] == 1
    with pytest.raises(AlreadyExists, match="already mounted") as info:
        reg.register("img1", None, blobs("base"))
    assert info.value.errno == 17
    assert reg.status()["domains"] == []


def test_domain_shares_cookies(reg, ledger):
    reg.register("img1", "d1", blobs("base", "app1"))
    reg.register("img2", "d1", blobs("base", "app2"))
    assert cookie_counts(reg) == {("erofs,d1", "base"): 2, ("erofs,d1", "app1"): 1,
                                  ("erofs,d1", "app2"): 1}
    assert ledger.opened[("erofs,d1", "base")] == 1  # opened once for the whole domain
    (domain,) = reg.status()["domains"]
    assert domain == {"domain_id": "d1", "mounts": 2, "cookies": 3, "refcount": 5}
    names = [r.name for r in reg.registrations()]
    assert names == ["d1,img1", "d1,img2"]


def test_same_fsid_twice_in_a_domain_changes_nothing(reg, ledger):
    reg.register("img1", "d1", blobs("base"))
    before = (reg.status(), dict(ledger.opened))
    with pytest.raises(AlreadyExists, match="already exists in domain d1"):
        reg.register("img1", "d1", blobs("base", "other"))
    assert (reg.status(), dict(ledger.opened)) == before


def test_domains_are_isolated(reg, ledger):
    reg.register("img1", "d1", blobs("base"))
    reg.register("img1", "d2", blobs("base"))  # the same fsid in another domain is fine
    assert ledger.opened[("erofs,d1", "base")] == ledger.opened[("erofs,d2", "base")] == 1


def test_unmount_releases_at_zero_and_removes_the_domain(reg, ledger):
    reg.register("img1", "d1", blobs("base", "app1"))
    reg.register("img2", "d1", blobs("base", "app2"))
    reg.unregister(reg.get("d1,img1"))
    assert ledger.closed == Counter({("erofs,d1", "app1"): 1})
    assert cookie_counts(reg) == {("erofs,d1", "base"): 1, ("erofs,d1", "app2"): 1}
    last = reg.get("d1,img2")
    reg.unregister(last)
    assert ledger.live == Counter() and reg.empty()
    with pytest.raises(NotFound):
        reg.unregister(last)  # twice: nothing is released twice
    with pytest.raises(NotFound):
        reg.get("d1,img2")


def test_blob_names_and_fsids_are_separate_namespaces(reg):
    reg.register("base", "d1", blobs("base"))  # an fsid equal to a blob name: no collision
    reg.register("img2", "d1", blobs("base"))
    assert cookie_counts(reg) == {("erofs,d1", "base"): 2}


def test_private_fsid_cannot_take_a_domains_volume(reg):
    reg.register("img1", "shared", blobs("b"))
    with pytest.raises(AlreadyExists, match="belongs to domain"):
        reg.register("shared", None, blobs("b"))
    reg.register("solo", None, blobs("b"))
    with pytest.raises(AlreadyExists, match="private mount"):
        reg.register("img9", "solo", blobs("b"))


def test_failure_part_way_releases_exactly_what_was_taken():
    ledger = Ledger(fail=lambda volume, blob: blob == "bad")
    reg = DomainRegistry(ledger.acquire, ledger.release)
    reg.register("img1", "d1", blobs("base"))
    with pytest.raises(ErofsdError, match="injected"):
        reg.register("img2", "d1", blobs("base", "app", "bad", "late"))
    assert cookie_counts(reg) == {("erofs,d1", "base"): 1}
    assert ledger.live == Counter({("erofs,d1", "base"): 1})
    assert ledger.closed == Counter({("erofs,d1", "app"): 1})
    assert [d["mounts"] for d in reg.status()["domains"]] == [1]
    reg.unregister(reg.get("d1,img1"))
    assert reg.empty() and ledger.live == Counter()


@pytest.mark.parametrize("bad", ["", "a/b", "a,b", "nul\0", ".hidden", "x" * 256,
                                 "é" * 128])
def test_names_are_validated(reg, bad):
    with pytest.raises(InvalidName):
        reg.register(bad, None, blobs("b"))
    with pytest.raises(InvalidName):
        reg.register("ok", bad, blobs("b"))
    assert reg.empty()


def test_valid_names_and_default_fsid():
    assert validate_name("a" * 255, "fsid") == "a" * 255
    assert validate_name("d-1_x.y", "domain_id")
    assert default_fsid("sha256:" + "ab" * 32) == "ab" * 8


def test_stress_concurrent_mounts_and_unmounts_with_failures():
    """Many threads mount and unmount over shared blobs with failures and slow opens."""
    rng = random.Random(5)
    failing = {f"blob{i}" for i in range(0, 12, 5)}
    ledger = Ledger(fail=lambda volume, blob: blob in failing and random.random() < 0.3,
                    delay=0.002)
    reg = DomainRegistry(ledger.acquire, ledger.release)
    domains = ["d1", "d2", "d3", None]
    plans = [(f"img{i}", rng.choice(domains), rng.sample([f"blob{j}" for j in range(12)], 4))
             for i in range(24)]
    errors: list[BaseException] = []
    counts = Counter()

    def worker(seed: int) -> None:
        r = random.Random(seed)
        for _ in range(150):
            fsid, domain, names = r.choice(plans)
            name = f"{domain},{fsid}" if domain else fsid
            try:
                if r.random() < 0.55:
                    reg.register(fsid, domain, blobs(*names))
                    counts["mounted"] += 1
                else:
                    reg.unregister(reg.get(name))
                    counts["unmounted"] += 1
            except (AlreadyExists, NotFound):
                counts["refused"] += 1
            except ErofsdError as e:
                if "injected" not in str(e):
                    errors.append(e)
                counts["failed"] += 1
            except BaseException as e:  # pragma: no cover - a bug
                errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert counts["mounted"] > 50 and counts["failed"] > 5 and counts["refused"] > 50
    # while mounts remain, every cookie's refcount equals the mounts that use it
    users = Counter()
    for registration in reg.registrations():
        for blob in registration.blobs:
            users[(registration.volume, blob)] += 1
    assert cookie_counts(reg) == dict(users)
    assert ledger.live == Counter(dict.fromkeys(users, 1))  # one open object per cookie
    for registration in reg.registrations():
        reg.unregister(registration)
    assert reg.empty()
    assert ledger.closed == ledger.opened  # every open has exactly one close


def test_cookies_open_from_the_blob_records_themselves():
    seen = []
    reg = DomainRegistry(lambda volume, record: seen.append((volume, record)) or record,
                         lambda obj: None)
    base, app = Blob("base"), Blob("app")
    registration = reg.register("img1", "d1", [base, app, base])
    assert seen == [("erofs,d1", base), ("erofs,d1", app)]  # a repeated blob: one cookie
    assert registration.objects() == [base, app] and registration.blobs == ["base", "app"]
    assert reg.register("img2", "d1", [app]).objects() == [app] and len(seen) == 2
