"""``ledger topics create``: the ledger's topics with explicit partitions and configs."""

from __future__ import annotations

import click

from ledger.cli.common import bootstrap_option, connection, load_settings
from ledger.cli.output import HelpfulGroup, handle_errors, json_option, print_json, print_table
from ledger.kafka.acls import ensure_acls
from ledger.kafka.clients import check_reachable
from ledger.kafka.topics import EVALUATION_PARTITIONS, create_topics, topic_specs

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
