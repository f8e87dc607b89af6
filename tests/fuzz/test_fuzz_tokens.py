"""Fuzz the token check: whatever a peer sends as a token, ``TokenAuth``
answers with a principal or ``TokenRefused``, nothing else, and a principal
only ever comes from a token signed with the bridge's key.

Bounded for CI: ``FUZZ_EXAMPLES`` inputs per test (default 300).
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
import time
from collections import Counter

import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from bridge.auth import AuthRequest
from bridge.tokens import TokenAuth, TokenRefused, mint

set_hypothesis_home_dir(os.path.join(tempfile.gettempdir(), "bridge-fuzz-hypothesis"))

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))
FUZZ = settings(deadline=None, max_examples=EXAMPLES, suppress_health_check=list(HealthCheck), database=None)

SECRET = "fuzz-secret-" + "f" * 30
AUTH = TokenAuth(secret=SECRET)
OUTCOMES: Counter = Counter()

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=20), inner, max_size=4),
    max_leaves=12,
)
doc_ids = st.text(alphabet="abc*?[]!-._:~0123456789", min_size=1, max_size=12)


def judge(token: str) -> str:
    try:
        principal = AUTH.verify(token)
    except TokenRefused:
        OUTCOMES["refused"] += 1
        return "refused"
    for doc_id in ("a", "a-1", "*", "[", "b.c"):
        principal.access(doc_id)
    OUTCOMES["accepted"] += 1
    return "accepted"


@FUZZ
@given(st.text(max_size=300) | st.binary(max_size=300).map(lambda b: base64.urlsafe_b64encode(b).decode()))
def test_any_string_is_refused_cleanly(text):
    assert judge(text) == "refused"
    assert AUTH(AuthRequest(peer="p", token=text)) is None


@FUZZ
@given(
    claims=st.dictionaries(st.sampled_from(["sub", "exp", "docs", "admin", "nbf", "iat", "aud", "x"]), json_values, max_size=6),
    docs=st.none() | st.dictionaries(doc_ids, st.sampled_from(["read", "write", "admin", ""]) | json_values, max_size=5),
)
def test_signed_tokens_with_any_claims_give_a_principal_or_a_refusal(claims, docs):
    # From a valid token's claims, with any of them replaced or added.
    claims = {"sub": "alice", "exp": time.time() + 60, **claims}
    if docs is not None:
        claims["docs"] = docs
    try:
        token = jwt.encode(claims, SECRET, algorithm="HS256")
    except (TypeError, ValueError, OverflowError):
        return  # not encodable as a JWT at all
    outcome = judge(token)
    if outcome == "accepted":
        principal = AUTH.verify(token)
        assert isinstance(claims.get("sub"), str) and principal.identity == claims["sub"]
        assert isinstance(claims.get("exp"), (int, float)) and claims["exp"] > time.time() - 1


@FUZZ
@given(position=st.integers(0, 10_000), replacement=st.characters(codec="ascii"))
def test_a_valid_token_changed_anywhere_is_refused_or_means_the_same(position, replacement):
    token = mint(SECRET, sub="alice", write=["doc-*"])
    position %= len(token)
    changed = token[:position] + replacement + token[position + 1:]
    if changed == token:
        return
    if judge(changed) == "accepted":
        # Only base64 padding bits may change without changing the meaning.
        assert AUTH.verify(changed) == AUTH.verify(token)


@FUZZ
@given(header=st.dictionaries(st.sampled_from(["alg", "typ", "kid", "jku", "x5u", "crit"]), json_values, max_size=4))
def test_no_header_makes_the_bridge_skip_or_change_its_check(header):
    def part(value) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    claims = {"sub": "mallory", "exp": time.time() + 60, "docs": {"*": "write"}}
    body = f"{part(header)}.{part(claims)}"
    for signature in ("", "AAAA", part("x")):
        assert judge(f"{body}.{signature}") == "refused"


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    print(f"\ntoken fuzz: {dict(OUTCOMES)}")
