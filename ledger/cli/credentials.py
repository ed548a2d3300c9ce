"""``ledger credentials show ROLE``: a role's Kafka client settings for the local ledger."""

from __future__ import annotations

from typing import cast

import click

from ledger.cli.common import bootstrap_option, connection, load_settings
from ledger.cli.output import handle_errors, json_option, print_json, print_table
from ledger.kafka.clients import kafka_python_config
from ledger.settings import ROLES, Role

__all__ = ["group"]


@click.group("credentials")
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
    address, security = connection(load_settings(bootstrap), cast(Role, role))
    settings = {"bootstrap_servers": address, **kafka_python_config(security)}
    if as_json:
        print_json(settings)
    else:
        print_table(["setting", "value"], [[k, v] for k, v in settings.items()])
