"""User identity: signed tokens (JWT HS256) in, a verified user id out.

Owns: minting and verifying user tokens. A user id is attached to a session only
through a token signed with the `jwt_secret` setting; without a secret liverec
serves anonymous sessions only.
"""

from __future__ import annotations

import time

import jwt

from .errors import Forbidden

ALGORITHM = "HS256"
LEEWAY_S = 30.0  # clock skew tolerated between the store's backend and liverec


def mint_token(user_id: str, secret: str, ttl_s: float = 3600.0, now: float | None = None) -> str:
    """A token for `user_id`, as a store's backend would mint one."""
    issued = time.time() if now is None else now
    payload = {"sub": user_id, "iat": int(issued), "exp": int(issued + ttl_s)}
    return jwt.encode(payload, secret, algorithm=ALGORITHM)


def verify_token(token: str, secret: str | None, leeway_s: float = LEEWAY_S) -> str:
    """The verified user id in `token`; raises Forbidden otherwise."""
    if not secret:
        raise Forbidden("auth_disabled", "user tokens are not accepted: no jwt_secret is set")
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            leeway=leeway_s,
            options={"require": ["sub", "exp"]},
        )
    except jwt.ExpiredSignatureError:
        raise Forbidden("token_expired", "the user token has expired") from None
    except jwt.InvalidTokenError as exc:
        raise Forbidden("bad_token", f"the user token is invalid: {exc}") from None
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub or len(sub) > 128:
        raise Forbidden("bad_token", "the user token's 'sub' must be a non-empty string")
    return sub
