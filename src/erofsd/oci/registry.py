"""An OCI distribution (v2) client: manifests, ranged blob reads, uploads.

A ranged read takes a ``206`` only with a ``Content-Range`` naming exactly
the bytes asked for; a ``200`` carrying the whole blob is streamed and only
the wanted part kept, never the whole blob held. Redirects to storage
backends are followed (without the Authorization header when the origin
changes). Every call goes through ``Transport.call`` for retries.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator
from urllib.parse import urljoin

from ..errors import AuthError, BadReference, NotFound
from ..httpclient import Response
from .auth import Authenticator, Credentials
from .mediatypes import DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST
from .reference import RegistryRef
from .transport import Retryable, Transport, check_status, take_range

MAX_MANIFEST = 4 << 20
ACCEPT = ", ".join((OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST))
UPLOAD_PIECE = 1 << 20


class RegistryClient:
    def __init__(self, host: str, transport: Transport,
                 credentials: Credentials | None = None) -> None:
        self.host = host
        self.transport = transport
        self.base = f"{transport.scheme}://{host}/v2/"
        self.auth = Authenticator(host, transport.client, credentials)

    # -- plumbing -------------------------------------------------------------

    @contextlib.contextmanager
    def _open(self, method: str, repo: str, path: str, *, push: bool = False,
              headers: dict[str, str] | None = None, url: str | None = None,
              content: Callable[[], object] | None = None) -> Iterator[Response]:
        """One request with its 401 dance; yields an open (streamed) response."""
        scope = f"repository:{repo}:{'pull,push' if push else 'pull'}"
        target = url or urljoin(self.base, f"{repo}/{path}")
        for _ in range(3):
            response = self.transport.client.send(
                method, target, headers={**(headers or {}), **self.auth.header(scope)},
                body=content() if content else None)
            if response.status_code != 401:
                break
            response.read()
            response.close()
            self.auth.answer(response, scope)
        else:
            raise AuthError(f"registry {self.host}: still unauthorized for {scope}")
        try:
            if response.status_code == 403:
                raise AuthError(f"registry {self.host}: access to {repo} denied")
            yield response
        finally:
            response.close()

    # -- manifests -------------------------------------------------------------

    def get_manifest(self, ref: RegistryRef) -> tuple[bytes, str, str]:
        """(bytes, media type, digest) of the manifest or index ``ref`` names."""
        what = f"manifest {ref}"

        def attempt() -> tuple[bytes, str, str]:
            with self._open("GET", ref.repository, f"manifests/{ref.reference}",
                            headers={"Accept": ACCEPT}) as r:
                if r.status_code == 404:
                    raise NotFound(f"{ref}: no such manifest in registry {self.host}")
                body = _read_bounded(r, MAX_MANIFEST, what)
                check_status(r, what)
                media_type = r.headers.get("Content-Type", "").split(";")[0].strip()
                claimed = r.headers.get("Docker-Content-Digest")
            digest = "sha256:" + hashlib.sha256(body).hexdigest()
            expected = ref.digest or claimed
            if expected and expected != digest:  # a damaged reply: try again
                raise Retryable(f"{what}: content is {digest}, expected {expected}")
            return body, media_type, digest

        return self.transport.call(what, attempt)

    def get_referrers(self, repo: str, digest: str) -> bytes | None:
        """The OCI 1.1 referrers list of ``digest``; None when the registry has no such API
        (it answers 404, as Debian's docker-registry does)."""
        what = f"referrers of {repo}@{digest}"

        def attempt() -> bytes | None:
            with self._open("GET", repo, f"referrers/{digest}",
                            headers={"Accept": OCI_INDEX}) as r:
                if r.status_code == 404:
                    return None
                body = _read_bounded(r, MAX_MANIFEST, what)
                check_status(r, what)
                return body

        return self.transport.call(what, attempt)

    def put_manifest(self, ref: RegistryRef, data: bytes, media_type: str) -> str:
        what = f"push manifest {ref}"

        def attempt() -> str:
            with self._open("PUT", ref.repository, f"manifests/{ref.reference}", push=True,
                            headers={"Content-Type": media_type},
                            content=lambda: data) as r:
                r.read()
                check_status(r, what)
            return "sha256:" + hashlib.sha256(data).hexdigest()

        return self.transport.call(what, attempt)

    # -- blobs -----------------------------------------------------------------

    def blob_size(self, repo: str, digest: str) -> int | None:
        """The blob's size, or None when the registry does not have it."""
        what = f"blob {repo}@{digest}"

        def attempt() -> int | None:
            with self._open("HEAD", repo, f"blobs/{digest}") as r:
                if r.status_code == 404:
                    return None
                check_status(r, what)
                try:
                    return int(r.headers["Content-Length"])
                except (KeyError, ValueError):
                    raise Retryable(f"{what}: HEAD without a Content-Length") from None

        return self.transport.call(what, attempt)

    def read_range(self, repo: str, digest: str, offset: int, length: int) -> bytes:
        """Exactly ``length`` bytes of a blob from ``offset``."""
        if length <= 0:
            return b""
        last = offset + length - 1
        what = f"blob {digest[7:19]} bytes {offset}-{last}"

        def attempt() -> bytes:
            with self._open("GET", repo, f"blobs/{digest}",
                            headers={"Range": f"bytes={offset}-{last}"}) as r:
                return take_range(r, offset, length, what)

        return self.transport.call(what, attempt)

    def stream_blob(self, repo: str, digest: str, sink: Callable[[bytes], None],
                    restart: Callable[[], None]) -> None:
        """Feed a whole blob to ``sink``; ``restart`` is called before each new attempt."""
        what = f"blob {digest}"

        def attempt() -> None:
            restart()
            with self._open("GET", repo, f"blobs/{digest}") as r:
                if r.status_code == 404:
                    raise NotFound(f"{what}: the registry has no such blob")
                if r.status_code != 200:
                    r.read()
                    check_status(r, what)
                    raise Retryable(f"{what}: unexpected HTTP {r.status_code}")
                for piece in r.iter_bytes(UPLOAD_PIECE):
                    sink(piece)

        self.transport.call(what, attempt)

    def upload_blob(self, repo: str, digest: str, size: int,
                    open_body: Callable[[], Iterator[bytes]]) -> None:
        """Monolithic upload: POST for a session, then PUT the bytes with the digest."""
        what = f"push blob {digest}"

        def attempt() -> None:
            with self._open("POST", repo, "blobs/uploads/", push=True) as r:
                r.read()
                check_status(r, what)
                location = r.headers.get("Location")
            if not location:
                raise Retryable(f"{what}: upload session without a Location")
            url = urljoin(self.base, location)
            url += ("&" if "?" in url else "?") + f"digest={digest}"
            with self._open("PUT", repo, "", push=True, url=url, content=open_body,
                            headers={"Content-Type": "application/octet-stream",
                                     "Content-Length": str(size)}) as r:
                r.read()
                check_status(r, what)

        self.transport.call(what, attempt)


def _read_bounded(response: Response, limit: int, what: str) -> bytes:
    parts, total = [], 0
    for piece in response.iter_bytes():
        total += len(piece)
        if total > limit:
            raise BadReference(f"{what}: larger than {limit} bytes")
        parts.append(piece)
    return b"".join(parts)
