"""The shared-domain registry: domains, cookies and their reference counts.

It follows the kernel (fs/erofs/fscache.c, Linux 6.1-6.3; DESIGN.md section 3):

1. A mount names an fsid and optionally a domain_id.
2. No domain: a private volume ``erofs,<fsid>``; that fsid registered twice
   privately is EEXIST (so is a private fsid equal to a live domain's id:
   both would be volume ``erofs,<id>``).
3. A domain is found or created and referenced; each blob's cookie is found
   or created in the domain's volume and referenced, so a blob is cached
   once per domain.
4. The bootstrap is never shared: the same fsid twice in one domain is
   EEXIST, decided before anything is taken. Blobs and fsids are separate
   namespaces.
5. Unregistering drops the mount's cookie references and its domain
   reference; a cookie at 0 is released, a domain at 0 is removed.
6. A registration that fails part-way releases exactly what it took.
7. ``status`` mirrors sysfs: domains with their counts, cookies with theirs.
8. Names are 1..255 bytes, without '/', ',' or NUL, not starting with '.'.

The registry knows nothing of mount points or data paths: a mount hands it
its fsid, its domain and the records of its blobs (anything with a
``digest``), and gets back a ``Registration`` of what it holds, which it
hands back to let go. What a cookie's object is, is the caller's: the
injected ``acquire(volume, blob)`` opens one and ``release(obj)`` closes it.

Opening a cookie's object can be slow, so it is never done under the
registry lock: a registration reserves placeholder cookies under the lock,
opens the ones it created outside it, and waits for the ones another
registration is opening.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from .errors import AlreadyExists, ErofsdError, InvalidName, NotFound


class BlobRecord(Protocol):
    @property
    def digest(self) -> str: ...


Acquire = Callable[[str, Any], Any]  # (volume, blob record) -> cookie object
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
class Registration:
    """What one mount holds: its name, its volume, a reference on each of its cookies."""

    name: str
    fsid: str
    domain_id: str | None
    volume: str
    cookies: list[Cookie] = dataclasses.field(default_factory=list)
    live: bool = False

    @property
    def blobs(self) -> list[str]:
        return [cookie.blob for cookie in self.cookies]

    def objects(self) -> list[Any]:
        """The cookies' objects, in the order the blobs were given."""
        return [cookie.obj for cookie in self.cookies]


