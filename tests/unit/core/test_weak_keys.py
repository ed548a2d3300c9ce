"""Ed25519 public keys that prove nothing are refused, and the keys a stolen key registered are
named (a red team's findings)."""

from __future__ import annotations

import dataclasses
import hashlib
import random
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ledger.core.ed25519 import _add, _decode, weak_key
from ledger.core.events import RegisterActorKey
from ledger.core.lifecycle import Rejection, decide_signed, register_anchors
from ledger.core.signing import key_id_of, verify_history, verify_signature
from ledger.core.state import EMPTY_STATE, fold
from ledger.keys import public_bytes, sign

_P = 2**255 - 19
_L = 2**252 + 27742317777372353535851937790883648493  # the prime subgroup's order
IDENTITY = bytes([1]) + bytes(31)
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _times(n: int, point: tuple[int, int]) -> tuple[int, int]:
    out = (0, 1)
    while n:
        if n & 1:
            out = _add(out, point)
        point, n = _add(point, point), n >> 1
    return out


def _encode(point: tuple[int, int]) -> bytes:
    x, y = point
    return (y | (x & 1) << 255).to_bytes(32, "little")


def test_every_small_order_point_and_no_real_key_is_weak() -> None:
    # [l]P of any point lies in the torsion subgroup: the eight small-order points.
    torsion: set[tuple[int, int]] = set()
    rng = random.Random(7)
    while len(torsion) < 8:
        point = _decode(rng.getrandbits(255).to_bytes(32, "little"))
        if not isinstance(point, str):
            torsion.add(_times(_L, point))
    for point in torsion:
        assert "small-order point" in str(weak_key(_encode(point)))
    for n in range(200):
        key = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(bytes([n])).digest())
        assert weak_key(public_bytes(key)) is None
    assert "not canonical" in str(weak_key((_P + 1).to_bytes(32, "little")))  # y = 1 again
    assert "32 bytes" in str(weak_key(bytes(31)))


def test_a_signature_by_the_identity_key_verifies_for_the_library_but_not_here() -> None:
    # R = the identity, s = 0: the equation holds for every message under the identity key.
    forged = IDENTITY + bytes(32)
    Ed25519PublicKey.from_public_bytes(IDENTITY).verify(forged, b"anything")  # no error
    assert not verify_signature(IDENTITY, forged, b"anything")


def _register_weak() -> RegisterActorKey:
    """The administrator registering the identity point as mallory's key."""
    return RegisterActorKey(
        event_id="c-weak",
        occurred_at=T0,
        actor="human:admin",
        principal="human:mallory",
        actor_key_id=key_id_of(IDENTITY),
        public_key=IDENTITY,
    )


def test_a_small_order_key_is_refused_at_registration() -> None:
    admin = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"admin").digest())
    n = iter(range(100))
    state = EMPTY_STATE
    for event in register_anchors(
        EMPTY_STATE, {"human:admin": public_bytes(admin)}, now=T0, new_id=lambda: f"e{next(n)}"
    ):
        state = fold(state, event)
    register = _register_weak()
    out = decide_signed(state, sign(register, admin), now=T0, new_id=lambda: f"e{next(n)}")
    assert isinstance(out, Rejection) and out.code == "invalid_key"
    assert "small-order point" in out.message and "ledger actor keygen" in out.message


def test_actor_add_refuses_a_small_order_public_key_file_before_sending(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner
    from cryptography.hazmat.primitives import serialization

    from ledger.cli.app import cli
    from ledger.keys import KeyStore

    home = tmp_path / "home"
    monkeypatch.setenv("LEDGER_HOME", str(home))
    monkeypatch.setenv("LEDGER_BOOTSTRAP", "127.0.0.1:9")  # never dialled: refused before
    KeyStore(home / "keys").ensure("human:admin")
    pem = Ed25519PublicKey.from_public_bytes(IDENTITY).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "weak.pub").write_bytes(pem)
    args = ["actor", "add", "human:mallory", "--public-key", str(tmp_path / "weak.pub")]
    done = CliRunner().invoke(cli, [*args, "--by", "human:admin"])
    assert done.exit_code == 2, done.output
    assert "cannot be registered: it is a small-order point" in done.stderr


