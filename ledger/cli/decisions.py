"""``ledger decisions``: read recorded decision traces back from the ledger (auditors, 3 a.m.).

Reads ``ledger.decisions`` from the beginning up to its current end without a consumer group
(nothing is committed, nothing changes) and filters on the client; ``--request`` with nothing
found reads the request and dead-letter topics too, to say why. Fine for the life of a
development or moderate ledger; for large histories and SQL, export to Parquet (DESIGN §9).
"""

from __future__ import annotations

import difflib
import json
from datetime import UTC, datetime
from typing import Any

import click

from ledger.cli.common import (
    bootstrap_option,
    connection,
    load_settings,
    reader_role,
    time_window,
)
from ledger.cli.output import (
    VERSION,
    handle_errors,
    json_cell,
    json_option,
    policy_label,
    print_json,
    print_table,
    printable,
    rule_label,
    to_jsonable,
)
from ledger.core.disagreement import difference, differing_constraints
from ledger.core.events import (
    BatchDecisionRecorded,
    BatchEvaluationRequested,
    BatchItemDecision,
    DeadLetter,
    DecisionRecorded,
    Determination,
    EvaluationRequested,
    ShadowResult,
    Stage,
    item_ref,
)
from ledger.core.globs import glob_matches
from ledger.core.text import clipped, quoted
from ledger.errors import UsageError
from ledger.kafka.reading import Positioned, read_topic
from ledger.settings import Settings

__all__ = ["decisions_cmd"]


