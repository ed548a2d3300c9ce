"""What the command groups share: options, settings, input parsing, and the SDK client and
governance history every command that talks to the ledger uses. Parsing and printing only: the
rules are the core's."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, TypeVar

import click

from ledger.cli import SENDING
from ledger.cli.output import json_option, print_json, print_table, to_jsonable
from ledger.client import ClientConfig, LedgerClient
from ledger.codec import default_codec
from ledger.core.authority import PRINCIPAL_FORM, Grant, valid_principal
from ledger.core.events import Command, CommandAccepted, EvaluationRequested
from ledger.core.history import HistoryEntry, state_at
from ledger.core.jsonform import InstantOutOfRange, format_timestamp, parse_instant, zone_given
from ledger.core.lifecycle import deployment_change_times
from ledger.core.limits import DEFAULT_LIMITS
from ledger.core.state import LedgerState
from ledger.discovery import read_credentials, resolve_bootstrap, resolve_security
from ledger.errors import CodecError, CommandRejectedError, FactsError, UsageError
from ledger.files import UnreadableFile, read_bounded
from ledger.ids import new_id, utcnow
from ledger.kafka.governance import Lacking, load_history
from ledger.keys import KeyStore, sign
from ledger.settings import KafkaSecurity, Role, Settings

__all__ = [
    "Seconds",
    "FROM_EXPORT",
    "FROM_INSTEAD_OF_KAFKA",
    "from_option",
    "bootstrap_option",
    "connection",
    "current_state",
    "ledger_client",
    "ledger_options",
    "facts_and_context",
    "json_text",
    "load_settings",
    "note_incomplete",
    "parse_time",
    "policy_rows",
    "principal_arg",
    "reason_option",
    "canary_cell",
    "grant_row",
    "membership_rows",
    "role_rows",
    "time_window",
    "read_text_file",
    "resolve_bootstrap",
    "submit",
]

F = TypeVar("F", bound=Callable[..., Any])


def bootstrap_option(func: F) -> F:
    return click.option(
        "--bootstrap",
        metavar="HOST:PORT[,…]",
        default=None,
        help="Kafka bootstrap servers (default: $LEDGER_BOOTSTRAP, else the local broker).",
    )(func)


FROM_EXPORT: str = "Export directory (default: $LEDGER_HOME/export, where `ledger export` writes)."
FROM_INSTEAD_OF_KAFKA: str = "Read the history from this export directory instead of from Kafka."


def from_option(help: str = FROM_EXPORT, dest: str = "from_dir") -> Callable[[F], F]:
    """``--from DIR``: an export directory (the parameter ``dest``), every command's the same
    option with its own help (where the default is Kafka, say so)."""

    def add(func: F) -> F:
        return click.option(
            "--from", dest, type=click.Path(path_type=Path), default=None, help=help
        )(func)

    return add


def note_incomplete(directory: Path, manifest: Any = None) -> None:
    """A ``note:`` line on stderr when the export at ``directory`` (its manifest, read if not
    given) was last written by a run that stopped part-way: an answer read from it may lack
    what its other topics hold (decisions of the requests it shows, say); and one when its
    governance logs lack offsets: every point-in-time answer after the gap is wrong."""
    from ledger.audit.history import governance_gap_note
    from ledger.audit.manifest import incomplete_note, read_manifest

    manifest = manifest if manifest is not None else read_manifest(directory)
    if manifest is None:
        return
    for note in (incomplete_note(directory, manifest), governance_gap_note(directory, manifest)):
        if note is not None:
            click.echo(f"note: {note}", err=True)


def after_the_read(from_dir: Path | None, start: datetime | None) -> str | None:
    """Why the export at ``from_dir`` holds nothing of a window starting at ``start``, when it
    starts after the export read the ledger (a review: `--since 1h` counts back from now, and
    over yesterday's export it holds nothing); ``None`` otherwise."""
    if from_dir is None or start is None:
        return None
    from ledger.audit.manifest import read_manifest

    manifest = read_manifest(from_dir)
    read_at = manifest.read_instant() if manifest is not None else None
    if read_at is None or start <= read_at:
        return None
    return (
        f"--since {format_timestamp(start)} is after {from_dir} read the ledger "
        f"({format_timestamp(read_at)}): the export holds nothing of that window (a time "
        "written as how long ago counts back from now: give the instant, or export again)"
    )


def load_settings(bootstrap: str | None = None) -> Settings:
    """The one place the CLI builds its settings (flags over environment)."""
    return Settings.from_env(bootstrap=bootstrap)


def read_text_file(
    path: Path, *, what: str = "file", limit: int = DEFAULT_LIMITS.policy_document_bytes
) -> str:
    """A UTF-8 text file's content, or one :class:`UsageError` line saying what to fix
    (:func:`~ledger.files.read_bounded`: a regular file of at most ``limit`` bytes only)."""
    try:
        data = read_bounded(path, limit, what=what)
    except UnreadableFile as exc:
        raise UsageError(str(exc)) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not UTF-8 text; save the {what} as UTF-8") from None


def json_text(value: str, flag: str) -> str:
    """The JSON text of an option such as ``--facts``: as given, or with ``@FILE`` the file's
    (``@-``: standard input), at most ``facts_bytes``. A shell passes at most 128 KiB in one
    argument, so larger facts come from a file."""
    if not value.startswith("@"):
        return value
    limit = DEFAULT_LIMITS.facts_bytes
    if value == "@-":
        data = click.get_binary_stream("stdin").read(limit + 1)
        if len(data) > limit:
            raise UsageError(f"{flag} from standard input is larger than {limit:,} bytes")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise UsageError(f"{flag} from standard input is not UTF-8 text") from None
    try:
        return read_text_file(Path(value[1:]), what=f"{flag} file", limit=limit)
    except UsageError as exc:
        if "is not a regular file" not in str(exc):
            raise
        # A shell's @<(command) is a pipe, refused as a FIFO with no writer would hang.
        raise UsageError(f"{exc}, or pipe it in: COMMAND | ledger … {flag} @-") from None


def facts_and_context(facts: str, context: str) -> tuple[str, str]:
    """The JSON texts of ``--facts`` and ``--context`` (:func:`json_text`); standard input
    can give only one of them."""
    if facts == context == "@-":
        raise UsageError("--facts and --context cannot both come from standard input (@-)")
    return json_text(facts, "--facts"), json_text(context, "--context")


AGO_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
"""The units of a time written as how long ago (``--since 1h``): seconds to weeks."""


def time_ago(value: str, now: datetime | None = None) -> datetime | None:
    """``30m``, ``1h``, ``7d``: that long before ``now``; ``None`` for anything else (an
    auditor's walkthrough: `simulate --since 1h` was refused as not ISO 8601)."""
    count, unit = value[:-1], value[-1:]
    if unit not in AGO_UNITS or not count.isdigit() or not count.isascii() or len(count) > 9:
        return None
    try:
        return (now or utcnow()) - timedelta(seconds=int(count) * AGO_UNITS[unit])
    except OverflowError:
        raise InstantOutOfRange(f"{value} ago lies before the year 1") from None


def parse_time(value: str | None, flag: str, *, zoned: bool = False) -> datetime | None:
    """An ISO 8601 instant from a flag (UTC when it has no offset), or a UsageError naming it.
    Unless ``zoned``, also how long ago (``1h``, ``30m``, ``7d``: :func:`time_ago`).
    ``zoned``: one without a zone is refused (what is recorded, a grant's window, must not be
    the local time someone typed taken for UTC: a red team's finding)."""
    if value is None:
        return None
    try:
        ago = None if zoned else time_ago(value.strip())
        if ago is not None:
            return ago
        instant = parse_instant(value)
        if zoned and not zone_given(value):
            # (a date alone, `2026-12-01`, is read as its midnight, with no zone: the same)
            suggested = f"{value}T00:00:00Z" if len(value) == 10 else f"{value}Z"
            raise UsageError(
                f"{flag} {value!r} has no zone: write it in UTC with Z ({suggested}) or with "
                "its offset (+02:00, -05:00); the ledger records it in UTC"
            )
        return instant
    except InstantOutOfRange as exc:
        raise UsageError(f"{flag} {exc}: give a time within them") from None
    except ValueError:
        hint = "" if zoned else ", or how long ago: 30m, 1h, 7d"
        raise UsageError(
            f"{flag} {value!r} is not an ISO 8601 time, e.g. 2026-11-26T12:00:00Z (a date with "
            f"a zone needs its time: 2026-11-26T00:00:00+02:00){hint}"
        ) from None


def time_window(since: str | None, until: str | None) -> tuple[datetime | None, datetime | None]:
    """``--since``/``--until`` as instants, refused when the window holds nothing."""
    start, end = parse_time(since, "--since"), parse_time(until, "--until")
    if start is not None and end is not None and end <= start:
        raise UsageError(f"--until {until} is not after --since {since}")
    return start, end


class Seconds(click.FloatRange):
    """A number of seconds within bounds; ``nan`` and ``inf`` are not durations."""

    name = "seconds"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        seconds = super().convert(value, param, ctx)
        if not math.isfinite(seconds):
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        return seconds


def ledger_options(func: F) -> F:
    """--bootstrap, --timeout and --json, shared by every command that sends the ledger
    something and waits for its answer (commands that only read have no --timeout)."""
    func = click.option(
        "--timeout",
        type=Seconds(0.1, 600),
        default=10.0,
        show_default=True,
        help="Seconds to wait for the answer.",
    )(func)
    return json_option(bootstrap_option(func))


def connection(settings: Settings, role: Role) -> tuple[str, KafkaSecurity]:
    """Where Kafka is, and ``role``'s credential for it (see :mod:`ledger.discovery`)."""
    address = resolve_bootstrap(settings, start="ledger up")  # as `ps` and the SDK advise
    return address, resolve_security(settings, role, bootstrap=address)


def reader_role(settings: Settings) -> Role:
    """The role that reads the decisions: ``auditor``, or ``agent`` where only the agent's
    credential is at hand ($LEDGER_CREDENTIALS holding agent.json alone, a developer's
    machine: the agent role reads ``ledger.decisions`` too; a red team: every hint sent such a
    user to `ledger decisions --request`, which then asked for the auditor's password)."""
    if settings.credentials_dir is None or settings.security is not None:
        return "auditor"
    if read_credentials(settings, "auditor") is None and (
        read_credentials(settings, "agent") is not None
    ):
        return "agent"
    return "auditor"


@contextmanager
def ledger_client(
    bootstrap: str | None, actor: str, *, role: Role = "agent"
) -> Iterator[LedgerClient]:
    """An SDK client configured the way every command finds the ledger, as ``role``."""
    settings = load_settings(bootstrap)
    address, security = connection(settings, role)
    config = ClientConfig(
        bootstrap=address, topics=settings.topics, actor=actor, security=security, role=role
    )
    with LedgerClient(config) as client:
        yield client


def reason_option(func: F) -> F:
    """``--reason``, required and not blank: a blank one was sent and refused by the command
    processor (``missing_reason``, exit 4), where a missing one was a usage error (exit 2)."""

    def text(ctx: click.Context, param: click.Parameter, value: str) -> str:
        if not value.strip():
            raise click.BadParameter("is empty: say why, in words (it is kept in the ledger)")
        return value

    return click.option("--reason", required=True, callback=text, help="Why (kept in the ledger).")(
        func
    )


def principal_arg(value: str, flag: str) -> str:
    """A ``kind:name`` principal from a flag (the core's rule), or one usage line naming the flag."""
    if not valid_principal(value):
        raise UsageError(f"{flag} {value!r} is not a principal: use {PRINCIPAL_FORM}")
    return value


def sendable_request(
    principal: str, action: str, resource: str, facts: Mapping[str, Any], context: Mapping[str, Any]
) -> EvaluationRequested:
    """The request a command asks about, as the SDK would send it, or :class:`FactsError` (exit
    3) for a value the wire format cannot carry (an integer beyond 64 bits, a lone surrogate):
    bad input, found before anything is connected to, never an undecodable record (exit 5).
    A flag's own text that cannot be carried is a :class:`UsageError` naming the flag."""
    for flag, value in (("--principal", principal), ("--action", action), ("--resource", resource)):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise UsageError(
                f"{flag} is not text the ledger can carry (a lone surrogate at character "
                f"{exc.start + 1}): pass it as UTF-8"
            ) from None
    request = EvaluationRequested(
        event_id=new_id(),
        occurred_at=utcnow(),
        actor=principal,
        action=action,
        principal=principal,
        resource=resource,
        facts=facts,
        context=context,
    )
    try:
        default_codec().encode(request)
    except CodecError as exc:
        raise FactsError(f"the ledger's SDK would refuse to send this request: {exc}") from None
    return request


def submit(
    bootstrap: str | None,
    timeout: float,
    as_json: bool,
    command: Command,
    what: str,
    *,
    extra: dict[str, Any] | None = None,
    version_label: str = "version",
) -> CommandAccepted:
    """Sign a command with its actor's key, submit it, wait for the result, print it (``extra``
    joins the JSON document). No key for the actor in the key store: one line, exit 2."""
    store = KeyStore(load_settings(bootstrap).keys)
    with ledger_client(bootstrap, command.actor, role="governance") as client:
        command = sign(command, store.private_key(command.actor))
        SENDING.append(command.event_id)
        try:
            result = client.submit_command(command, timeout=timeout)
        except CommandRejectedError as refused:
            behind = _clock_behind(refused)
            if behind is None:
                raise
            raise CommandRejectedError(f"{refused}; {behind}", code=refused.code) from None
    if as_json:
        print_json({**(extra or {}), **to_jsonable(result)})
    else:
        version = f" {version_label} {result.version}" if result.version is not None else ""
        click.echo(f"accepted: {what}{version} ({result.message or 'no change'})")
    return result


def _clock_behind(refused: CommandRejectedError) -> str | None:
    """What to add to a ``deployment_changed`` refusal when this machine's clock is behind the
    command processor's (the change it did not see is dated after this clock's now): sending
    it again is refused until this clock passes the change (a review: a signer 90 s behind
    was refused again and again, told to send it anew)."""
    if refused.code != "deployment_changed":
        return None
    times = deployment_change_times(str(refused))
    now = utcnow()
    if times is None or times[1] <= now:
        return None
    return (
        f"this machine's clock ({format_timestamp(now)}) is behind the command processor's "
        f"by at least {(times[1] - now).total_seconds():.1f} s: it is refused again until "
        "this clock passes the change; set the clock right (NTP), then send it"
    )


def current_state(
    bootstrap: str | None, *, warn: bool = True
) -> tuple[LedgerState, list[HistoryEntry]]:
    """The governance state now, and the history it was folded from (read from Kafka);
    ``warn``: say on stderr what it lacks (records of a schema this ledger does not know, but
    those ``LEDGER_GOVERNANCE_SKIP`` names)."""
    settings = load_settings(bootstrap)
    address, security = connection(settings, "auditor")
    history = read_history(
        functools.partial(load_history, address, settings.topics, security=security), warn=warn
    )
    return state_at(history), history


class HistoryReader(Protocol):
    """Reads the governance history (``load_history``, a source's ``history``), noting what it
    passes over in ``lacking``."""

    def __call__(self, *, lacking: Lacking | None = ...) -> list[HistoryEntry]: ...


def read_history(read: HistoryReader, *, warn: bool = True) -> list[HistoryEntry]:
    """The governance history ``read`` reads; ``warn``: say on stderr what it lacks (records
    of a schema this ledger does not know, but those ``LEDGER_GOVERNANCE_SKIP`` names): every
    command that shows or decides from the history reads it here (a review: `policy show`, then
    a red team: `replay --at`, printed an earlier state, exit 0, with no word)."""
    lacking = Lacking(skip=load_settings().governance_skip)
    history = read(lacking=lacking)
    newer, damaged = lacking.counts["newer"], lacking.counts["damaged"]
    if newer and warn:
        click.echo(
            f"warning: {newer} governance record(s) are of a schema this ledger does not "
            f"know, a newer release's ({_some(lacking.newer, newer)}): what is shown lacks "
            "them; use the newer release's ledger command",
            err=True,
        )
    if damaged and warn:
        click.echo(
            f"warning: {damaged} governance record(s) are damaged, no governance event "
            f"(cut short, empty or not Avro: {_some(lacking.damaged, damaged)}): what is shown "
            "lacks whatever they held; `ledger actor verify` says what each is (README: the "
            "3 a.m. table)",
            err=True,
        )
    return history


def _some(items: list[str], count: int) -> str:
    """The first three of ``items``, and how many more of ``count``."""
    more = f" and {count - 3} more" if count > 3 else ""
    return ", ".join(items[:3]) + more


def canary_cell(row: Mapping[str, Any]) -> str:
    """A policy row's canary as tables show it: ``v2 (10%)``, or ``-``."""
    return f"v{row['canary']} ({row['canary_percent']}%)" if row["canary"] else "-"


def grant_row(grant: Grant, holder: str) -> dict[str, Any]:
    """One grant as ``grant list`` and ``replay`` show it, held by ``holder`` (``via`` names
    the role it comes through, when it is not the holder's own)."""
    return {
        "grant_id": grant.grant_id,
        "principal": holder,
        "via": grant.principal if grant.principal != holder else None,
        "actions": list(grant.actions),
        "resource": grant.resource,
        "condition": grant.condition,
        "issued_at": grant.issued_at,
        "valid_from": grant.valid_from,
        "valid_until": grant.valid_until,
        "granted_by": grant.granted_by,
        "approved_by": grant.approved_by,
    }


def in_force_text(row: dict[str, Any], now: datetime) -> str:
    """Whether a grant (:func:`grant_row`) applies at ``now``, in words: a grant that ended or
    has not begun is listed (it is not revoked) but gives nothing then."""
    start, end = row["valid_from"], row["valid_until"]
    if start is not None and now < start:
        return f"no: from {format_timestamp(start)}"
    if end is not None and now >= end:
        return f"no: ended {format_timestamp(end)}"
    return f"yes, until {format_timestamp(end)}" if end is not None else "yes"


def role_rows(state: LedgerState, principal: str | None) -> dict[str, list[str]]:
    """Principal -> the roles it holds (only ``principal``'s when given)."""
    return {
        n: sorted(r.roles)
        for n, r in state.principals.items()
        if r.roles and (not principal or n == principal)
    }


def membership_rows(state: LedgerState, principal: str | None) -> list[dict[str, str | None]]:
    """One row per role membership (only ``principal``'s when given), by member then role: the
    member, the role and who assigned it (the actor of its latest assignment, which decides
    what a grant to the role may reach: ``None`` when the state does not say)."""
    return [
        {"principal": n, "role": role, "assigned_by": r.role_assigned_by.get(role)}
        for n, r in sorted(state.principals.items())
        if r.roles and (not principal or n == principal)
        for role in sorted(r.roles)
    ]


def print_memberships(memberships: list[dict[str, str | None]], title: str | None = None) -> None:
    """The table of :func:`membership_rows` (nothing when there are none)."""
    if memberships:
        print_table(
            ["principal", "role", "assigned by"],
            [[m["principal"], m["role"], m["assigned_by"] or "-"] for m in memberships],
            title=title,
        )


def policy_rows(state: LedgerState) -> list[dict[str, Any]]:
    """One summary row per policy (the owner of the version that decides, else of the newest;
    the newest's owner; deployed versions, what they govern and what only its shadows
    observe), as tables and --json show them."""
    rows = []
    for name in sorted(state.policies):
        rec = state.policies[name]
        latest = rec.versions.get(rec.latest)
        # The owner of the version that decides, not of the newest draft: anyone allowed to
        # propose could otherwise rename who owns a live policy, unapproved (a policy owner's
        # walkthrough). The newest's, where it differs, is shown beside it.
        deciding = next(
            (rec.versions[v] for v in (rec.active, rec.canary) if v is not None), latest
        )
        decides, observes = rec.governs()
        rows.append(
            {
                "policy": name,
                "owner": deciding.owner if deciding else None,
                "latest_owner": latest.owner if latest else None,
                "governs": sorted(decides),
                "observes": sorted(observes),
                "active": rec.active,
                "canary": rec.canary,
                "canary_percent": rec.canary_percent,
                "shadow": list(rec.shadows),
                "latest": rec.latest,
                "retired": rec.retired,
            }
        )
    return rows
