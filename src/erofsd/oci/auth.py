"""Registry authentication: anonymous, basic, and bearer tokens from a challenge.

Credentials come from ``$REGISTRY_AUTH_FILE`` (containers-auth.json) or
``~/.docker/config.json``, keyed by registry host. They are never logged,
and ``Credentials`` hides the password from repr and str.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import os
import re
import threading
from pathlib import Path

from ..errors import AuthError, SourceError
from ..httpclient import Client, Response, TransportError

log = logging.getLogger("erofsd.oci.auth")
_PARAM = re.compile(r'(\w+)="([^"]*)"')


@dataclasses.dataclass(frozen=True)
class Credentials:
    username: str
    password: str = dataclasses.field(repr=False)

    def __str__(self) -> str:
        return f"{self.username}:***"

    def basic_header(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()


def auth_files() -> list[Path]:
    files = []
    if os.environ.get("REGISTRY_AUTH_FILE"):
        files.append(Path(os.environ["REGISTRY_AUTH_FILE"]))
    files.append(Path(os.environ.get("DOCKER_CONFIG", Path.home() / ".docker")) / "config.json")
    return files


def _host_keys(key: str) -> str:
    key = re.sub(r"^https?://", "", key)
    return key.split("/", 1)[0]


def load_credentials(host: str) -> Credentials | None:
    for path in auth_files():
        try:
            auths = json.loads(path.read_text()).get("auths", {})
        except FileNotFoundError:
            continue
        except (OSError, ValueError, AttributeError) as e:
            raise AuthError(f"{path}: unreadable auth file: {type(e).__name__}") from None
        for key, entry in auths.items():
            if _host_keys(key) != host or not isinstance(entry, dict):
                continue
            if entry.get("auth"):
                try:
                    user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
                except (ValueError, UnicodeDecodeError):
                    raise AuthError(f"{path}: the auth entry for {host} is not base64 "
                                    "user:password") from None
                return Credentials(user, password)
            if entry.get("username"):
                return Credentials(entry["username"], entry.get("password", ""))
    return None


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = header.strip().partition(" ")
    return scheme.lower(), dict(_PARAM.findall(rest))


class Authenticator:
    """Answers 401 challenges for one registry host; remembers tokens per scope."""

    def __init__(self, host: str, client: Client,
                 credentials: Credentials | None = None) -> None:
        self.host = host
        self._client = client
        self._credentials = credentials if credentials is not None else load_credentials(host)
        self._headers: dict[str, str] = {}  # scope -> Authorization value
        self._lock = threading.Lock()

    def header(self, scope: str) -> dict[str, str]:
        with self._lock:
            value = self._headers.get(scope)
        return {"Authorization": value} if value else {}

    def answer(self, response: Response, scope: str) -> None:
        """Prepare credentials for a retry after a 401, or raise AuthError."""
        challenge = response.headers.get("WWW-Authenticate", "")
        scheme, params = parse_challenge(challenge)
        who = f"registry {self.host}"
        if scheme == "basic":
            if self._credentials is None:
                raise AuthError(f"{who} wants a login and no credentials were found "
                                f"(looked in {', '.join(map(str, auth_files()))})")
            value = self._credentials.basic_header()
        elif scheme == "bearer":
            value = "Bearer " + self._fetch_token(params, scope)
        else:
            raise AuthError(f"{who} answered 401 with an unsupported challenge {scheme!r}")
        with self._lock:
            if self._headers.get(scope) == value:
                raise AuthError(f"{who} refused the credentials for {scope}")
            self._headers[scope] = value

    def _fetch_token(self, params: dict[str, str], scope: str) -> str:
        realm = params.get("realm")
        if not realm:
            raise AuthError(f"registry {self.host}: bearer challenge without a realm")
        query = {"service": params.get("service", "")}
        wanted = params.get("scope") or scope
        if wanted:
            query["scope"] = wanted
        headers = {}
        if self._credentials is not None:
            headers["Authorization"] = self._credentials.basic_header()
        log.info("fetching a token for %s from %s", wanted, realm)
        try:
            reply = self._client.get(realm, params=query, headers=headers)
        except TransportError as e:
            raise SourceError(f"token service {realm}: {type(e).__name__}") from None
        if reply.status_code in (401, 403):
            who = "the credentials" if headers else "anonymous access"
            raise AuthError(f"token service {realm} refused {who} for {wanted}")
        if reply.status_code != 200:
            raise SourceError(f"token service {realm}: HTTP {reply.status_code}")
        try:
            body = reply.json()
            token = body.get("token") or body.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not token:
            raise AuthError(f"token service {realm} sent no token")
        return token
