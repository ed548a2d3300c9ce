"""The one error tree of Decision Ledger.

Every exception the product raises on purpose derives from :class:`LedgerError`, carries a stable
machine ``code`` (for scripts, logs and ``CommandRejected.code``) and an ``exit_code`` for the CLI.
Third-party exceptions are translated at the boundary (``raise CodecError(...) from exc``).
A denial is not an exception: ``evaluate`` returns a decision. Exceptions are faults.

::

    LedgerError                      code               exit
    ├── UsageError                   usage               2   bad flags or arguments
    ├── PolicyError                  policy_invalid      3   a policy document is invalid
    ├── FactsError                   facts_invalid       3   facts do not match a policy's declaration
    ├── CommandRejectedError         (the reject code)   4   the command processor refused a command
    ├── CodecError                   codec_error         5   bytes that are not a ledger record
    │   └── UnknownSchemaError       unknown_schema      5   fingerprint not among the known schemas
    ├── BrokerError                  broker_error        6   the local broker cannot be fetched/started
    │   └── PrerequisiteMissing      missing_tool        6   java / mvn not installed
    ├── KafkaUnavailable             kafka_unavailable   7   cannot reach the bootstrap servers
    ├── KafkaAccessDenied            kafka_access_denied 7   the broker refused the credentials or an ACL
    ├── TopicMissing                 topic_missing       7   a ledger topic does not exist (create it)
    ├── TopicMismatch                topic_mismatch      7   an existing topic cannot serve the ledger
    ├── LedgerTimeout                timeout             8   no answer in time (never a silent allow)
    ├── ExportError                  export_error        9   export / DuckDB failure
    │                                (query_failed: an audit query that ran and failed)
    ├── DecisionDenied               denied             10   @enforce: the call was not allowed
    │                                                        (it carries the decision trace)
    ├── TamperDetected               tamper_detected    11   audit verify: a decision chain is broken
    ├── NotReproduced                not_reproduced     12   replay --decision: re-evaluation differs
    ├── PolicyTestsFailed            policy_tests_failed 1   some offline policy test cases failed
    ├── ProcessorError               processor_error     1   a local processor failed to start
    ├── SnapshotUnusable             snapshot_unusable   1   a governance snapshot must not be used
    ├── SigningKeyMissing            no_signing_key      2   no private key to sign a command as an actor
    └── ClientClosed                 client_unavailable  7   the SDK's reply listener stopped
"""

from __future__ import annotations

__all__ = [
    "LedgerError",
    "UsageError",
    "PolicyError",
    "PolicyProblem",
    "FactsError",
    "CommandRejectedError",
    "CodecError",
    "UnknownSchemaError",
    "BrokerError",
    "PrerequisiteMissing",
    "KafkaUnavailable",
    "KafkaAccessDenied",
    "TopicMissing",
    "TopicMismatch",
    "LedgerTimeout",
    "ExportError",
    "DecisionDenied",
    "TamperDetected",
    "NotReproduced",
    "PolicyTestsFailed",
    "ProcessorError",
    "SnapshotUnusable",
    "ClientClosed",
    "SigningKeyMissing",
]

import shlex
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ledger.core.events import DecisionRecorded


class LedgerError(Exception):
    """Root of every error the product raises on purpose."""

    code: str = "ledger_error"
    exit_code: int = 1

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return self.message


class UsageError(LedgerError):
    code = "usage"
    exit_code = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyProblem:
    """One problem in a policy document, located as precisely as the input allows."""

    message: str
    file: str | None = None
    rule: str | None = None
    field: str | None = None
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        """One line, its parts shortened: a problem may quote a hostile value whole (a red
        team's 250,000-character tag, rule id or fact type made a 250 KB line)."""
        where = []
        if self.file:
            where.append(self.file + (f":{self.line}" if self.line else ""))
        if self.rule:
            where.append(f"rule {_cut(self.rule, 128)!r}")
        if self.field:
            where.append(_cut(self.field, 200))
        if self.column and not self.file:
            where.append(f"column {self.column}")
        prefix = ", ".join(where)
        message = _cut(self.message, 1_000)
        return f"{prefix}: {message}" if prefix else message


def _cut(text: str, most: int) -> str:
    return text if len(text) <= most else f"{text[:most]}… ({len(text):,} characters)"


class PolicyError(LedgerError):
    """A policy document is invalid. ``problems`` lists every problem found, in order."""

    code = "policy_invalid"
    exit_code = 3

    def __init__(
        self,
        problems: list[PolicyProblem] | tuple[PolicyProblem, ...],
        *,
        summary: str | None = None,
    ) -> None:
        self.problems = tuple(problems)
        #: The problems were already shown to the user; the message only sums them up.
        self.listed = summary is not None
        first = str(self.problems[0]) if self.problems else "invalid policy"
        more = f" (and {len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
        super().__init__(summary if summary is not None else first + more)


class FactsError(LedgerError):
    code = "facts_invalid"
    exit_code = 3


class CommandRejectedError(LedgerError):
    """Raised by clients when the command processor answered ``CommandRejected``."""

    code = "command_rejected"
    exit_code = 4


class CodecError(LedgerError):
    code = "codec_error"
    exit_code = 5


class UnknownSchemaError(CodecError):
    code = "unknown_schema"


class BrokerError(LedgerError):
    code = "broker_error"
    exit_code = 6


