"""The shared-domain registry: domains, cookies, mounts and their reference counts.

It follows the kernel (fs/erofs/fscache.c, Linux 6.1-6.3; DESIGN.md section 3):

1. A mount names an fsid and optionally a domain_id.
2. No domain: a private volume ``erofs,<fsid>``; that fsid mounted twice
   privately is EEXIST (so is a private fsid equal to a live domain's id:
   both would be volume ``erofs,<id>``).
3. A domain is found or created and referenced; each blob's cookie is found
   or created in the domain's volume and referenced, so a blob is cached
   once per domain.
4. The bootstrap is never shared: the same fsid twice in one domain is
   EEXIST, decided before anything is taken. Blobs and fsids are separate
   namespaces.
5. Unmount drops the mount's cookie references and its domain reference;
   a cookie at 0 is released, a domain at 0 is removed.
6. A mount that fails part-way releases exactly what it took.
7. ``status`` mirrors sysfs: mounts named ``<domain_id>,<fsid>`` or ``<fsid>``.
8. Names are 1..255 bytes, without '/', ',' or NUL, not starting with '.'.

Opening a cookie's object (the cache's ``acquire``) can be slow, so it is
never done under the registry lock: a mount reserves placeholder cookies
under the lock, opens the ones it created outside it, and waits for the
ones another mount is opening.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Sequence
from typing import Any

from .errors import AlreadyExists, ErofsdError, InvalidName, NotFound

Acquire = Callable[[str, str, Any], Any]  # (volume, blob, context) -> cookie object
Release = Callable[[Any], None]


def validate_name(value: str, what: str) -> str:
    raw = value.encode() if isinstance(value, str) else value
    problem = None
    if not 1 <= len(raw) <= 255:
        problem = "must be 1..255 bytes"
    elif b"/" in raw or b"," in raw or b"\0" in raw:
        problem = "must not contain '/', ',' or NUL"
    elif raw.startswith(b"."):
        problem = "must not start with '.'"
    if problem:
        raise InvalidName(f"invalid {what} {value!r}: {problem}")
    return value


def default_fsid(bootstrap_digest: str) -> str:
    """The fsid of an image mounted without one: 16 hex digits of its bootstrap digest."""
    return bootstrap_digest.split(":", 1)[1][:16]


def volume_of(domain_id: str | None, fsid: str) -> str:
    return f"erofs,{domain_id if domain_id else fsid}"


def mount_name(domain_id: str | None, fsid: str) -> str:
    return f"{domain_id},{fsid}" if domain_id else fsid


@dataclasses.dataclass(eq=False)
class Cookie:
    volume: str
    blob: str
    refcount: int = 0
    obj: Any = None
    state: str = "opening"  # opening -> ready | failed
    error: BaseException | None = None
    ready: threading.Event = dataclasses.field(default_factory=threading.Event)


@dataclasses.dataclass(eq=False)
class Domain:
    domain_id: str
    mounts: int = 0
    cookies: dict[str, Cookie] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(eq=False)
class Mount:
    name: str
    fsid: str
    domain_id: str | None
    volume: str
    blobs: list[str]
    cookies: list[Cookie] = dataclasses.field(default_factory=list)
    info: dict[str, Any] = dataclasses.field(default_factory=dict)
    mounted: bool = False

    def cookie(self, blob: str) -> Cookie:
        for cookie in self.cookies:
            if cookie.blob == blob:
                return cookie
        raise NotFound(f"mount {self.name} has no blob {blob}")


class DomainRegistry:
    def __init__(self, acquire: Acquire, release: Release) -> None:
        self._acquire = acquire
        self._release = release
        self._lock = threading.Lock()
        self._mounts: dict[str, Mount] = {}
        self._domains: dict[str, Domain] = {}
        self._cookies: dict[tuple[str, str], Cookie] = {}

    # -- mount -----------------------------------------------------------------

    def mount(self, fsid: str, domain_id: str | None, blobs: Sequence[str], *,
              context: Any = None, info: dict[str, Any] | None = None) -> Mount:
        validate_name(fsid, "fsid")
        if domain_id is not None:
            validate_name(domain_id, "domain_id")
        name = mount_name(domain_id, fsid)
        volume = volume_of(domain_id, fsid)
        unique_blobs = list(dict.fromkeys(blobs))
        with self._lock:
            self._check_free(name, fsid, domain_id)
            mount = Mount(name, fsid, domain_id, volume, unique_blobs, info=dict(info or {}))
            self._mounts[name] = mount
            domain = None
            if domain_id is not None:
                domain = self._domains.setdefault(domain_id, Domain(domain_id))
                domain.mounts += 1
            mine = []
            for blob in unique_blobs:
                cookie = self._cookies.get((volume, blob))
                if cookie is None:
                    cookie = Cookie(volume, blob)
                    self._cookies[(volume, blob)] = cookie
                    if domain is not None:
                        domain.cookies[blob] = cookie
                    mine.append(cookie)
                cookie.refcount += 1
                mount.cookies.append(cookie)
        try:
            self._open_cookies(mine, context)
            for cookie in mount.cookies:
                cookie.ready.wait()
                if cookie.state == "failed":
                    raise cookie.error if isinstance(cookie.error, ErofsdError) else ErofsdError(
                        f"blob {cookie.blob} could not be opened: {cookie.error}")
        except BaseException:
            self._drop(mount)
            raise
        with self._lock:
            mount.mounted = True
        return mount

    def _check_free(self, name: str, fsid: str, domain_id: str | None) -> None:
        if name in self._mounts:
            if domain_id is not None:
                raise AlreadyExists(f"fsid {fsid} already exists in domain {domain_id}")
            raise AlreadyExists(f"fsid {fsid} is already mounted (volume erofs,{fsid})")
        if domain_id is None and fsid in self._domains:
            raise AlreadyExists(f"volume erofs,{fsid} belongs to domain {fsid}")
        if domain_id is not None and domain_id not in self._domains and domain_id in self._mounts:
            raise AlreadyExists(f"volume erofs,{domain_id} belongs to a private mount of "
                                f"fsid {domain_id}")

    def _open_cookies(self, mine: list[Cookie], context: Any) -> None:
        for i, cookie in enumerate(mine):
            try:
                cookie.obj = self._acquire(cookie.volume, cookie.blob, context)
            except BaseException as e:
                for failed in mine[i:]:
                    self._fail(failed, e)
                raise
            cookie.state = "ready"
            cookie.ready.set()

    def _fail(self, cookie: Cookie, error: BaseException) -> None:
        """A cookie that could not be opened leaves the registry, so a later mount retries."""
        with self._lock:
            if self._cookies.get((cookie.volume, cookie.blob)) is cookie:
                del self._cookies[(cookie.volume, cookie.blob)]
                for domain in self._domains.values():
                    if domain.cookies.get(cookie.blob) is cookie:
                        del domain.cookies[cookie.blob]
            cookie.state, cookie.error = "failed", error
        cookie.ready.set()

    # -- unmount ----------------------------------------------------------------

    def umount(self, name: str) -> Mount:
        with self._lock:
            mount = self._mounts.get(name)
            if mount is None or not mount.mounted:
                raise NotFound(f"no mount named {name}")
            mount.mounted = False  # a second umount of the same mount is NotFound
        self._drop(mount)
        return mount

    def _drop(self, mount: Mount) -> None:
        """Release everything ``mount`` holds, exactly once."""
        released = []
        with self._lock:
            for cookie in mount.cookies:
                cookie.refcount -= 1
                if cookie.refcount == 0:
                    key = (cookie.volume, cookie.blob)
                    if self._cookies.get(key) is cookie:
                        del self._cookies[key]
                    domain = self._domains.get(mount.domain_id or "")
                    if domain is not None and domain.cookies.get(cookie.blob) is cookie:
                        del domain.cookies[cookie.blob]
                    if cookie.obj is not None:
                        released.append(cookie.obj)
                        cookie.obj = None
            mount.cookies = []
            if mount.domain_id is not None:
                domain = self._domains[mount.domain_id]
                domain.mounts -= 1
                if domain.mounts == 0:
                    assert not domain.cookies, "a domain without mounts kept cookies"
                    del self._domains[mount.domain_id]
            del self._mounts[mount.name]
        for obj in released:
            self._release(obj)

    # -- views ------------------------------------------------------------------

    def get(self, name: str) -> Mount:
        with self._lock:
            mount = self._mounts.get(name)
            if mount is None or not mount.mounted:
                raise NotFound(f"no mount named {name}")
            return mount

    def mounts(self) -> list[Mount]:
        with self._lock:
            return [m for m in self._mounts.values() if m.mounted]

    def status(self, describe: Callable[[Any], dict] | None = None) -> dict:
        """The sysfs-like view: mounts, domains with their counts, cookies with theirs."""
        with self._lock:
            mounts = [m for m in self._mounts.values() if m.mounted]
            domains = list(self._domains.values())
            cookies = [c for c in self._cookies.values() if c.state == "ready"]
            return {
                "mounts": [{"name": m.name, "fsid": m.fsid, "domain_id": m.domain_id,
                            "volume": m.volume, "blobs": list(m.blobs), **m.info}
                           for m in sorted(mounts, key=lambda m: m.name)],
                "domains": [{"domain_id": d.domain_id, "mounts": d.mounts,
                             "cookies": len(d.cookies), "refcount": d.mounts + len(d.cookies)}
                            for d in sorted(domains, key=lambda d: d.domain_id)],
                "cookies": [{"volume": c.volume, "blob": c.blob, "refcount": c.refcount,
                             **(describe(c.obj) if describe and c.obj is not None else {})}
                            for c in sorted(cookies, key=lambda c: (c.volume, c.blob))],
            }

    def empty(self) -> bool:
        with self._lock:
            return not (self._mounts or self._domains or self._cookies)
