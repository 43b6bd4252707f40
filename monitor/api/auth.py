"""Bearer tokens with roles (viewer < technician < admin) read from a tokens file.

Tokens file (YAML; ``--auth.tokens-file``)::

    tokens:
      - {name: zhang, role: technician, token: "long random string"}
      - {name: ops, role: admin, token_file: /etc/hallmon/admin.token}

The app keeps an ``Auth`` at ``request.app.state.auth``. Routes depend on ``require(role)``:
401 when the token is missing or unknown, 403 when its role is too low. Reads may be open
(``Auth(open_reads=True)``): then ``require("viewer")`` admits anonymous callers. Every presented
token is compared with every known one in constant time (hmac.compare_digest over SHA-256
digests, so neither content nor length leaks through timing); tokens print as ``<secret>``.

The tokens file is refused, as sshd refuses an unprotected key, when it (or a ``token_file``)
can be read or written by other users (``chmod 600``), when it lists no token, when one token
appears under two names or roles (which would it be?), or when a token could never match: spaces
around it or inside it, or characters outside printable ASCII (an Authorization header cannot
carry them as typed).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

Role = Literal["viewer", "technician", "admin"]
RANK: dict[str, int] = {"viewer": 0, "technician": 1, "admin": 2}


class TokenEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1, max_length=64)
    role: Role
    token: SecretStr | None = None
    token_file: Path | None = None

    @model_validator(mode="after")
    def _one_source(self) -> TokenEntry:
        if (self.token is None) == (self.token_file is None):
            raise ValueError("give exactly one of token or token_file")
        return self

    def secret(self) -> str:
        if self.token is not None:
            value = self.token.get_secret_value()
        else:
            assert self.token_file is not None
            check_private(self.token_file)
            value = self.token_file.read_text(encoding="utf-8").strip()
        if value != value.strip() or any(not "!" <= c <= "~" for c in value):
            raise ValueError(f"token of {self.name!r} has spaces or characters outside "
                             "printable ASCII: no Authorization header can match it")
        if len(value) < 16:
            raise ValueError(f"token of {self.name!r} is shorter than 16 characters")
        return value


def check_private(path: Path) -> None:
    """Refuse a secrets file that other users may read or write (sshd's rule for keys)."""
    mode = os.stat(path).st_mode
    if mode & (stat.S_IROTH | stat.S_IWOTH | stat.S_IWGRP):
        raise ValueError(f"{path} is readable or writable by other users "
                         f"(mode {stat.S_IMODE(mode):o}): chmod 600 {path}")


class TokensFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tokens: list[TokenEntry] = Field(min_length=1)


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    role: str


class AuthError(Exception):
    """The tokens file is unreadable or invalid (message says where and why, never a token)."""


def _one_role_per_token(triples: Sequence[tuple[str, str, str]]) -> None:
    seen: dict[str, int] = {}
    for i, (name, _, token) in enumerate(triples):
        if token in seen:
            raise ValueError(f"tokens.{i} ({name!r}) has the same token as tokens.{seen[token]} "
                             f"({triples[seen[token]][0]!r}): one token, one name and role")
        seen[token] = i


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


class Auth:
    def __init__(self, tokens: Iterable[tuple[str, str, str]] = (), *,
                 open_reads: bool = False) -> None:
        """``tokens``: (name, role, token) triples."""
        self._known = [(Principal(n, r), _digest(t)) for n, r, t in tokens]
        self.open_reads = open_reads

    def __repr__(self) -> str:
        return f"<Auth {len(self._known)} tokens <secret>, open_reads={self.open_reads}>"

    @classmethod
    def from_file(cls, path: str | Path, *, open_reads: bool = False) -> Auth:
        try:
            check_private(Path(path))
            raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
            if raw is None:
                raise ValueError("empty: no tokens (list them under 'tokens:')")
            parsed = TokensFile.model_validate(raw)
            triples = [(e.name, e.role, e.secret()) for e in parsed.tokens]
            _one_role_per_token(triples)
        except (OSError, yaml.YAMLError, ValueError) as exc:
            if isinstance(exc, ValidationError):  # never echo input (it holds tokens)
                msg = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                                for e in exc.errors(include_input=False))
            else:
                msg = str(exc)
            raise AuthError(f"{path}: {msg}") from None
        return cls(triples, open_reads=open_reads)

    def identify(self, presented: str) -> Principal | None:
        got = _digest(presented)
        found = None
        for principal, want in self._known:  # no early exit: time does not depend on position
            if hmac.compare_digest(got, want):
                found = principal
        return found


_bearer = HTTPBearer(auto_error=False)
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def require(role: Role) -> Callable[..., Awaitable[Principal]]:
    """Dependency factory: ``Depends(require("admin"))`` (e.g. for ``/-/reload``)."""

    async def dependency(
        request: Request,
        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        auth: Auth = getattr(request.app.state, "auth", None) or Auth()
        if creds is None:
            if role == "viewer" and auth.open_reads:
                return Principal("anonymous", "viewer")
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "bearer token required",
                                headers=_CHALLENGE)
        principal = auth.identify(creds.credentials)
        if principal is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "unknown token",
                                headers=_CHALLENGE)
        if RANK[principal.role] < RANK[role]:
            raise HTTPException(status.HTTP_403_FORBIDDEN,
                                f"role {principal.role} may not do this (needs {role})")
        return principal

    return dependency


LOCAL_HOSTS = frozenset({"127.0.0.1", "::1", "localhost", "testclient"})


def require_or_local(role: Role) -> Callable[..., Awaitable[Principal]]:
    """For operations on the daemon itself (``/-/reload``, re-checks): with a tokens file,
    exactly ``require(role)``; without one, callers on this machine only (as Prometheus'
    lifecycle endpoints on a loopback listener), unless ``app.state.local_trust`` is False
    (``--auth.no-local-trust``): a reverse proxy on this machine makes every caller local."""
    inner = require(role)

    async def dependency(
        request: Request,
        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        state = request.app.state
        if getattr(state, "auth_configured", True):
            return await inner(request, creds)
        if not getattr(state, "local_trust", True):
            raise HTTPException(status.HTTP_403_FORBIDDEN,
                                "this needs a token: start with --auth.tokens-file")
        if request.client is not None and request.client.host in LOCAL_HOSTS:
            return Principal("local", role)
        raise HTTPException(status.HTTP_403_FORBIDDEN,
                            "without --auth.tokens-file this is accepted from this machine only")

    return dependency


class ErrorOut(BaseModel):
    detail: str


AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "Missing or unknown bearer token"},
    403: {"model": ErrorOut, "description": "The token's role is not allowed to do this"},
}
