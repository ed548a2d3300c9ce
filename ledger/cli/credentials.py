"""``ledger credentials show ROLE``: a role's Kafka client settings for the local ledger."""

from __future__ import annotations

from typing import cast

import click

from ledger.cli.common import (
    bootstrap_option,
    load_settings,
    resolve_bootstrap,
)
from ledger.cli.output import HelpfulGroup, handle_errors, json_option, print_json, print_table
from ledger.discovery import resolve_security
from ledger.errors import KafkaUnavailable
from ledger.kafka.clients import kafka_python_config
from ledger.settings import ROLES, Role

__all__ = ["group"]


@click.group("credentials", cls=HelpfulGroup)
def group() -> None:
    """Kafka credentials of the ledger's roles.

    `ledger up` generates one SCRAM credential per role into $LEDGER_HOME/credentials/ (files
    0600): agent, governance, command-processor, evaluator, exporter, auditor, admin. Every
    `ledger` command, the SDK and the processors pick their role's automatically; against a
    real cluster they take $LEDGER_SECURITY_PROTOCOL, $LEDGER_SASL_* and $LEDGER_SSL_* instead.
    """


@group.command("show")
@click.argument("role", type=click.Choice(ROLES))
@bootstrap_option
@json_option
@handle_errors
def show_cmd(role: str, bootstrap: str | None, as_json: bool) -> None:
    """Print ROLE's client settings; --json: kafka-python keyword arguments
    (bootstrap_servers, security_protocol, sasl_mechanism, sasl_plain_username,
    sasl_plain_password), e.g. KafkaConsumer(**json.load(...))."""
    settings = load_settings(bootstrap)
    try:
        address: str | None = resolve_bootstrap(settings)
    except KafkaUnavailable:  # nothing is contacted here: say so, and show the credential
        address = None
        click.echo(
            "warning: no Kafka address (no local broker, no $LEDGER_BOOTSTRAP): bootstrap_servers "
            "is empty; run `ledger up` or set $LEDGER_BOOTSTRAP",
            err=True,
        )
    security = resolve_security(settings, cast(Role, role), bootstrap=address)
    if security.protocol == "PLAINTEXT":
        click.echo(
            f"warning: no credential for {role}: a plain connection, which a secured broker "
            "refuses (`ledger up` writes one per role; or set $LEDGER_SASL_USERNAME/"
            "$LEDGER_SASL_PASSWORD, or $LEDGER_CREDENTIALS)",
            err=True,
        )
    client = {"bootstrap_servers": address, **kafka_python_config(security)}
    if as_json:
        print_json(client)
    else:
        print_table(["setting", "value"], [[k, "-" if v is None else v] for k, v in client.items()])
