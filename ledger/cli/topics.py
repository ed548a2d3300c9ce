"""``ledger topics create``: the ledger's topics with explicit partitions and configs."""

from __future__ import annotations

import click

from ledger.cli.common import bootstrap_option, connection, load_settings
from ledger.cli.output import HelpfulGroup, handle_errors, json_option, print_json, print_table
from ledger.kafka.acls import ensure_acls
from ledger.kafka.clients import check_reachable
from ledger.kafka.topics import (
    EVALUATION_PARTITIONS,
    create_topics,
    set_requests_retention,
    topic_specs,
)

__all__ = ["group"]


@click.group("topics", cls=HelpfulGroup)
def group() -> None:
    """Manage the ledger's Kafka topics."""


@group.command("create")
@bootstrap_option
@click.option(
    "--partitions",
    type=click.IntRange(1, 1024),
    default=EVALUATION_PARTITIONS,
    show_default=True,
    help="Partitions of the evaluation-request, decision and correction topics.",
)
@click.option(
    "--replication-factor",
    type=click.IntRange(1, 16),
    default=None,
    help="Replicas per partition (default: min(3, brokers in the cluster)).",
)
@click.option(
    "--acls/--no-acls",
    default=False,
    help="Also grant the ledger's roles their ACLs on these topics (needs an admin credential).",
)
@json_option
@handle_errors
def create_cmd(
    bootstrap: str | None,
    partitions: int,
    replication_factor: int | None,
    acls: bool,
    as_json: bool,
) -> None:
    """Create every ledger topic, or bring existing ones to the declared configs (idempotent).

    Runs as the admin role. With --acls it also creates the ACLs of every role on them (the
    README's table; `ledger up` does this for the local broker)."""
    settings = load_settings(bootstrap)
    address, security = connection(settings, "admin")
    check_reachable(address)  # seconds, not the admin client's bootstrap timeout
    reports = create_topics(
        address,
        topic_specs(settings, evaluation_partitions=partitions),
        replication_factor=replication_factor,
        security=security,
    )
    if acls:
        ensure_acls(address, settings.topics, security=security)
    if as_json:
        print_json(
            [
                {
                    "name": r.name,
                    "partitions": r.partitions,
                    "action": r.action,
                    "configs": dict(r.configs),
                    "kept": dict(r.kept),
                }
                for r in reports
            ]
        )
    else:
        print_table(
            ["topic", "partitions", "retention.ms", "action"],
            [[r.name, r.partitions, r.configs.get("retention.ms"), r.action] for r in reports],
        )
    # What an operator must do next, on stderr (--json keeps stdout one document).
    for report in reports:
        note = report.kept_note()
        if note is not None:
            click.echo(note, err=True)
    if any(r.action == "expanded" for r in reports):
        click.echo(
            "partitions added: restart the processors (`ledger down --keep-broker && ledger up "
            "--evaluators N`), re-create SDK clients, and restart any `ledger export --follow` "
            "(it reads the partitions it saw when it started)",
            err=True,
        )
    fewer = sorted({r.partitions for r in reports if r.partitions > partitions})
    if fewer:
        click.echo(
            f"note: some topics keep more than {partitions} partitions ({', '.join(map(str, fewer))}"
            "): Kafka cannot take partitions away",
            err=True,
        )


_UNITS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def _duration_ms(value: str | None) -> int | None:
    """``7d``, ``12h``, ``30m``, ``90s``, ``500ms`` or ``forever`` as milliseconds (-1: forever)."""
    if value is None:
        return None
    if value.strip().lower() == "forever":
        return -1
    text = value.strip().lower()
    unit = "ms" if text.endswith("ms") else text[-1:]
    number = text[: len(text) - len(unit)].strip()
    if unit not in _UNITS or not number.isascii() or not number.isdigit() or len(number) > 12:
        raise click.BadParameter(
            f"{value!r}: give a number and a unit (7d, 12h, 30m, 90s) or forever"
        )
    ms = int(number) * _UNITS[unit]
    if not _SHORTEST_MS <= ms <= _LONGEST_MS:
        raise click.BadParameter(
            f"{value!r}: keep requests from 10 minutes (shorter would delete requests the "
            "evaluators have not read) to 100 years, or forever"
        )
    return ms


_SHORTEST_MS = 10 * 60_000
_LONGEST_MS = 100 * 365 * 86_400_000


@group.command("retention")
@bootstrap_option
@click.option(
    "--time",
    "keep_for",
    metavar="DURATION",
    default=None,
    help="How long agents' requests are kept: 7d, 12h, 30m, or forever.",
)
@click.option(
    "--bytes",
    "keep_bytes",
    type=click.IntRange(-1, None),
    default=None,
    help="How many bytes of requests each partition keeps (-1: no limit).",
)
@json_option
@handle_errors
def retention_cmd(
    bootstrap: str | None, keep_for: str | None, keep_bytes: int | None, as_json: bool
) -> None:
    """Show or set how long the agents' requests are kept (ledger.evaluation-requests: the one
    topic whose retention is yours; the others hold what the processors replay and an export
    verifies, so they keep everything). `ledger up` and `topics create` keep what you set here.
    A request deleted so is missing from later exports, and `replay --decision` of its decision
    exits 12. Runs as the admin role."""
    ms = _duration_ms(keep_for)
    settings = load_settings(bootstrap)
    address, security = connection(settings, "admin")
    check_reachable(address)
    topic = settings.topics.evaluation_requests
    now = set_requests_retention(address, topic, ms=ms, size=keep_bytes, security=security)
    if as_json:
        print_json({"topic": topic, **now})
    else:
        print_table(["topic", "retention.ms", "retention.bytes"], [[topic, *now.values()]])