@click.command("decisions", short_help="Recorded decision traces, oldest first.")
@click.option(
    "--request",
    "request_id",
    default=None,
    help="Only the decision of this request id (REQUEST#ITEM: one pre-evaluation item); none found says why.",
)
@click.option(
    "--decision",
    "decision_id",
    default=None,
    help="Only the decision with this decision id (the SDK's Decision.event_id, what an agent logs; a "
    "pre-evaluation's answer: all its items), its reasons and facts printed below the table.",
)
@click.option("--principal", default=None, help="Only decisions about this principal.")
@click.option("--action", default=None, help="Only this action (globs allowed: 'refund.*').")
@click.option(
    "--determination",
    type=click.Choice([d.value for d in Determination]),
    default=None,
    help="Only this determination.",
)
@click.option("--policy", default=None, help="Only decisions this policy made (watching a canary).")
@click.option(
    "--version",
    "policy_version",
    type=VERSION,
    default=None,
    help="With --policy: only this version's decisions (1 or v1).",
)
@click.option(
    "--disagreeing",
    is_flag=True,
    help="Only decisions a shadow (or the other of active and canary) would have answered "
    "differently (another determination, or other constraints), with what it would have said "
    "(watching a shadow live).",
)
@click.option(
    "--since", default=None, help="Decided at or after (ISO 8601, or how long ago: 1h, 7d)."
)
@click.option("--until", default=None, help="Decided before (ISO 8601, or how long ago: 1h, 7d).")
@click.option(
    "--limit",
    type=click.IntRange(1),
    default=50,
    show_default=True,
    help="Show the most recent N matches.",
)
@bootstrap_option
@json_option
@handle_errors
def decisions_cmd(
    request_id: str | None,
    decision_id: str | None,
    principal: str | None,
    action: str | None,
    determination: str | None,
    policy: str | None,
    policy_version: int | None,
    disagreeing: bool,
    since: str | None,
    until: str | None,
    limit: int,
    bootstrap: str | None,
    as_json: bool,
) -> None:
    """Recorded decision traces, oldest first; --json prints every field of each trace.

    A pre-evaluation's answer (one decision for a batch of items) shows one row per item
    (request id REQUEST#ITEM); with --json it is printed whole, its items under "decisions".

    Examples: `ledger decisions --request 01a2…` (one decision, in full with --json),
    `ledger decisions --principal agent:refund-bot --determination deny --since 2026-11-01`,
    `ledger decisions --policy refund --disagreeing` (where its shadow would have answered
    otherwise; over an export, `ledger audit run shadow_disagreements` counts them).
    """
    start, end = time_window(since, until)  # before connecting: a typo costs no wait
    given = {"--request": request_id, "--decision": decision_id, "--principal": principal}
    given |= {"--action": action, "--policy": policy}
    for flag, value in given.items():
        if value == "":  # an unset $ID: every decision matched it (a red team)
            raise UsageError(f"{flag} is empty: give a value, or leave {flag} out")
    if policy_version is not None and policy is None:
        raise UsageError("--version needs --policy: versions are numbered per policy")
    settings = load_settings(bootstrap)

    def wanted(
        decided_at: datetime, request: str, who: str, what: str, answer: Any, record_id: str
    ) -> bool:
        return not (
            (decision_id and record_id != decision_id)
            or (
                request_id
                and request != request_id
                and not (  # one item of a pre-evaluation, as the table prints it
                    isinstance(answer, BatchItemDecision)
                    and item_ref(request, answer.item_id) == request_id
                )
            )
            or (principal and who != principal)
            or (action and not glob_matches(action, what))
            or (determination and answer.determination.value != determination)
            or (policy and answer.policy != policy)
            or (policy_version is not None and answer.policy_version != policy_version)
            or (disagreeing and not _disagreements(answer))
            or (start and decided_at < start)
            or (end and decided_at >= end)
        )

    role = reader_role(settings)
    address, security = connection(settings, role)
    if role == "agent":
        click.echo(
            "note: no auditor credential in $LEDGER_CREDENTIALS: reading the decisions with "
            "the agent's (it reads them too); why a request has none is not looked up",
            err=True,
        )
    full = role == "auditor"  # the requests and dead letters: the auditor's to read
    click.echo(f"reading {settings.topics.decisions}…", err=True)
    found: list[tuple[Any, list[list[Any]]]] = []  # (record, its table rows)
    answered = False  # a decision of --request, whatever the other filters say
    named_decision = False  # --request named a decision's own id
    decision_found = False  # --decision's, whatever the other filters say
    seen: dict[str, set[int]] = {}  # policy -> versions that decided (a typo in --policy)
    # Versions of --policy by whether they were last seen observing as a shadow (an auditor's
    # walkthrough: a version back in shadow after deciding as canary got no word).
    # By the record's time, not the order partitions are read in (a review: the hint came or
    # not by which partition was read last).
    last_shadow: dict[int, tuple[int, bool]] = {}

    def sight(version: int, at: int, shadow: bool) -> None:
        if version not in last_shadow or last_shadow[version][0] <= at:
            last_shadow[version] = (at, shadow)

    principals: set[str] = set()  # who decisions were about (a typo in --principal)
    for positioned in read_topic(address, [settings.topics.decisions], security=security):
        d = positioned.event
        if decision_id and getattr(d, "event_id", None) == decision_id:
            decision_found = True
        if (
            principal
            and isinstance(d, (DecisionRecorded, BatchDecisionRecorded))
            and (d.principal == principal or len(principals) < 10_000)
        ):
            principals.add(d.principal)
        if policy and isinstance(d, (DecisionRecorded, BatchDecisionRecorded)):
            for made in d.decisions if isinstance(d, BatchDecisionRecorded) else (d,):
                # The asked policy always (a review: past 10,000 others it was "never seen");
                # the others only as names to suggest, up to 10,000.
                if made.policy == policy or (made.policy and len(seen) < 10_000):
                    versions = seen.setdefault(made.policy, set())
                    if made.policy_version is not None and made.policy == policy:
                        versions.add(made.policy_version)
                        sight(made.policy_version, positioned.timestamp_ms, False)
            if isinstance(d, DecisionRecorded):
                for s in d.shadow_results:
                    if s.policy == policy and s.stage == Stage.SHADOW:
                        sight(s.version, positioned.timestamp_ms, True)
        if request_id and isinstance(d, (DecisionRecorded, BatchDecisionRecorded)):
            answered = (
                answered
                or d.request_id == request_id
                or (
                    isinstance(d, BatchDecisionRecorded)
                    and any(item_ref(d.request_id, i.item_id) == request_id for i in d.decisions)
                )
            )
        if isinstance(d, DecisionRecorded):
            if request_id and d.event_id == request_id:
                named_decision = True  # the id given as --request is this decision's own
            if wanted(d.occurred_at, d.request_id, d.principal, d.action, d, d.event_id):
                found.append((d, [_row(d.occurred_at, d.request_id, d.principal, d)]))
        elif isinstance(d, BatchDecisionRecorded):  # a pre-evaluation: one row per item
            items = [
                i
                for i in d.decisions
                if wanted(d.occurred_at, d.request_id, d.principal, i.action, i, d.event_id)
            ]
            named_decision = named_decision or bool(request_id and d.event_id == request_id)
            if items:
                found.append(
                    (
                        d,
                        [
                            _row(d.occurred_at, item_ref(d.request_id, i.item_id), d.principal, i)
                            for i in items
                        ],
                    )
                )
    found.sort(key=lambda pair: pair[0].occurred_at)
    shown = found[-limit:]
    if request_id:
        several = _several(request_id, found)
        if several is not None:
            click.echo(f"note: {several}", err=True)
    if policy and not found:
        shadows = {version for version, (_, shadow) in last_shadow.items() if shadow}
        unseen = _unseen(policy, policy_version, seen, shadows)
        if unseen is not None:
            click.echo(f"note: {unseen}", err=True)
    if principal and not found and principal not in principals:
        close = difflib.get_close_matches(principal[:100], sorted(principals)[:1000], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        click.echo(
            f"note: no decision in the ledger is about {quoted(principal, 80)}{hint}",
            err=True,
        )
    if as_json:
        print_json([to_jsonable(record) for record, _ in shown])
        if len(found) > len(shown):  # an auditor's walkthrough: 50 of 1,300, without a word
            click.echo(
                f"note: {len(shown)} decision(s) shown, and {len(found) - len(shown)} older: "
                "raise --limit",
                err=True,
            )
        if request_id and not found:
            click.echo(
                f"note: {_none_of(request_id, named_decision, address, security, settings, answered, full=full)}",
                err=True,
            )
        if decision_id and not found:
            click.echo(f"note: {_no_decision(decision_id, decision_found)}", err=True)
        return
    print_table(
        [
            "decided at",
            "request id",
            "principal",
            "action",
            "resource",
            "determination",
            "policy",
            "rule",
            "reason code",
            "constraints",
            *(["would have said"] if disagreeing else []),
        ],
        [
            [*row, *([_disagreements(record)] if disagreeing else [])]
            for record, rows in shown
            for row in rows
        ],
    )
    more = len(found) - len(shown)
    if (request_id or decision_id) and len(shown) == 1:  # one decision: why, in full
        record, rows = shown[0]
        listed = {row[1] for row in rows}  # the items the filters kept, by their table id
        for label, answer in _answers(record):
            if label and label not in listed:
                continue
            for reason in answer.reasons:  # the sender's text in part: escaped, one line each
                said = printable(reason, one_line=True)
                click.echo(
                    f"reason ({printable(label, 120)}): {said}" if label else f"reason: {said}"
                )
        facts = getattr(record, "facts", None)
        if facts:  # what the rule read (a policy owner's walkthrough: only --json showed it)
            click.echo(f"facts: {printable(clipped(json_cell(facts), FACTS_SHOWN), one_line=True)}")
    rows_shown = sum(len(rows) for _, rows in shown)
    counted = (  # an operator's drill: 4 rows printed, "3 decision(s)" said
        f", {rows_shown} rows: a pre-evaluation's items a row each"
        if rows_shown != len(shown)
        else ""
    )
    click.echo(
        f"{len(shown)} decision(s){counted}"
        + (f" (and {more} older: raise --limit)" if more else ""),
        err=True,
    )
    if request_id and not found:
        click.echo(
            f"note: {_none_of(request_id, named_decision, address, security, settings, answered, full=full)}",
            err=True,
        )
    if decision_id and not found:
        click.echo(f"note: {_no_decision(decision_id, decision_found)}", err=True)


FACTS_SHOWN = 2000
"""Characters of a decision's facts printed under it (all of them: ``--json``)."""


def _none_of(
    request_id: str,
    named_decision: bool,
    address: Any,
    security: Any,
    settings: Settings,
    answered: bool,
    *,
    full: bool = True,
) -> str:
    """Why ``--request`` found nothing (``full``: reading the requests and dead letters, the
    auditor's to read, if it comes to that): the id is a decision's own (an agent engineer's
    walkthrough: the decision id agents are told to log, given as --request), or as
    :func:`_why_none` finds."""
    if named_decision:
        return (
            f"{clipped(request_id, 80)} is a decision's id, not a request's: "
            f"`ledger decisions --decision {clipped(request_id, 80)}` shows it"
        )
    return _why_none(address, security, settings, request_id, answered, full=full)


def _no_decision(decision_id: str, found: bool) -> str:
    """Why ``--decision`` found nothing: the other filters left it out (an auditor's
    walkthrough: told there was no such decision), or there is none."""
    if found:
        return (
            f"decision {quoted(decision_id, 80)} is in the ledger, but not as the other "
            "filters ask: drop them"
        )
    return f"no decision has id {quoted(decision_id, 80)} (a request id? --request takes it)"


def _answers(record: Any) -> list[tuple[str, Any]]:
    """A decision's answers with the label of their row: ``("", decision)``, or each item of a
    pre-evaluation with ``REQUEST#ITEM``."""
    if isinstance(record, BatchDecisionRecorded):
        return [(item_ref(record.request_id, i.item_id), i) for i in record.decisions]
    return [("", record)]


def _unseen(
    policy: str, version: int | None, seen: dict[str, set[int]], shadows: set[int]
) -> str | None:
    """Why ``--policy``/``--version`` found nothing, when no decision names them at all (a typo
    read as "no traffic" or "no disagreements"), or the version observes, as a shadow, at its
    last sight (``shadows``): what it would have said is where ``--disagreeing`` looks."""
    if policy not in seen:
        close = difflib.get_close_matches(policy[:100], sorted(seen)[:1000], n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"no decision in the ledger names policy {quoted(policy, 80)}{hint}"
    if version is None:
        return None
    made = ", ".join(f"v{v}" for v in sorted(seen[policy])) or "none"
    if version in shadows:
        before = (
            " (it decided in another stage before: widen --since, or drop it, for those)"
            if version in seen[policy]
            else f" (versions that decided: {made})"
        )
        return (
            f"no decision was made by {policy} v{version} here: it is a shadow, which decides "
            f"nothing{before}; `ledger decisions --policy {policy} --disagreeing` (no "
            "--version) shows what it would have said where it differs"
        )
    if version not in seen[policy]:
        return f"no decision was made by {policy} v{version} (versions that decided: {made})"
    return None


def _several(request_id: str, found: list[tuple[Any, list[list[Any]]]]) -> str | None:
    """What to say when ``--request`` named more than one decision by the same text: a request
    decided again, or ids (free text) that read alike: a request whose own id reads as another's
    REQUEST#ITEM, an item id repeated in a hand-built pre-evaluation."""
    named = [(record, sum(1 for row in rows if row[1] == request_id)) for record, rows in found]
    kinds = [
        "a request of that id"
        if isinstance(record, DecisionRecorded)
        else f"{count} item(s) of pre-evaluation {clipped(record.request_id, 60)}"
        for record, count in named
        if count
    ]
    total = sum(count for _, count in named)
    if total < 2:
        return None
    return (
        f"{quoted(request_id, 80)} names {total} decisions ({'; '.join(kinds)}): a "
        "request decided again, or ids (free text) that read alike; --json shows each with "
        "its decision id (event_id), which names one"
    )


def _disagreements(answer: Any) -> str:
    """What the versions that did not decide would have answered differently
    (:func:`~ledger.core.disagreement.difference`), ``refund v2 (shadow): deny by rule no-vip``, or
    with its first reason where no rule decided (``deny (version 2 does not govern
    refund.void)``: a bare deny explains nothing), or, for the same determination, the
    constraints that differ (``max_refund 400.00 (decided 500.00)``); empty when every one agreed
    (or none ran: a pre-evaluation's items carry no shadow results)."""
    if not isinstance(answer, DecisionRecorded):
        return ""
    said = []
    for s in answer.shadow_results:
        differs = difference(
            answer.determination, answer.constraints, s.determination, s.constraints
        )
        if differs is None:
            continue
        text = f"{policy_label(s.policy, s.version, s.stage)}: {s.determination.value}{_why(s)}"
        if differs == "constraints":
            text += ", " + ", ".join(  # absent is not null (a review: both read "-")
                f"{name} {_side(theirs, decided) if name in s.constraints else 'absent'} "
                f"(decided {_side(decided, theirs) if name in answer.constraints else 'absent'})"
                for name, decided, theirs in differing_constraints(
                    answer.constraints, s.constraints
                )
            )
        said.append(text)
    return "; ".join(said)


def _value(value: Any) -> str:
    """A constraint's value as one short cell (``-``: the answer has no such constraint)."""
    if value is None:
        return "-"
    shown = to_jsonable(value)  # a Decimal as its digits, an instant as RFC 3339
    return clipped(shown if isinstance(shown, str) else json.dumps(shown, ensure_ascii=False), 40)


def _side(value: Any, other: Any) -> str:
    """``value`` beside ``other`` in a disagreement: as :func:`_value`, but text quoted when
    the two would read alike (an auditor's walkthrough: a text "500" beside the number 500
    read ``cap 500 (decided 500)``)."""
    if _value(value) == _value(other) and isinstance(value, str):
        return clipped(json.dumps(value, ensure_ascii=False), 40)
    return _value(value)


def _why(said: ShadowResult) -> str:
    """The deciding rule of what a version would have said, else its first reason."""
    if said.rule:
        return f" by rule {said.rule}"
    return f" ({clipped(said.reasons[0], 80)})" if said.reasons else ""


def _row(
    decided_at: datetime, request: str, principal: str, d: DecisionRecorded | BatchItemDecision
) -> list[Any]:
    return [
        _utc(decided_at),
        request,
        principal,
        d.action,
        d.resource,
        d.determination.value,
        policy_label(d.policy, d.policy_version, getattr(d, "stage", None)),
        rule_label(d.rule, d.reason_code),
        d.reason_code or "-",
        json_cell(d.constraints),
    ]


def _utc(t: datetime) -> str:
    """2026-11-27T03:47:40.213Z: one column wide, unambiguous."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _why_none(
    address: str,
    security: Any,
    settings: Settings,
    request_id: str,
    answered: bool,
    *,
    full: bool = True,
) -> str:
    """Why ``--request`` found nothing: the other filters left its decision out, or it has
    none (:func:`_undecided`)."""
    if answered:
        return (
            f"request {quoted(request_id, 80)} was decided, but not as the other "
            "filters ask: drop them to see its decision"
        )
    if not full:
        return (
            f"no decision for request {quoted(request_id, 80)} (yet): whether it was asked, "
            "dead-lettered or is still waiting for an evaluator, the auditor's credential "
            "tells (`ledger decisions --request` with auditor.json in $LEDGER_CREDENTIALS)"
        )
    return _undecided(address, security, settings, request_id)


def _undecided(address: str, security: Any, settings: Settings, request_id: str) -> str:
    """Why request ``request_id`` has no decision: never asked (a mistyped id), dead-lettered,
    or asked and not decided yet. Read only when ``--request`` found nothing."""
    requests, letters = settings.topics.evaluation_requests, settings.topics.dead_letters
    click.echo(f"no decision; reading {requests} and {letters}…", err=True)
    asked: Positioned | None = None
    dead_at: dict[tuple[int, int], tuple[str, str]] = {}  # (partition, offset) → (code, reason)
    keyed: dict[bytes, DeadLetter] = {}  # the first letter of a record keyed by each request id
    for positioned in read_topic(address, [requests, letters], security=security):
        event = positioned.event
        if isinstance(event, (EvaluationRequested, BatchEvaluationRequested)):
            if event.event_id == request_id or (
                isinstance(event, BatchEvaluationRequested)
                and any(item_ref(event.event_id, i.item_id) == request_id for i in event.items)
            ):
                asked = positioned
        elif isinstance(event, DeadLetter) and event.source_topic == requests:
            dead_at[event.partition, event.offset] = (event.code, clipped(event.reason, 200))
            if event.key is not None:
                keyed.setdefault(event.key, event)
    shown = quoted(request_id, 80)
    letter = keyed.get(request_id.encode("utf-8", "backslashreplace"))
    if asked is None and letter is not None:
        # A request that does not decode (an instant past year 9999 ...) is not found by its
        # id, only by the key it was sent with, as the SDK keys each request.
        return (
            f"no request {shown} decodes, but a record keyed by that id ({requests} partition "
            f"{letter.partition}, offset {letter.offset}) was dead-lettered ({letter.code}: "
            f"{clipped(letter.reason, 200)}) and will never be decided; see Failure behaviour "
            "in the README"
        )
    if asked is None:
        return (
            f"no request {shown} in {requests} either: check the id (a decision's "
            "request_id, a LedgerTimeout's request_id; `ledger decisions --principal P` lists "
            "recent ones), or it never reached Kafka (the SDK logs `was never delivered to "
            "Kafka` of an asynchronous request it dropped, and a timeout with sent=False)"
        )
    dead = dead_at.get((asked.partition, asked.offset))
    when = _utc(asked.event.occurred_at)
    if dead is not None:
        return (
            f"request {shown}, asked at {when}, was dead-lettered ({dead[0]}: {dead[1]}) and "
            "will never be decided; see Failure behaviour "
            "in the README"
        )
    return (
        f"request {shown} was asked at {when} ({requests} partition {asked.partition}, offset "
        f"{asked.offset}) and is not decided yet: is an evaluator running (`ledger ps`)?"
    )
