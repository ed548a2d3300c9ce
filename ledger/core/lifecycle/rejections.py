"""Rejections: a refused command is a value with a stable code.

Lives here: :data:`REJECTION_CODES` (every code a command can be refused with, and what it
means), :data:`AUTHENTICATION_CODES` (those of a command never authenticated as its actor's),
:class:`Rejection`, and how a message quotes what a sender wrote (:func:`clipped`, ``_shown``)
and is bounded (``_reject``, :data:`REJECTION_CHARS`).

May import: the stdlib and :mod:`ledger.core.authority` — no other module of this package.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from ledger.core.authority import PRINCIPAL_FORM
from ledger.core.text import clipped

__all__ = [
    "Rejection",
    "clipped",
    "REJECTION_CODES",
    "REJECTION_CHARS",
    "AUTHENTICATION_CODES",
]


REJECTION_CODES: Final[dict[str, str]] = {
    "not_authorized": "the actor holds no grant for this command",
    "invalid_policy": "the proposal names no policy, or its document does not validate or is for another policy",
    "too_large": "the proposed document, a note or reason, or an event the command would append, exceeds its size limit",
    "unknown_policy": "no policy of that name",
    "unknown_version": "the policy has no such version",
    "self_approval": "the author cannot approve their own version",
    "not_approved": "only approved versions can be promoted or rolled back to",
    "invalid_stage": "promotion target is not shadow, canary or active, or conflicts with the version's stage",
    "invalid_percent": "canary needs a percent from 1 to 99; other stages take none",
    "no_previous_version": "there is no earlier active version to roll back to",
    "never_active": "a rollback names a version that was never active: promote it instead",
    "no_active_version": "a canary needs an active version to share traffic with",
    "missing_reason": "rollback, retire and revoking a key need a reason",
    "already_applied": "the command would change nothing (already in that state)",
    "policy_retired": "the policy is retired",
    "deployment_changed": "the policy's deployed versions changed after a rollback, retirement or promotion was signed, by another actor, whose change its sender could not have seen (or a rollback's --from version is no longer the active one): look again, and send it anew if still wanted",
    "invalid_principal": f"a principal must be {PRINCIPAL_FORM}",
    "invalid_role": "a role must be role:<name>",
    "invalid_grant": "the grant has no actions, an empty resource or an empty validity window",
    "invalid_condition": "the grant condition does not compile",
    "duplicate_grant": "a grant with this id was issued before (held, ended or revoked: ids are never reused)",
    "grants_too_costly": "the grant, or the role assigned, would make trying a principal's grants cost each of its requests more than principal_grant_units",
    "unknown_grant": "no grant with this id",
    "not_member": "the principal does not hold that role",
    "unsigned_command": "the command carries no signature of its actor",
    "unknown_actor_key": "the signing key is not a registered, unrevoked key of the command's actor",
    "bad_signature": "the signature does not verify against the actor's key",
    "stale_command": "the command was signed too long ago (or too far ahead of the ledger's clock)",
    "invalid_key": "the key is not a 32-byte Ed25519 public key with its own id, or belongs to someone",
    "duplicate_command_id": "another command already used this command id: sign the command again (a new id)",
    "governance_unreadable": "the governance log holds a record this command processor cannot read (a newer release wrote it): every command is refused until that release's command processor runs (or a newer release answered this command id, in an answer it cannot read: this command is not decided again)",
    "cut_short": "a command cut short by a restart could not be finished (stale by then, or its aggregate changed since): do what the message names again",
}
"""Every code :func:`decide` can return, with what it means."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Rejection:
    """A refused command: a value, not an exception. ``code`` is stable (see REJECTION_CODES)."""

    code: str
    message: str


def _shown(text: str, limit: int = 200) -> str:
    """``text`` quoted for a message, shortened when a sender made it huge."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}… ({len(text)} characters)"


REJECTION_CHARS: Final = 1_000
"""A rejection's message at most: the processor remembers rejections for minutes, and one that
quoted a sender's megabyte of text at full length was a way to fill its memory."""


def _reject(code: str, message: str) -> Rejection:
    assert code in REJECTION_CODES, code
    return Rejection(code=code, message=clipped(message, REJECTION_CHARS))


AUTHENTICATION_CODES: Final = frozenset(
    {"unsigned_command", "unknown_actor_key", "bad_signature", "stale_command"}
)
"""The rejections of a command that was never authenticated as its actor's (see
:func:`decide_signed`): nothing about them is remembered against the command's id."""
