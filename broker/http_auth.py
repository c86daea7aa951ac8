"""Who may use the broker's HTTP server: the API key, as a bearer token or the page's cookie.

With no key, everyone may. With one, the OpenAI API wants `Authorization: Bearer KEY`; the
web page (/, /static/, /ui/) takes that too, or the session cookie that /ui/login sets once
the key is typed in, since a browser's EventSource sends no headers of its own. The cookie
holds an HMAC of the key, never the key itself, and is HttpOnly and SameSite=Strict, so
another site's page can neither read it nor send it along; it is good as long as the key is,
across broker restarts.
"""

from __future__ import annotations

import hashlib
import hmac

from aiohttp import web

COOKIE = "swarm_session"
OPEN_PATHS = ("/health", "/ui/login")
WEB_PREFIXES = ("/static/", "/ui/")


class Auth:
    def __init__(self, api_key: str | None) -> None:
        self.key = api_key or None
        self.session = None if self.key is None else hmac.new(
            self.key.encode(), b"swarm web session", hashlib.sha256).hexdigest()

    def allows(self, request: web.Request) -> bool:
        if self.key is None or request.path in OPEN_PATHS:
            return True
        return self.bearer_ok(request) or (is_web(request.path) and self.cookie_ok(request))

    def bearer_ok(self, request: web.Request) -> bool:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        return self.key_ok(given.strip()) if scheme.lower() == "bearer" else False

    def key_ok(self, given: str) -> bool:
        return self.key is not None and _same(given, self.key)

    def cookie_ok(self, request: web.Request) -> bool:
        return self.session is not None and _same(request.cookies.get(COOKIE, ""), self.session)

    def log_in(self, response: web.StreamResponse) -> None:
        if self.session is not None:
            response.set_cookie(COOKIE, self.session, path="/", httponly=True, samesite="Strict")


def _same(given: str, secret: str) -> bool:
    """In constant time; a header's bytes that are not UTF-8 (kept as surrogates) just differ."""
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"),
                               secret.encode("utf-8", "surrogateescape"))


def is_web(path: str) -> bool:
    """The page's own paths: the cookie counts there, not on the OpenAI API."""
    return path == "/" or path.startswith(WEB_PREFIXES)