class DomainRegistry:
    def __init__(self, acquire: Acquire, release: Release) -> None:
        self._acquire = acquire
        self._release = release
        self._lock = threading.Lock()
        self._names: dict[str, Registration] = {}
        self._domains: dict[str, Domain] = {}
        self._cookies: dict[tuple[str, str], Cookie] = {}

    # -- register -----------------------------------------------------------------

    def register(self, fsid: str, domain_id: str | None,
                 blobs: Sequence[BlobRecord]) -> Registration:
        validate_name(fsid, "fsid")
        if domain_id is not None:
            validate_name(domain_id, "domain_id")
        name = mount_name(domain_id, fsid)
        volume = volume_of(domain_id, fsid)
        unique = list({blob.digest: blob for blob in blobs}.values())
        with self._lock:
            self._check_free(name, fsid, domain_id)
            registration = Registration(name, fsid, domain_id, volume)
            self._names[name] = registration
            domain = None
            if domain_id is not None:
                domain = self._domains.setdefault(domain_id, Domain(domain_id))
                domain.mounts += 1
            mine = []
            for blob in unique:
                cookie = self._cookies.get((volume, blob.digest))
                if cookie is None:
                    cookie = Cookie(volume, blob.digest)
                    self._cookies[(volume, blob.digest)] = cookie
                    if domain is not None:
                        domain.cookies[blob.digest] = cookie
                    mine.append((cookie, blob))
                cookie.refcount += 1
                registration.cookies.append(cookie)
        try:
            self._open_cookies(mine)
            for cookie in registration.cookies:
                cookie.ready.wait()
                if cookie.state == "failed":
                    raise cookie.error if isinstance(cookie.error, ErofsdError) else ErofsdError(
                        f"blob {cookie.blob} could not be opened: {cookie.error}")
        except BaseException:
            self._drop(registration)
            raise
        with self._lock:
            registration.live = True
        return registration

    def _check_free(self, name: str, fsid: str, domain_id: str | None) -> None:
        if name in self._names:
            if domain_id is not None:
                raise AlreadyExists(f"fsid {fsid} already exists in domain {domain_id}")
            raise AlreadyExists(f"fsid {fsid} is already mounted (volume erofs,{fsid})")
        if domain_id is None and fsid in self._domains:
            raise AlreadyExists(f"volume erofs,{fsid} belongs to domain {fsid}")
        if domain_id is not None and domain_id not in self._domains and domain_id in self._names:
            raise AlreadyExists(f"volume erofs,{domain_id} belongs to a private mount of "
                                f"fsid {domain_id}")

    def _open_cookies(self, mine: list[tuple[Cookie, BlobRecord]]) -> None:
        for i, (cookie, blob) in enumerate(mine):
            try:
                cookie.obj = self._acquire(cookie.volume, blob)
            except BaseException as e:
                for failed, _ in mine[i:]:
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

    # -- unregister ---------------------------------------------------------------

    def unregister(self, registration: Registration) -> None:
        with self._lock:
            if not registration.live or self._names.get(registration.name) is not registration:
                raise NotFound(f"no mount named {registration.name}")
            registration.live = False  # a second unregister of the same one is NotFound
        self._drop(registration)

    def _drop(self, registration: Registration) -> None:
        """Release everything ``registration`` holds, exactly once."""
        released = []
        with self._lock:
            for cookie in registration.cookies:
                cookie.refcount -= 1
                if cookie.refcount == 0:
                    key = (cookie.volume, cookie.blob)
                    if self._cookies.get(key) is cookie:
                        del self._cookies[key]
                    domain = self._domains.get(registration.domain_id or "")
                    if domain is not None and domain.cookies.get(cookie.blob) is cookie:
                        del domain.cookies[cookie.blob]
                    if cookie.obj is not None:
                        released.append(cookie.obj)
                        cookie.obj = None
            registration.cookies = []
            if registration.domain_id is not None:
                domain = self._domains[registration.domain_id]
                domain.mounts -= 1
                if domain.mounts == 0:
                    assert not domain.cookies, "a domain without mounts kept cookies"
                    del self._domains[registration.domain_id]
            del self._names[registration.name]
        for obj in released:
            self._release(obj)

    # -- views --------------------------------------------------------------------

    def get(self, name: str) -> Registration:
        with self._lock:
            registration = self._names.get(name)
            if registration is None or not registration.live:
                raise NotFound(f"no mount named {name}")
            return registration

    def registrations(self) -> list[Registration]:
        with self._lock:
            return sorted((r for r in self._names.values() if r.live), key=lambda r: r.name)

    def status(self, describe: Callable[[Any], dict] | None = None) -> dict:
        """The sysfs-like view: domains with their counts, cookies with theirs."""
        with self._lock:
            domains = list(self._domains.values())
            cookies = [c for c in self._cookies.values() if c.state == "ready"]
            return {
                "domains": [{"domain_id": d.domain_id, "mounts": d.mounts,
                             "cookies": len(d.cookies), "refcount": d.mounts + len(d.cookies)}
                            for d in sorted(domains, key=lambda d: d.domain_id)],
                "cookies": [{"volume": c.volume, "blob": c.blob, "refcount": c.refcount,
                             **(describe(c.obj) if describe and c.obj is not None else {})}
                            for c in sorted(cookies, key=lambda c: (c.volume, c.blob))],
            }

    def empty(self) -> bool:
        with self._lock:
            return not (self._names or self._domains or self._cookies)