class PrerequisiteMissing(BrokerError):
    code = "missing_tool"


class KafkaUnavailable(LedgerError):
    code = "kafka_unavailable"
    exit_code = 7


class KafkaAccessDenied(LedgerError):
    """The broker refused the client's credentials (authentication) or an operation (ACLs)."""

    code = "kafka_access_denied"
    exit_code = 7


class TopicMissing(LedgerError):
    """A topic the ledger needs does not exist on the cluster."""

    code = "topic_missing"
    exit_code = 7


class TopicMismatch(LedgerError):
    """An existing topic's layout contradicts the ledger's (e.g. partitions it cannot remove)."""

    code = "topic_mismatch"
    exit_code = 7


class LedgerTimeout(LedgerError):
    """No answer in time. ``request_id``: the id of the call that timed out (its decision, if
    one is made later, is ``ledger decisions --request ID``; ask again under a new id, never
    this one: an id is decided once). ``sent``: whether Kafka acknowledged the message (``None``:
    not known), so a caller can tell a ledger that is down from Kafka that is away.
    ``others``: decisions read under its id that answer another request (someone sent a copy
    under it)."""

    code = "timeout"
    exit_code = 8

    def __init__(
        self,
        message: str,
        *,
        request_id: str | None = None,
        sent: bool | None = None,
        others: int = 0,
        code: str | None = None,
    ) -> None:
        super().__init__(message, code=code)
        self.request_id = request_id
        self.sent = sent
        self.others = others


class ExportError(LedgerError):
    code = "export_error"
    exit_code = 9


class DecisionDenied(LedgerError):
    """An enforcement point refused the call: the decision did not allow it, or allowed it only
    with constraints the tool cannot take. ``decision`` is the full trace."""

    code = "denied"
    exit_code = 10

    def __init__(self, decision: DecisionRecorded, *, reason: str | None = None) -> None:
        """``reason`` says why the call was refused when the decision alone does not (it
        allowed); by default the message gives the determination and the decision's reasons."""
        self.decision = decision
        if reason is None:
            why = "; ".join(decision.reasons) or _rule_of(decision) or decision.reason_code
            reason = f"{decision.determination.value} ({why or decision.determination.value})"
            if decision.reason_code == "ungoverned_action":
                # An agent engineer's walkthrough: a misspelt action and a policy left in shadow
                # read alike; the CLI reads the governance state to say which it is.
                command = shlex.join(  # quoted: a resource an LLM chose may hold `$(…)`
                    [
                        "ledger",
                        "evaluate",
                        "--action",
                        decision.action,
                        "--principal",
                        decision.principal,
                        "--resource",
                        decision.resource,
                    ]
                )
                reason += (
                    f" (a misspelt action, or its policy not deployed yet? `{command}` says which)"
                )
        super().__init__(
            f"{decision.action} on {decision.resource} by {decision.principal}: {reason}"
        )


def _rule_of(decision: DecisionRecorded) -> str | None:
    """Which rule, or which policy's default, decided, for a denial whose policy gave no
    reason (an agent engineer's walkthrough: the model read only `deny (rule_matched)`)."""
    if decision.policy is None:
        return None
    version = f"{decision.policy} v{decision.policy_version}"
    if decision.rule is not None:
        return f"rule {decision.rule} of {version}, {decision.reason_code}"
    if decision.reason_code == "default_applied":
        return f"the default of {version}, default_applied"
    return None


class TamperDetected(LedgerError):
    """``ledger audit verify`` found a decision altered, missing, inserted, reordered or outside
    every chain; the message names the first (topic, partition, offset, decision id). Also
    ``ledger actor verify``: a governance event whose command signature does not prove it."""

    code = "tamper_detected"
    exit_code = 11


class NotReproduced(LedgerError):
    """Re-evaluating a recorded decision at its governance position gave another decision (or
    its request is not in the ledger); the message says what differs."""

    code = "not_reproduced"
    exit_code = 12


class PolicyTestsFailed(LedgerError):
    """Some policy test cases failed (exit 1, like pytest)."""

    code = "policy_tests_failed"
    exit_code = 1


class ProcessorError(LedgerError):
    """A processor of the local stack could not be started or is unknown."""

    code = "processor_error"
    exit_code = 1


class SnapshotUnusable(LedgerError):
    """A processor's governance snapshot file must not be used (damaged, written by other code,
    or not a state); the message says why. The processor replays the history instead."""

    code = "snapshot_unusable"
    exit_code = 1


class ClientClosed(LedgerError):
    """The SDK client cannot answer: it was closed, or its reply listener stopped on an error
    it could not recover from (the message says which). For a call cut short while it waited,
    ``request_id`` is its id and ``sent`` whether Kafka had acknowledged it (``True``: it is
    still decided later, ``ledger decisions --request ID``), as on a
    :class:`LedgerTimeout`; both ``None`` for a call refused at once."""

    code = "client_unavailable"
    exit_code = 7

    def __init__(
        self,
        message: str,
        *,
        request_id: str | None = None,
        sent: bool | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message, code=code)
        self.request_id = request_id
        self.sent = sent


class SigningKeyMissing(LedgerError):
    """A governance command must be signed by its actor, and the key store has no private key
    for that actor (the message says where it looked and how to create one)."""

    code = "no_signing_key"
    exit_code = 2
