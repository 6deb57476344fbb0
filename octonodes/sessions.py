"""Sessions of the web page, kept in the shared database so that any node
behind the balancer can check any request.

A session starts when an API key signs in. Its cookie holds a random token
and an HMAC of it under the cluster's secret (`Store.web_secret`), so a
forged or mangled cookie is refused before the database is asked; the
database keeps only a hash of the token, with the key's name and when the
session was last used. A session ends on sign-out (server-side: the old
cookie is refused from then on, on every node), after `IDLE_LIMIT` without
use, or when its key is revoked. Its CSRF token is an HMAC of the session's
token, so every node derives the same one and none has to store it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from .store import Store
from .store.base import ApiKey

IDLE_LIMIT = 8 * 3600.0
"""Seconds without use after which a session ends."""
TOUCH_AFTER = 60.0
"""A session's last use is written at most this often (seconds), so pages
that are merely open cost no writes."""


@dataclass(frozen=True)
class Session:
    """A signed-in key, as a request proves it."""

    key: ApiKey
    token: str
    csrf_token: str

    def csrf_ok(self, sent: str | None) -> bool:
        """Is `sent` this session's CSRF token?"""
        return bool(sent) and same_secret(sent, self.csrf_token)


def same_secret(sent: str, expected: str) -> bool:
    """Whether a secret a client sent is the expected one, in constant time.
    Compared as bytes: `hmac.compare_digest` refuses a str that is not
    ASCII, and a client may send any text."""
    return hmac.compare_digest(sent.encode("utf-8", "surrogatepass"),
                               expected.encode("utf-8", "surrogatepass"))


def _b64(digest: bytes) -> str:
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _mac(secret: str, purpose: str, token: str) -> str:
    return _b64(hmac.new(secret.encode(), f"{purpose}:{token}".encode(), hashlib.sha256).digest())


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Sessions:
    """The cluster's sessions; `Cluster.sessions()` gives one."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._secret: str | None = None

    @property
    def secret(self) -> str:
        if self._secret is None:  # made once per cluster, then never changes
            self._secret = self.store.web_secret()
        return self._secret

    def start(self, key: ApiKey) -> str:
        """A new session for `key` (an active key, as `verify_api_key`
        returned it); returns the cookie's value."""
        token = secrets.token_urlsafe(32)
        self.store.add_web_session(_token_hash(token), key.name, IDLE_LIMIT)
        return f"{token}.{_mac(self.secret, 'cookie', token)}"

    def _token(self, cookie: str) -> str | None:
        token, _, mac = (cookie or "").partition(".")
        if not token or not same_secret(mac, _mac(self.secret, "cookie", token)):
            return None
        return token

    def check(self, cookie: str, *, used: bool = True) -> Session | None:
        """The session a cookie proves, or None (forged, ended, idle too
        long, key revoked). `used=False` for requests that are not the
        user's doing (a page refreshing itself), which do not keep the
        session alive."""
        token = self._token(cookie)
        if token is None:
            return None
        key = self.store.web_session(_token_hash(token), IDLE_LIMIT, TOUCH_AFTER if used else None)
        if key is None:
            return None
        return Session(key=key, token=token, csrf_token=_mac(self.secret, "csrf", token))

    def end(self, cookie: str) -> bool:
        """Sign out: the cookie is refused from now on, on every node."""
        token = self._token(cookie)
        return token is not None and self.store.end_web_session(_token_hash(token))
