"""Ed25519 public keys that prove nothing: the small-order points, and encodings no honest
key has.

A small-order public key ``A`` (one of the eight points ``P`` with ``8P`` the identity) lets
anyone sign as its holder: with ``R`` the identity and ``s = 0`` the verification equation holds
for every message, and the usual verifiers (OpenSSL's, so ``cryptography``'s) accept it. A red
team registered the identity point (``01 00…00``) as an actor's key through the documented
``actor add --public-key``, then approved a policy version as that actor from a governance
client with no private key at all, and both verifiers proved it. Such keys are refused where a
key enters the ledger and never verify a signature (:func:`ledger.core.signing.verify_signature`).

The check decodes the point (RFC 8032, section 5.1.3) and doubles it three times: pure integer
arithmetic modulo ``2**255 - 19``, under a millisecond, remembered per key (the 4,096 last).
"""

from __future__ import annotations

import functools
from typing import Final

__all__ = ["weak_key"]

_P: Final = 2**255 - 19
_D: Final = -121665 * pow(121666, _P - 2, _P) % _P
_SQRT_M1: Final = pow(2, (_P - 1) // 4, _P)

Point = tuple[int, int]
_IDENTITY: Final[Point] = (0, 1)


def _decode(raw: bytes) -> Point | str:
    """The point ``raw`` encodes, or why it encodes none an honest key would."""
    if len(raw) != 32:
        return f"an Ed25519 public key has 32 bytes, this one {len(raw)}"
    y = int.from_bytes(raw, "little")
    sign, y = y >> 255, y & ((1 << 255) - 1)
    if y >= _P:
        return "its encoding is not canonical (y is not reduced)"
    u, v = (y * y - 1) % _P, (_D * y * y + 1) % _P
    x2 = u * pow(v, _P - 2, _P) % _P
    x = pow(x2, (_P + 3) // 8, _P)
    if (x * x - x2) % _P:
        x = x * _SQRT_M1 % _P
    if (x * x - x2) % _P:
        return "it is not a point of the curve"
    if x == 0 and sign:
        return "its encoding is not canonical (x is 0 with its sign bit set)"
    if x & 1 != sign:
        x = _P - x
    return (x, y)


def _add(a: Point, b: Point) -> Point:
    """``a + b`` on edwards25519 (the complete twisted-Edwards formula, ``a = -1``)."""
    (x1, y1), (x2, y2) = a, b
    t = _D * x1 * x2 * y1 * y2 % _P
    x3 = (x1 * y2 + y1 * x2) * pow(1 + t, _P - 2, _P) % _P
    y3 = (y1 * y2 + x1 * x2) * pow(1 - t, _P - 2, _P) % _P
    return (x3, y3)


@functools.lru_cache(maxsize=4096)
def weak_key(raw: bytes) -> str | None:
    """Why the raw Ed25519 public key ``raw`` proves nothing (a small-order point, or an
    encoding no key generator writes), in words for an error line; ``None`` for a usable key."""
    point = _decode(bytes(raw))
    if isinstance(point, str):
        return point
    for _ in range(3):
        point = _add(point, point)
    if point == _IDENTITY:
        return "it is a small-order point: a signature by it proves nothing (anyone can make one)"
    return None
