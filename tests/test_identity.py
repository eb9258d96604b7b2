"""Signed user tokens, in process: what `verify_token` accepts and what it refuses
with which code (the socket and HTTP tests check the same codes reach clients)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import jwt
import pytest

from liverec.errors import Forbidden
from liverec.identity import ALGORITHM, LEEWAY_S, mint_token, verify_token

SECRET = "identity-secret-0123456789abcdef0123456789"


def code_of(token: str, secret: str | None = SECRET, **kwargs: float) -> str:
    with pytest.raises(Forbidden) as info:
        verify_token(token, secret, **kwargs)
    return info.value.code


def test_minted_token_carries_sub_iat_and_exp() -> None:
    token = mint_token("alice", SECRET, ttl_s=120, now=1_900_000_000.7)
    claims = jwt.decode(
        token, SECRET, algorithms=[ALGORITHM], options={"verify_exp": False, "verify_iat": False}
    )
    assert claims == {"sub": "alice", "iat": 1_900_000_000, "exp": 1_900_000_120}
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    default = mint_token("alice", SECRET, now=1_900_000_000)
    claims = jwt.decode(
        default, SECRET, algorithms=[ALGORITHM], options={"verify_exp": False, "verify_iat": False}
    )
    assert claims["exp"] - claims["iat"] == 3600  # an hour unless told otherwise
    fresh = jwt.decode(mint_token("a", SECRET), SECRET, algorithms=[ALGORITHM])
    assert abs(fresh["iat"] - time.time()) < 5  # now by default


def test_valid_token_gives_its_user() -> None:
    assert verify_token(mint_token("alice", SECRET), SECRET) == "alice"
    assert verify_token(mint_token("b" * 128, SECRET), SECRET) == "b" * 128


def test_no_secret_means_auth_disabled() -> None:
    token = mint_token("alice", SECRET)
    assert code_of(token, None) == "auth_disabled"
    assert code_of(token, "") == "auth_disabled"


def test_forged_or_foreign_tokens_are_bad() -> None:
    assert code_of(mint_token("alice", "x" * 40)) == "bad_token"
    assert code_of("not.a.jwt") == "bad_token"
    now = time.time()
    other_alg = jwt.encode({"sub": "alice", "exp": now + 60}, SECRET * 2, algorithm="HS512")
    assert code_of(other_alg, SECRET * 2) == "bad_token"  # only HS256 is accepted
    unsigned = jwt.encode({"sub": "alice", "exp": now + 60}, None, algorithm="none")
    assert code_of(unsigned) == "bad_token"


def test_claims_required() -> None:
    now = int(time.time())
    no_exp = jwt.encode({"sub": "alice", "iat": now}, SECRET, algorithm=ALGORITHM)
    no_sub = jwt.encode({"exp": now + 60}, SECRET, algorithm=ALGORITHM)
    empty_sub = jwt.encode({"sub": "", "exp": now + 60}, SECRET, algorithm=ALGORITHM)
    assert code_of(no_exp) == "bad_token"
    assert code_of(no_sub) == "bad_token"
    assert code_of(empty_sub) == "bad_token"
    assert code_of(mint_token("c" * 129, SECRET)) == "bad_token"  # sub over 128 chars


def test_leeway_is_30_s_both_ways_and_configurable() -> None:
    assert LEEWAY_S == 30.0
    now = time.time()
    assert verify_token(mint_token("u", SECRET, ttl_s=60, now=now - 70), SECRET) == "u"
    assert verify_token(mint_token("u", SECRET, now=now + 10), SECRET) == "u"  # iat ahead
    assert code_of(mint_token("u", SECRET, ttl_s=60, now=now - 150)) == "token_expired"
    assert code_of(mint_token("u", SECRET, now=now + 90)) == "bad_token"
    # the leeway is a parameter: without it, ten seconds late is too late
    assert code_of(mint_token("u", SECRET, ttl_s=60, now=now - 70), leeway_s=0) == "token_expired"
    assert verify_token(mint_token("u", SECRET, ttl_s=60, now=now - 150), SECRET, 200) == "u"


def test_cli_token_prints_a_token_for_the_secret_in_the_environment() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEREC_")}
    cmd = [sys.executable, "-m", "liverec.cli", "token", "dev-user"]
    done = subprocess.run(
        cmd, env={**env, "LIVEREC_JWT_SECRET": SECRET}, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert verify_token(done.stdout.strip(), SECRET) == "dev-user"
    refused = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "LIVEREC_JWT_SECRET" in refused.stderr
    assert "Traceback" not in refused.stderr
