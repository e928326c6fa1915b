"""Call and session tokens: every forgery and misuse is refused with its reason; the clock is a parameter."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import jwt
import pytest

from broker.security.tokens import LEEWAY_S, TokenMinter, TokenVerifier, TrustedKey
from capability_catalog.signing import generate_key, key_id_of, public_key_to_text
from slicing.errors import Unauthenticated

NOW = 1_800_000_000.0


class Clock:
    def __init__(self, t: float = NOW) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


World = tuple[TokenMinter, TokenVerifier, Clock, dict[str, TrustedKey]]


@pytest.fixture
def world() -> World:
    clock = Clock()
    caller = generate_key()
    keys = {key_id_of(caller.public_key()): TrustedKey("T", caller.public_key())}
    minter = TokenMinter(caller, "T", clock=clock)
    verifier = TokenVerifier("L1", keys.get, own_key=generate_key().public_key(), clock=clock)
    return minter, verifier, clock, keys


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _claims(**over: object) -> dict[str, object]:
    base: dict[str, object] = {
        "iss": "T",
        "sub": "T",
        "aud": "L1",
        "iat": int(NOW),
        "nbf": int(NOW),
        "exp": int(NOW) + 60,
        "jti": "abcdefgh-1234",
    }
    return {**base, **over}


def refused(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(Unauthenticated) as info:
        verifier.verify(token)
    return str(info.value)


def test_a_fresh_call_token_verifies_and_names_its_caller(world: World) -> None:
    minter, verifier, _, _ = world
    claims = verifier.verify(minter.mint("L1", on_behalf_of="alice@T"))
    assert (claims.issuer, claims.subject, claims.audience, claims.on_behalf_of) == ("T", "T", "L1", "alice@T")
    assert not claims.session


def test_no_token_is_refused(world: World) -> None:
    assert "no token" in refused(world[1], "")


def test_alg_none_is_refused_before_any_key_is_used(world: World) -> None:
    minter, verifier, _, _ = world
    header = _b64(json.dumps({"alg": "none", "kid": minter.key_id, "typ": "JWT"}).encode())
    token = f"{header}.{_b64(json.dumps(_claims()).encode())}."
    assert "'none' refused" in refused(verifier, token)
    assert len(verifier.replays) == 0


def test_hs256_signed_with_the_public_key_as_secret_is_refused(world: World) -> None:
    minter, verifier, _, keys = world
    public_text = public_key_to_text(keys[minter.key_id].key).encode()
    header = _b64(json.dumps({"alg": "HS256", "kid": minter.key_id, "typ": "JWT"}).encode())
    body = _b64(json.dumps(_claims()).encode())
    sig = _b64(hmac.new(public_text, f"{header}.{body}".encode(), hashlib.sha256).digest())
    assert "'HS256' refused" in refused(verifier, f"{header}.{body}.{sig}")


def test_wrong_audience_is_refused(world: World) -> None:
    minter, verifier, _, _ = world
    assert "audience" in refused(verifier, minter.mint("L2"))


def test_expired_token_is_refused(world: World) -> None:
    minter, verifier, clock, _ = world
    token = minter.mint("L1", ttl_s=30)
    clock.t += 30 + LEEWAY_S + 1
    assert "expired" in refused(verifier, token)


def test_token_not_yet_valid_is_refused(world: World) -> None:
    minter, verifier, clock, _ = world
    clock.t += 120
    token = minter.mint("L1")
    clock.t -= 120
    assert "not yet valid" in refused(verifier, token)


def test_replayed_jti_is_refused_until_the_token_expires(world: World) -> None:
    minter, verifier, _clock, _ = world
    token = minter.mint("L1", jti="same-id-0001")
    verifier.verify(token)
    assert "replayed" in refused(verifier, token)
    # The same id in a new token (a new signature) is still a replay while the first one lives.
    assert "replayed" in refused(verifier, minter.mint("L1", jti="same-id-0001"))


def test_unknown_key_id_is_refused_and_the_book_is_asked_to_reload_once(world: World) -> None:
    _, verifier, clock, _keys = world
    stranger = TokenMinter(generate_key(), "T", clock=clock)
    reloads: list[int] = []
    verifier._on_unknown_kid = lambda: reloads.append(1) is None  # reports "changed", finds nothing new
    assert "not registered" in refused(verifier, stranger.mint("L1"))
    assert reloads == [1]


def test_key_registered_for_another_principal_cannot_sign_as_this_one(world: World) -> None:
    _, verifier, clock, keys = world
    other = generate_key()
    keys[key_id_of(other.public_key())] = TrustedKey("M1", other.public_key())
    assert "issuer" in refused(verifier, TokenMinter(other, "T", clock=clock).mint("L1"))


def test_two_keys_are_valid_at_once_during_rotation(world: World) -> None:
    minter, verifier, clock, keys = world
    new = generate_key()
    keys[key_id_of(new.public_key())] = TrustedKey("T", new.public_key())
    assert verifier.verify(minter.mint("L1")).subject == "T"
    assert verifier.verify(TokenMinter(new, "T", clock=clock).mint("L1")).subject == "T"


def test_tampered_claims_break_the_signature(world: World) -> None:
    minter, verifier, _, _ = world
    header, _, sig = minter.mint("L1").split(".")
    forged = _b64(json.dumps(_claims(sub="T", obo="root")).encode())
    assert "signature" in refused(verifier, f"{header}.{forged}.{sig}")


def test_long_lived_call_tokens_and_foreign_subjects_are_refused(world: World) -> None:
    minter, verifier, _, _ = world
    assert "longer than" in refused(verifier, minter.mint("L1", ttl_s=3600))
    assert "subject must be its issuer" in refused(verifier, minter.mint("L1", subject="alice"))


def test_missing_claims_and_garbage_are_refused(world: World) -> None:
    _minter, verifier, _, _ = world
    assert "malformed" in refused(verifier, "not.a.jwt")
    assert "malformed" in refused(verifier, "x" * 100)
    assert "longer than" in refused(verifier, "a" * 5000)


def test_session_token_from_the_sp_itself_may_be_presented_again() -> None:
    clock = Clock()
    own = generate_key()
    verifier = TokenVerifier("L1", {}.get, own_key=own.public_key(), clock=clock)
    session = TokenMinter(own, "L1", clock=clock).mint("L1", subject="alice", ttl_s=600)
    for _ in range(3):
        claims = verifier.verify(session)
        assert claims.session and claims.subject == "alice"
    clock.t += 600 + LEEWAY_S + 1
    assert "expired" in refused(verifier, session)


def test_replay_cache_forgets_expired_ids_as_it_fills(world: World) -> None:
    minter, verifier, clock, _ = world
    for _ in range(1100):
        verifier.verify(minter.mint("L1", ttl_s=5))
    clock.t += 100
    for _ in range(1100):
        verifier.verify(minter.mint("L1", ttl_s=5))
    assert len(verifier.replays) < 2200


def test_pyjwt_and_this_verifier_agree_both_ways(world: World) -> None:
    minter, verifier, _clock, keys = world
    public = keys[minter.key_id].key
    ours = minter.mint("L1", on_behalf_of="alice")
    decoded = jwt.decode(
        ours,
        public,
        algorithms=["EdDSA"],
        audience="L1",
        options={"verify_exp": False, "verify_nbf": False, "verify_iat": False},
    )
    assert decoded["sub"] == "T" and decoded["obo"] == "alice"
    theirs = jwt.encode(_claims(jti="from-pyjwt-1"), minter._key, algorithm="EdDSA", headers={"kid": minter.key_id})
    assert verifier.verify(theirs).jti == "from-pyjwt-1"


def test_lenient_base64_critical_headers_and_non_object_claims_are_refused(world: World) -> None:
    minter, verifier, _, _ = world
    head, body, sig = minter.mint("L1").split(".")
    assert "base64url" in refused(verifier, f"{head}.{body}.{sig[:10]}+{sig[11:]}")
    assert "does not verify" in refused(verifier, f"{head}.{body}=.{sig}")  # signed bytes differ
    assert "expected header.claims.signature" in refused(verifier, f"{head}.{body}.{sig}.x")
    crit = _b64(json.dumps({"alg": "EdDSA", "kid": minter.key_id, "crit": ["exp"]}).encode())
    assert "critical" in refused(verifier, f"{crit}.{body}.{sig}")
    signer = minter._key
    array_head = _b64(json.dumps({"alg": "EdDSA", "kid": minter.key_id}).encode())
    array_body = _b64(b"[1, 2]")
    array_sig = _b64(signer.sign(f"{array_head}.{array_body}".encode()))
    assert "not a JSON object" in refused(verifier, f"{array_head}.{array_body}.{array_sig}")


def test_call_tokens_issued_before_the_verifier_started_are_refused() -> None:
    clock = Clock()
    caller = generate_key()
    minter = TokenMinter(caller, "T", clock=clock)
    early = minter.mint("L1")
    clock.t += 10  # the broker restarts: a new verifier, an empty replay cache
    verifier = TokenVerifier(
        "L1", {key_id_of(caller.public_key()): TrustedKey("T", caller.public_key())}.get, clock=clock
    )
    assert "before this broker started" in refused(verifier, early)
    assert verifier.verify(minter.mint("L1")).subject == "T"
