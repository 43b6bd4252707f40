"""Sign-in for the pages: signed session cookies, CSRF tokens, login throttling.

* The cookie ``hallmon_session`` holds ``name|epoch|expires|nonce`` and an HMAC-SHA256 of it
  under the store's session key (``Store.session_key``: random, made once, never logged). It is
  HttpOnly (no script reads it), SameSite=Lax (a link from a robot message still arrives signed
  in; no other site can POST with it) and Secure when the request came over HTTPS. Each request
  checks the account still exists, is enabled and has the same ``epoch``: ``hallmon users
  passwd|disable|role`` ends every earlier session at once.
* Every form carries a CSRF token: HMAC(key, "csrf|" + the session's nonce); the login form,
  before any session, HMAC(key, "login|" + a nonce in the ``hallmon_pre`` cookie). A POST without
  the right token, or with an Origin of another site, is refused (403).
* Login throttling (in memory, per process): at most 5 failures per user name and 20 per client
  address in 15 minutes; beyond that the login is refused (429) until the oldest failure ages
  out. The password is not even checked then, so guessing gains nothing by trying faster.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from monitor.store import AsyncStore, Store
from monitor.store.users import User, dummy_hash, verify_password

SESSION_COOKIE = "hallmon_session"
PRE_COOKIE = "hallmon_pre"
SESSION_SECONDS = 12 * 3600  # one working day
RANK = {"viewer": 0, "technician": 1, "admin": 2}


@dataclass(frozen=True, slots=True)
class SignedIn:
    name: str
    role: str
    csrf: str

    def may(self, role: str) -> bool:
        return RANK[self.role] >= RANK[role]


def astore(request: Request) -> AsyncStore | None:
    """The app's store as an AsyncStore (a plain Store is wrapped once, as the API does)."""
    state = request.app.state
    store = getattr(state, "store", None)
    if isinstance(store, AsyncStore):
        return store
    if isinstance(store, Store):
        wrapped = getattr(state, "pages_astore", None)
        if wrapped is None or wrapped.store is not store:
            wrapped = state.pages_astore = AsyncStore(store)
        return wrapped
    return None


async def session_key(request: Request) -> bytes | None:
    key: bytes | None = getattr(request.app.state, "pages_key", None)
    if key is None:
        store = astore(request)
        if store is None:
            return None
        key = request.app.state.pages_key = await store.run(store.store.session_key)
    return key


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, text: str) -> str:
    return _b64(hmac.new(key, text.encode(), hashlib.sha256).digest())


def sign_session(key: bytes, user: User, now: float) -> str:
    body = f"{user.name}|{user.epoch}|{int(now) + SESSION_SECONDS}|{secrets.token_urlsafe(16)}"
    return f"{_b64(body.encode())}.{_mac(key, body)}"


def read_session(key: bytes, cookie: str, now: float) -> tuple[str, int, str] | None:
    """(name, epoch, nonce) of a well-signed, unexpired cookie; None otherwise."""
    try:
        raw, mac = cookie.split(".")
        body = _unb64(raw).decode()
        name, epoch, expires, nonce = body.split("|")
        if not hmac.compare_digest(mac, _mac(key, body)) or int(expires) < now:
            return None
        return name, int(epoch), nonce
    except (ValueError, UnicodeDecodeError):
        return None


def csrf_for(key: bytes, purpose: str, nonce: str) -> str:
    return _mac(key, f"{purpose}|{nonce}")


async def signed_in(request: Request) -> SignedIn | None:
    """The session's user, if the cookie is good and the account still matches it."""
    cached = request.scope.get("hallmon.user", False)
    if cached is not False:
        return cached
    found: SignedIn | None = None
    cookie = request.cookies.get(SESSION_COOKIE)
    key = await session_key(request) if cookie else None
    got = read_session(key, cookie, time.time()) if key and cookie else None
    store = astore(request)
    if got is not None and store is not None and key is not None:
        name, epoch, nonce = got
        user = await store.run(store.store.get_user, name)
        if user is not None and not user.disabled and user.epoch == epoch:
            found = SignedIn(user.name, user.role, csrf_for(key, "csrf", nonce))
    request.scope["hallmon.user"] = found
    return found


def set_cookie(request: Request, response: Response, name: str, value: str, max_age: int,
               samesite: str = "lax") -> None:
    response.set_cookie(name, value, max_age=max_age, httponly=True, samesite=samesite,  # type: ignore[arg-type]
                        secure=request.url.scheme == "https", path="/")


async def login_token(request: Request) -> tuple[str | None, str | None]:
    """(the login form's CSRF token, a new pre-session nonce to set as a cookie or None)."""
    key = await session_key(request)
    if key is None:
        return None, None
    nonce, fresh = request.cookies.get(PRE_COOKIE), None
    if not nonce or len(nonce) > 64:
        nonce = fresh = secrets.token_urlsafe(16)
    return csrf_for(key, "login", nonce), fresh


def same_origin(request: Request) -> bool:
    """A browser's POST from another site carries its Origin: refuse it (defence in depth)."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    host = request.headers.get("host", "")
    return origin in (f"http://{host}", f"https://{host}")


def tokens_equal(given: str | None, want: str | None) -> bool:
    return bool(given) and bool(want) and hmac.compare_digest(str(given), str(want))


class LoginThrottle:
    """Failures per user name and per client address within ``window`` seconds."""

    def __init__(self, per_name: int = 5, per_client: int = 20, window: float = 900.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.per_name, self.per_client, self.window, self.clock = (
            per_name, per_client, window, clock)
        self._fails: dict[str, deque[float]] = {}

    def _recent(self, key: str) -> deque[float]:
        q = self._fails.setdefault(key, deque())
        edge = self.clock() - self.window
        while q and q[0] <= edge:
            q.popleft()
        return q

    def wait(self, name: str, client: str) -> float:
        """Seconds until a login for (name, client) is allowed again; 0: now."""
        waits = [0.0]
        for key, limit in ((f"n:{name.lower()}", self.per_name),
                           (f"c:{client}", self.per_client)):
            q = self._recent(key)
            if len(q) >= limit:
                waits.append(q[len(q) - limit] + self.window - self.clock())
        if len(self._fails) > 10_000:  # bounded memory under a spray of names
            edge = self.clock() - self.window
            self._fails = {k: q for k, q in self._fails.items() if q and q[-1] > edge}
        return max(waits)

    def failed(self, name: str, client: str) -> None:
        now = self.clock()
        self._recent(f"n:{name.lower()}").append(now)
        self._recent(f"c:{client}").append(now)

    def succeeded(self, name: str) -> None:
        self._fails.pop(f"n:{name.lower()}", None)


async def check_password(store: AsyncStore, name: str, password: str) -> User | None:
    """The enabled user with this password, or None. scrypt runs in a worker thread (~0.1 s,
    32 MiB), not on the loop nor on the store thread."""
    user = await store.run(store.store.get_user, name)
    stored = user.password if user is not None else dummy_hash()
    ok = await asyncio.to_thread(verify_password, password, stored)
    if user is None or not ok or user.disabled:
        return None
    return user


def client_of(request: Request) -> str:
    return request.client.host if request.client is not None else "?"

