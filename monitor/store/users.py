"""Sign-in accounts of the pages (viewer < technician < admin) and the key that signs sessions.

Passwords are hashed with scrypt (``hashlib.scrypt``, RFC 7914), a memory-hard KDF in the
standard library: each guess costs 32 MiB of memory and ~0.1 s of a core, so a stolen database
cannot be brute-forced on GPUs the way a fast hash (SHA-256) or even PBKDF2 can, and no new
dependency (argon2-cffi, bcrypt) is needed. The parameters are stored with each hash, so they can
be raised later without invalidating old ones.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Row, select, update
from sqlalchemy.exc import IntegrityError

from monitor.store import schema
from monitor.store.engine import StoreBase
from monitor.store.models import InvalidValue, NotFound

U = schema.users
ROLES = ("viewer", "technician", "admin")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MIN_PASSWORD, MAX_PASSWORD = 8, 1024
# N=2^15, r=8: 128 * r * N = 32 MiB per hash; p=1.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
_MAXMEM = 64 * 1024 * 1024
SESSION_KEY = "session_key"  # store_meta key of the cookie-signing secret


def hash_password(password: str) -> str:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise InvalidValue(f"password must be {MIN_PASSWORD} to {MAX_PASSWORD} characters")
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P,
                            maxmem=_MAXMEM, dklen=32)
    b64 = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    """Constant-time comparison; False for any malformed hash (never an exception)."""
    try:
        kind, n, r, p, salt, want = stored.split("$")
        if kind != "scrypt" or len(password) > MAX_PASSWORD:
            return False
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n),
                             r=int(r), p=int(p), maxmem=_MAXMEM, dklen=32)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, base64.b64decode(want))


# A hash of a random password: verified against when the name is unknown, so a login for a
# missing user takes as long as one for a real user (no user enumeration by timing).
_DUMMY: list[str] = []


def dummy_hash() -> str:
    if not _DUMMY:
        _DUMMY.append(hash_password(secrets.token_urlsafe(16)))
    return _DUMMY[0]


@dataclass(frozen=True, slots=True)
class User:
    id: int
    name: str
    role: str
    password: str = field(repr=False)  # the scrypt hash
    disabled: bool
    epoch: int


def _user(row: Row[Any]) -> User:
    m = row._mapping
    return User(m["id"], m["name"], m["role"], m["password"], bool(m["disabled"]), m["epoch"])


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise InvalidValue(f"role must be one of {', '.join(ROLES)} (got {role!r})")


class UsersMixin(StoreBase):
    def add_user(self, name: str, role: str, password: str) -> User:
        if not NAME_RE.match(name):
            raise InvalidValue(f"user name {name!r}: 1-64 of A-Z a-z 0-9 . _ -, "
                               "starting with a letter or digit")
        _check_role(role)
        hashed = hash_password(password)
        now = self.clock()
        try:
            with self.tx() as conn:
                conn.execute(U.insert().values(name=name, role=role, password=hashed, disabled=0,
                                               epoch=0, created_at=now, updated_at=now))
        except IntegrityError:
            raise InvalidValue(f"user {name!r} exists already") from None
        user = self.get_user(name)
        assert user is not None
        return user

    def get_user(self, name: str) -> User | None:
        with self.read() as conn:
            row = conn.execute(select(U).where(U.c.name == name)).one_or_none()
        return None if row is None else _user(row)

    def users(self) -> list[User]:
        with self.read() as conn:
            return [_user(r) for r in conn.execute(select(U).order_by(U.c.name))]

    def _change_user(self, name: str, **values: Any) -> User:
        with self.tx() as conn:
            done = conn.execute(update(U).where(U.c.name == name).values(
                epoch=U.c.epoch + 1, updated_at=self.clock(), **values))
            if done.rowcount == 0:
                raise NotFound(f"user {name!r} not found")
        user = self.get_user(name)
        assert user is not None
        return user

    def set_password(self, name: str, password: str) -> User:
        """New password; every session of the user ends (epoch + 1)."""
        return self._change_user(name, password=hash_password(password))

    def set_role(self, name: str, role: str) -> User:
        _check_role(role)
        return self._change_user(name, role=role)

    def set_disabled(self, name: str, disabled: bool = True) -> User:
        """Disable (or enable) an account; its sessions end at once."""
        return self._change_user(name, disabled=int(disabled))

    def session_key(self) -> bytes:
        """The secret that signs session cookies: made once, kept in store_meta (so every
        process on one database agrees and a restart keeps people signed in)."""
        meta = schema.store_meta
        query = select(meta.c.value).where(meta.c.key == SESSION_KEY)
        try:
            with self.tx() as conn:
                value = conn.execute(query).scalar_one_or_none()
                if value is None:
                    value = secrets.token_hex(32)
                    conn.execute(meta.insert().values(key=SESSION_KEY, value=value))
        except IntegrityError:  # another process made it first (PostgreSQL): use theirs
            with self.read() as conn:
                value = conn.execute(query).scalar_one()
        return bytes.fromhex(value)
