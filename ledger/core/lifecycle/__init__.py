"""Governance of the governance: validate a command against the state, emit events or reject.

:func:`decide` is what the single-writer command processor runs per command. It either returns
the governance events to append (all of them, or none: nothing is half-applied) or a
:class:`Rejection` with a stable ``code``. It does not apply the events: the processor folds them
(with :func:`ledger.core.state.fold`) once they are written.

Rules (DESIGN §7):

- propose: the command names its policy, and the actor is authorized on that name *before* the
  document is read (nothing an unauthorized sender supplied is parsed); then the document must
  be within the size limit (``too_large``), validate, and name the same policy
  (``invalid_policy``); versions are 1, 2, 3 … per policy; an identical document to the latest
  version is ``already_applied``.
- approve: by a principal other than the author (``self_approval``); a version not yet approved
  (a draft, or one already in shadow, which needs no approval there); once only.
- promote: only approved versions (``not_approved``); to shadow, canary (``percent`` 1-99) or
  active. One active, at most one canary; promoting the canary to active clears the canary.
- rollback: needs a reason; re-activates the previous active version, or ``to_version``; clears
  any canary; needs no approval.
- retire: needs a reason; the policy's actions become ungoverned (denied) where no other
  policy governs them.
- Every command is authorized by a grant: ``ledger.policy.<verb>`` on ``policy:<name>``,
  ``ledger.grant.issue|revoke`` on ``principal:<p>``, ``ledger.role.assign|revoke`` on the role
  (``role:<r>``), ``ledger.key.register|revoke`` on ``principal:<p>``. Members of ``admins`` may
  do everything (bootstrap).
- keys: a registered key's id is derived from the key (``invalid_key``); a key is registered to
  one actor, once; revoking needs a reason and names a key the actor holds (or all of them).

**Authentication** comes first: :func:`decide_signed` (what the command processor runs) rejects
an unsigned command (``unsigned_command``), a key that is not a registered, unrevoked key of the
command's actor (``unknown_actor_key``) and a signature that does not verify (``bad_signature``)
before anything else is looked at — authorization, and a proposal's document — and records the
proof on every event it accepts. :func:`decide` alone takes the actor's word (the in-memory
``ledger.testing.LocalLedger`` does, for tests of agents).

One concept per module; each imports only those before it (a test enforces it):

- :mod:`.rejections` — the rejection codes, :class:`Rejection`, and how messages quote senders;
- :mod:`.commands` — what a command addresses (its aggregate) and what authorizes it;
- :mod:`.policy_rules` — the rules of propose, approve, promote, rollback and retire;
- :mod:`.grant_rules` — the rules of grants, roles and actor keys;
- :mod:`.rules` — :func:`decide`, which sends each command to its rule;
- :mod:`.admission` — authentication, freshness, :func:`decide_signed`, a command id decided once
  (:func:`decide_again`), what an applied command left unwritten (:func:`finish_again`) and
  the trust anchors;
- :mod:`.answers` — the command results published (and what a promotion or rollback takes out
  of service, which ``ledger policy show`` says too), and which stream an event belongs to.

This package's public API is :data:`__all__`; the modules' other names are its internals.
"""

from ledger.core.lifecycle.admission import (
    FirstAnswer,
    KeyTrust,
    authenticate,
    decide_again,
    decide_signed,
    finish_again,
    fresh,
    register_anchors,
)
from ledger.core.lifecycle.answers import (
    EventStream,
    already_applied,
    command_result,
    event_stream,
    taken_out_of_service,
)
from ledger.core.lifecycle.commands import (
    DEFAULT_ADMINS,
    command_action,
    command_aggregate,
    named_proposal,
)
from ledger.core.lifecycle.policy_rules import CANARY_PERCENTS, deployment_change_times
from ledger.core.lifecycle.rejections import (
    AUTHENTICATION_CODES,
    REJECTION_CODES,
    Rejection,
    clipped,
)
from ledger.core.lifecycle.rules import decide
from ledger.core.signing import CLOCK_SKEW, COMMAND_VALID_FOR

__all__ = [
    "Rejection",
    "clipped",
    "REJECTION_CODES",
    "DEFAULT_ADMINS",
    "decide",
    "decide_signed",
    "fresh",
    "COMMAND_VALID_FOR",
    "CLOCK_SKEW",
    "authenticate",
    "register_anchors",
    "command_aggregate",
    "command_action",
    "command_result",
    "already_applied",
    "named_proposal",
    "FirstAnswer",
    "KeyTrust",
    "decide_again",
    "finish_again",
    "AUTHENTICATION_CODES",
    "event_stream",
    "EventStream",
    "taken_out_of_service",
    "CANARY_PERCENTS",
    "deployment_change_times",
]