def test_actor_verify_flags_a_small_order_key_an_earlier_release_registered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import ledger.core.lifecycle.grant_rules as rules
    from ledger.core.signing import registration_problem
    from ledger.core.state import actor_key, replay

    admin = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"admin").digest())
    n = iter(range(100))
    history = list(
        register_anchors(
            EMPTY_STATE, {"human:admin": public_bytes(admin)}, now=T0, new_id=lambda: f"e{next(n)}"
        )
    )
    register = _register_weak()
    with monkeypatch.context() as before_the_fix:  # as the release before this check took it
        before_the_fix.setattr(rules, "weak_key", lambda raw: None)
        out = decide_signed(
            replay(history), sign(register, admin), now=T0, new_id=lambda: f"e{next(n)}"
        )
    assert not isinstance(out, Rejection), out
    history += list(out)
    state = replay(history)
    key = actor_key(state, "human:mallory", key_id_of(IDENTITY))
    assert key is not None
    problem = registration_problem(state, "human:mallory", key)
    assert problem is not None and "cannot sign: it is a small-order point" in problem
    # `actor verify` (verify_history) names the registration (a review: it showed as proven,
    # and what the key "signed" as a bad signature, with no word of why).
    *_, registration = verify_history(history)
    assert not registration.ok
    assert f"registers {key_id_of(IDENTITY)} for human:mallory, a key that cannot sign" in str(
        registration.problem
    )
    # The live processor refuses what it "signs", saying why.
    from ledger.core.events import IssueGrant

    forged = dataclasses.replace(
        IssueGrant(
            event_id="c-forged",
            occurred_at=T0,
            actor="human:mallory",
            grant_id="g-forged",
            principal="agent:bot",
            actions=("refund.*",),
            resource="account:*",
        ),
        key_id=key_id_of(IDENTITY),
        signature=IDENTITY + bytes(32),
    )
    refused = decide_signed(state, forged, now=T0, new_id=lambda: f"e{next(n)}")
    assert isinstance(refused, Rejection) and refused.code == "unknown_actor_key"
    assert "cannot sign: it is a small-order point" in refused.message


def test_the_keys_a_stolen_key_registered_are_named() -> None:
    # A red team: a thief registered a key of its own with alice's stolen key; revoking the
    # stolen key left the thief's active, and nothing said so.
    from ledger.core.events import ActorKeyRegistered, ActorKeyRevoked
    from ledger.core.state import keys_registered_with, replay

    def registered(seq: int, key: str, signer: str | None, who: str = "human:alice") -> object:
        return ActorKeyRegistered(
            event_id=f"r-{key}",
            occurred_at=T0,
            actor=who,
            command_id=f"c-{key}",
            principal="human:alice",
            sequence=seq,
            actor_key_id=key,
            public_key=key.encode().ljust(32, b"."),
            command_key_id=signer,
        )

    history = [
        registered(1, "k1", "admin-key", "human:admin"),
        registered(2, "k2", "k1"),  # the thief's, signed with the stolen k1
        registered(3, "k3", "k2"),  # and one more, signed with that
        registered(4, "k4", None, "service:command-processor"),  # an anchor: not k1's
        ActorKeyRevoked(
            event_id="x-k1",
            occurred_at=T0,
            actor="human:admin",
            command_id="c-x",
            principal="human:alice",
            sequence=5,
            actor_key_id="k1",
            reason="stolen",
        ),
    ]
    state = replay(history)  # type: ignore[arg-type]
    assert [(o, k.key_id) for o, k in keys_registered_with(state, "k1")] == [
        ("human:alice", "k2"),
        ("human:alice", "k3"),
    ]
    assert keys_registered_with(state, "k3") == []
