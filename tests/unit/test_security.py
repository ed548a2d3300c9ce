"""Security configuration without a broker: one KafkaSecurity mapped to every client library,
found the same way by every entry point; credentials and keys written private; the ACL table."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from ledger.discovery import resolve_security
from ledger.errors import SigningKeyMissing, UsageError
from ledger.files import write_private
from ledger.kafka.acls import PROCESSOR_GROUPS, acl_table
from ledger.kafka.clients import (
    UNUSED_GROUP,
    aiokafka_config,
    kafka_python_config,
    librdkafka_config,
)
from ledger.keys import KeyStore, public_bytes, sign
from ledger.settings import ROLES, KafkaSecurity, Settings, TopicNames

SCRAM = KafkaSecurity(
    protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-512", username="agent", password="pw"
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --------------------------------------------------------------------------- settings


def test_security_comes_from_the_environment_and_goes_back_to_it() -> None:
    env = {
        "LEDGER_SECURITY_PROTOCOL": "SASL_SSL",
        "LEDGER_SASL_USERNAME": "evaluator",
        "LEDGER_SASL_PASSWORD": "s3cret",
        "LEDGER_SSL_CAFILE": "/etc/kafka/ca.pem",
    }
    security = KafkaSecurity.from_env(env)
    assert security == KafkaSecurity(
        protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",  # the default mechanism
        username="evaluator",
        password="s3cret",
        ssl_cafile=Path("/etc/kafka/ca.pem"),
    )
    assert "s3cret" not in repr(security)
    settings = Settings.from_env(env)
    assert settings.security == security
    assert Settings.from_env(settings.to_env()).security == security
    assert KafkaSecurity.from_env({}) is None  # nothing configured: discover
    # The records an operator judged no release's reach the processors `ledger up` starts.
    skip = {"LEDGER_GOVERNANCE_SKIP": " ledger.policy-events/0@3, ,ledger.grant-events/1@7"}
    settings = Settings.from_env(skip)
    assert settings.governance_skip == {"ledger.policy-events/0@3", "ledger.grant-events/1@7"}
    assert Settings.from_env(settings.to_env()).governance_skip == settings.governance_skip


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"LEDGER_SECURITY_PROTOCOL": "SASL"}, "not one of"),
        ({"LEDGER_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "LEDGER_SASL_USERNAME": "u"}, "password"),
        (
            {
                "LEDGER_SASL_USERNAME": "u",
                "LEDGER_SASL_PASSWORD": "p",
                "LEDGER_SASL_MECHANISM": "MD5",
            },
            "MD5",
        ),
    ],
)
def test_bad_security_settings_are_one_usage_line(env: dict[str, str], problem: str) -> None:
    with pytest.raises(UsageError, match=problem):
        KafkaSecurity.from_env(env)


@pytest.mark.parametrize(
    ("env", "protocol"),
    [
        ({"LEDGER_SSL_CAFILE": "/ca.pem"}, "SSL"),
        ({"LEDGER_SSL_CERTFILE": "/c.pem", "LEDGER_SSL_KEYFILE": "/k.pem"}, "SSL"),
        ({"LEDGER_SASL_USERNAME": "u", "LEDGER_SASL_PASSWORD": "p"}, "SASL_PLAINTEXT"),
        (
            {"LEDGER_SASL_USERNAME": "u", "LEDGER_SASL_PASSWORD": "p", "LEDGER_SSL_CAFILE": "/c"},
            "SASL_SSL",
        ),
    ],
)
def test_without_a_protocol_it_follows_from_what_is_set(env: dict[str, str], protocol: str) -> None:
    # A TLS or SASL variable alone never means an unencrypted or anonymous connection.
    security = KafkaSecurity.from_env(env)
    assert security is not None and security.protocol == protocol


@pytest.mark.parametrize(
    "env",
    [
        {"LEDGER_SASL_MECHANISM": "PLAIN"},  # SASL without a user: says what is missing
        {"LEDGER_SECURITY_PROTOCOL": "PLAINTEXT", "LEDGER_SSL_CAFILE": "/ca.pem"},
        {
            "LEDGER_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "LEDGER_SSL_CAFILE": "/ca.pem",
            "LEDGER_SASL_USERNAME": "u",
            "LEDGER_SASL_PASSWORD": "p",
        },
        {"LEDGER_SECURITY_PROTOCOL": "SSL", "LEDGER_SASL_USERNAME": "u"},
        {"LEDGER_SECURITY_PROTOCOL": "PLAINTEXT", "LEDGER_SASL_PASSWORD": "p"},
    ],
)
def test_a_setting_the_protocol_would_ignore_is_refused(env: dict[str, str]) -> None:
    with pytest.raises(UsageError, match=r"username|does not use"):
        KafkaSecurity.from_env(env)


def test_one_security_maps_to_every_client_library() -> None:
    assert kafka_python_config(None) == kafka_python_config(KafkaSecurity()) == {}
    assert kafka_python_config(SCRAM) == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "agent",
        "sasl_plain_password": "pw",
    }
    assert aiokafka_config(SCRAM) == kafka_python_config(SCRAM)
    assert librdkafka_config(SCRAM) == {
        "security.protocol": "sasl_plaintext",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "agent",
        "sasl.password": "pw",
    }
    tls = KafkaSecurity(protocol="SSL", ssl_cafile=Path("/ca.pem"), ssl_certfile=Path("/c.pem"))
    assert kafka_python_config(tls) == {
        "security_protocol": "SSL",
        "ssl_cafile": "/ca.pem",
        "ssl_certfile": "/c.pem",
    }
    assert librdkafka_config(tls)["ssl.ca.location"] == "/ca.pem"


def test_faust_gets_the_same_credentials() -> None:
    import faust

    from processors.common import create_faust_app, faust_credentials

    assert faust_credentials(None) is None and faust_credentials(KafkaSecurity()) is None
    credentials = faust_credentials(SCRAM)
    assert isinstance(credentials, faust.SASLCredentials)
    assert (credentials.username, credentials.password) == ("agent", "pw")
    assert credentials.mechanism.value == "SCRAM-SHA-512"
    assert credentials.protocol.value == "SASL_PLAINTEXT"
    settings = Settings(home=Path("/nonexistent"), security=SCRAM)
    app = create_faust_app(settings, app_id="x", bootstrap="127.0.0.1:9")
    assert app.conf.broker_credentials is not None


# --------------------------------------------------------------------------- discovery


def _local_broker(home: Path, *, secured: bool) -> None:
    record = {
        "pid": 1,
        "port": 9092,
        "security_protocol": "SASL_PLAINTEXT" if secured else "PLAINTEXT",
    }
    write_private(home / "broker" / "broker.json", json.dumps(record))


def test_each_role_finds_its_own_local_credential(tmp_path: Path) -> None:
    from ledger.local.credentials import ensure

    settings = Settings(home=tmp_path)
    users = ensure(settings)
    _local_broker(tmp_path, secured=True)
    for role in ROLES:
        found = resolve_security(settings, role)
        assert found == users[role] and found.username == role
    # Also when the local broker's address is given explicitly; not for another cluster.
    assert resolve_security(settings, "agent", bootstrap="127.0.0.1:9092") == users["agent"]
    # localhost names the same broker (an operator's walkthrough: it connected without one).
    assert resolve_security(settings, "agent", bootstrap="localhost:9092") == users["agent"]
    assert resolve_security(settings, "agent", bootstrap="kafka:9092") == KafkaSecurity()
    _local_broker(tmp_path, secured=False)  # started --insecure: no credential
    assert resolve_security(settings, "agent") == KafkaSecurity()


def test_configured_security_and_credential_directories_win(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, security=SCRAM)
    assert resolve_security(settings, "admin") is SCRAM
    directory = tmp_path / "given"
    write_private(directory / "auditor.json", json.dumps(kafka_python_config(SCRAM)))
    given = Settings(home=tmp_path, credentials_dir=directory)
    assert resolve_security(given, "auditor") == SCRAM
    with pytest.raises(UsageError, match="no evaluator credential in"):
        resolve_security(given, "evaluator")


def test_a_secured_local_broker_without_the_roles_credential_says_what_to_do(
    tmp_path: Path,
) -> None:
    _local_broker(tmp_path, secured=True)
    with pytest.raises(UsageError, match="ledger up"):
        resolve_security(Settings(home=tmp_path), "agent")


def test_a_garbled_credential_file_is_one_line_not_an_anonymous_connection(tmp_path: Path) -> None:
    _local_broker(tmp_path, secured=True)
    write_private(tmp_path / "credentials" / "agent.json", "{not json")
    with pytest.raises(UsageError, match="cannot read the agent credential"):
        resolve_security(Settings(home=tmp_path), "agent")


def test_a_credential_file_reads_like_the_variables(tmp_path: Path) -> None:
    # A hand-written file with a username and a password but no security_protocol was read
    # as PLAINTEXT and refused with advice about $LEDGER_SECURITY_PROTOCOL; the variables
    # infer the protocol from what is set, and so does the file now.
    directory = tmp_path / "given"
    given = Settings(home=tmp_path, credentials_dir=directory)
    write_private(
        directory / "agent.json",
        json.dumps({"sasl_plain_username": "agent", "sasl_plain_password": "pw"}),
    )
    assert resolve_security(given, "agent") == KafkaSecurity(
        protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-512", username="agent", password="pw"
    )
    # What the protocol would ignore is still refused, naming the file.
    write_private(
        directory / "agent.json",
        json.dumps({"security_protocol": "PLAINTEXT", "sasl_plain_username": "agent"}),
    )
    with pytest.raises(UsageError, match=r"the agent credential .*agent\.json: PLAINTEXT does not"):
        resolve_security(given, "agent")
    # A README check: a missing password was told to set the variables, not the file's key,
    # and a misspelt key was ignored.
    write_private(
        directory / "agent.json",
        json.dumps({"sasl_plain_username": "agent", "sasl_plain_pasword": "pw"}),
    )
    with pytest.raises(UsageError) as refused:
        resolve_security(given, "agent")
    assert "unknown key 'sasl_plain_pasword'" in str(refused.value)
    write_private(directory / "agent.json", json.dumps({"sasl_plain_username": "agent"}))
    with pytest.raises(UsageError) as refused:
        resolve_security(given, "agent")
    assert "(set sasl_plain_username and sasl_plain_password)" in str(refused.value), refused.value
    # What `ledger credentials show agent --json` prints is a credential file.
    shown = {"bootstrap_servers": "127.0.0.1:9092", **kafka_python_config(KafkaSecurity(
        protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-512", username="agent", password="pw"
    ))}  # fmt: skip
    write_private(directory / "agent.json", json.dumps(shown))
    assert resolve_security(given, "agent").password == "pw"


@pytest.mark.parametrize("planted", ["/dev/zero", "fifo", "large"])
def test_a_credential_file_that_is_not_a_small_file_is_refused_at_once(
    tmp_path: Path, planted: str
) -> None:
    # /dev/zero in its place grew the process to gigabytes; a FIFO hung every command.
    directory = tmp_path / "given"
    directory.mkdir()
    path = directory / "agent.json"
    if planted == "fifo":
        os.mkfifo(path)
    elif planted == "large":
        path.write_text(json.dumps({"sasl_plain_password": "x" * 100_000}))
    else:
        path.symlink_to(planted)
    given = Settings(home=tmp_path, credentials_dir=directory)
    with pytest.raises(UsageError, match=r"not a regular file|larger than 65,536 bytes"):
        resolve_security(given, "agent")


def test_a_credential_file_others_may_write_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A red team: another local user, able to write (not read) credentials/evaluator.json,
    # planted a password; the next `ledger up` gave it to the broker and restarted the
    # evaluators on it, and the attacker wrote decisions as the evaluator.
    directory = tmp_path / "given"
    given = Settings(home=tmp_path, credentials_dir=directory)
    write_private(
        directory / "agent.json",
        json.dumps({"sasl_plain_username": "agent", "sasl_plain_password": "pw"}),
    )
    assert resolve_security(given, "agent") is not None
    for loose in (0o620, 0o602):
        (directory / "agent.json").chmod(loose)
        with pytest.raises(
            UsageError, match=rf"may be written by others \(mode 0{loose:o}\).*chmod go-w"
        ):
            resolve_security(given, "agent")
    (directory / "agent.json").chmod(0o644)  # a secret mount: read by others, written by none
    with caplog.at_level("WARNING", logger="ledger.discovery"):
        assert resolve_security(given, "agent") is not None
        assert resolve_security(given, "agent") is not None
    # An operator's walkthrough: accepted without a word, where a signing key gets a warning.
    warned = [r.getMessage() for r in caplog.records if "may be read by others" in r.getMessage()]
    assert len(warned) == 1 and "chmod 600" in warned[0] and "agent role" in warned[0]


def test_a_trusted_file_reached_through_a_link_is_judged_where_it_lies(tmp_path: Path) -> None:
    # A red team: a credential (or a trust anchor's .pub) linked into a folder others may write
    # was used silently, since only the link's own folder was checked.
    directory = tmp_path / "given"
    given = Settings(home=tmp_path, credentials_dir=directory)
    shared = tmp_path / "shared"
    write_private(
        shared / "agent.json",
        json.dumps({"sasl_plain_username": "agent", "sasl_plain_password": "pw"}),
    )
    directory.mkdir(mode=0o700)
    (directory / "agent.json").symlink_to(shared / "agent.json")
    assert resolve_security(given, "agent") is not None
    shared.chmod(0o777)  # others may swap the file the link names
    with pytest.raises(UsageError, match=rf"{shared} may be written by others \(mode 0777\)"):
        resolve_security(given, "agent")
    store = KeyStore(tmp_path / "keys")
    key = store.create("human:admin")
    pub = store.public_path("human:admin")
    (shared / "admin.pub").write_bytes(pub.read_bytes())
    pub.unlink()
    pub.symlink_to(shared / "admin.pub")
    with pytest.raises(UsageError, match=rf"{shared} may be written by others"):
        store.public_key("human:admin")
    shared.chmod(0o700)
    (shared / "admin.pub").chmod(0o644)
    assert store.public_key("human:admin") == public_bytes(key)


def test_a_trust_anchor_others_may_replace_is_refused(tmp_path: Path) -> None:
    # A red team: an administrator's .pub that others could write was replaced; the command
    # processor's next start registered the attacker's key as a trust anchor.
    store = KeyStore(tmp_path / "keys")
    key = store.create("human:admin")
    pub = store.public_path("human:admin")
    pub.chmod(0o646)
    with pytest.raises(UsageError, match=r"human:admin.pub may be written by others .*chmod go-w"):
        store.public_key("human:admin")
    pub.chmod(0o644)
    assert store.public_key("human:admin") == public_bytes(key)
    store.path.chmod(0o777)  # a folder others may write: they could swap the file
    with pytest.raises(UsageError, match=r"keys may be written by others"):
        store.public_key("human:admin")
    store.path.chmod(0o1777)  # sticky too (a review): others may create what is missing
    with pytest.raises(UsageError, match=r"keys may be written by others"):
        store.public_key("human:admin")
    store.path.chmod(0o700)
    assert store.public_key("human:admin") == public_bytes(key)
    # Owned by another user (planted where it was missing): refused whatever its mode.
    if os.getuid() == 0:  # only root can give a file away
        os.chown(pub, 65534, 65534)
        with pytest.raises(UsageError, match=r"is owned by another user \(uid 65534\)"):
            store.public_key("human:admin")


# --------------------------------------------------------------------------- private files


def test_credentials_are_generated_once_private_and_distinct(tmp_path: Path) -> None:
    from ledger.local.credentials import USERS, ensure

    old = os.umask(0o022)  # a permissive umask: modes are explicit anyway
    try:
        first = ensure(Settings(home=tmp_path))
    finally:
        os.umask(old)
    assert set(first) == set(USERS)
    assert len({s.password for s in first.values()}) == len(USERS)
    assert mode(tmp_path / "credentials") == 0o700
    assert all(mode(p) == 0o600 for p in (tmp_path / "credentials").iterdir())
    assert ensure(Settings(home=tmp_path)) == first  # never regenerated


def test_keys_are_private_never_overwritten_and_missing_ones_say_what_to_do(
    tmp_path: Path,
) -> None:
    store = KeyStore(tmp_path / "keys")
    old = os.umask(0o022)
    try:
        key = store.create("human:alice")
    finally:
        os.umask(old)
    assert mode(store.path) == 0o700
    assert mode(store.private_path("human:alice")) == 0o600
    assert store.public_key("human:alice") == public_bytes(key)
    assert store.actors() == ["human:alice"]
    with pytest.raises(UsageError, match="already has a key"):
        store.create("human:alice")
    with pytest.raises(SigningKeyMissing, match="ledger actor keygen human:bob") as missing:
        store.private_key("human:bob")
    assert (missing.value.code, missing.value.exit_code) == ("no_signing_key", 2)
    # The bootstrap administrator's key is `ledger up`'s to make: before it ran, keygen and a
    # registration by an administrator (who has no key yet either) was no way forward.
    with pytest.raises(SigningKeyMissing, match="`ledger up` makes the bootstrap administrator"):
        store.private_key("human:admin")


def test_the_local_stack_runs_with_a_private_umask(tmp_path: Path) -> None:
    from ledger.files import private_umask

    old = os.umask(0o022)
    try:
        private_umask()
        (tmp_path / "segment").write_text("facts")
        (tmp_path / "dir").mkdir()
    finally:
        os.umask(old)
    assert mode(tmp_path / "segment") == 0o600 and mode(tmp_path / "dir") == 0o700


# --------------------------------------------------------------------------- ACLs


def test_the_acl_table_grants_reads_writes_and_describes_only() -> None:
    table = acl_table(TopicNames(prefix="p."))
    assert {p.operation for p in table} == {"READ", "WRITE", "DESCRIBE"}  # no DELETE, ALTER…
    assert "admin" not in {p.role for p in table}  # a super user of the broker
    writes = {(p.role, p.name) for p in table if p.operation == "WRITE"}
    assert ("agent", "p.ledger.decisions") not in writes
    assert {r for r, t in writes if t == "p.ledger.decisions"} == {"evaluator"}
    assert {r for r, t in writes if t == "p.ledger.grant-events"} == {"command-processor"}
    # The decision hash chains' checkpoints: the evaluators write them, auditors read them.
    assert {r for r, t in writes if t == "p.ledger.chain-checkpoints"} == {"evaluator"}
    reads = {(p.role, p.name) for p in table if p.operation == "READ"}
    assert {r for r, t in reads if t == "p.ledger.chain-checkpoints"} == {"exporter", "auditor"}
    # A review: the evaluator's read at each assignment reads the corrections beside the
    # decisions; without READ on them, every partition after a crash stayed paused for good.
    assert {("evaluator", "p.ledger.decisions"), ("evaluator", "p.ledger.corrections")} <= reads
    # All under the deployment's prefix but the group assign-only readers name and never join,
    # which every role may only describe (librdkafka asks for its coordinator).
    assert all(p.name.startswith("p.") for p in table if p.name != UNUSED_GROUP)
    assert {p.operation for p in table if p.name == UNUSED_GROUP} == {"DESCRIBE"}


def test_processor_groups_are_the_faust_app_ids() -> None:
    from processors import command_processor, evaluator

    assert PROCESSOR_GROUPS["command-processor"] == command_processor.APP_ID
    assert PROCESSOR_GROUPS["evaluator"] == evaluator.APP_ID


def _admin_grant() -> Any:
    """An unsigned IssueGrant by human:admin, for the SDK to sign."""
    from ledger.core.events import IssueGrant
    from ledger.ids import new_id, utcnow

    return IssueGrant(
        event_id=new_id(),
        occurred_at=utcnow(),
        actor="human:admin",
        grant_id="g1",
        principal="agent:bot",
        actions=("a",),
        resource="*",
    )


@pytest.mark.parametrize("as_text", [False, True], ids=["path", "text"])
def test_the_sdk_signs_governance_commands_with_its_key(tmp_path: Path, as_text: bool) -> None:
    from ledger.client import ClientConfig, LedgerClient
    from ledger.core.signing import key_id_of, signed_bytes, verify_signature
    from ledger.testing import LocalLedger

    sent: list[Any] = []

    class Recording(LocalLedger):  # the in-memory ledger, keeping what it was sent
        def send(self, message: Any) -> Any:
            sent.append(message)
            return super().send(message)

    store = KeyStore(tmp_path)
    key = store.create("human:admin")
    ledger = Recording()
    path = store.private_path("human:admin")
    client = LedgerClient(
        ClientConfig(actor="human:admin", signing_key=str(path) if as_text else path),
        transport=ledger,
    )
    command = _admin_grant()
    client.submit_command(command)
    (signed,) = sent  # LocalLedger takes unsigned commands too: the client signed this one
    assert signed.key_id == key_id_of(public_bytes(key))
    assert signed.signature is not None
    assert verify_signature(public_bytes(key), signed.signature, signed_bytes(signed))
    assert sign(command, key) == signed  # Ed25519 is deterministic


def test_a_signing_key_of_another_kind_is_one_usage_error() -> None:
    from ledger.client import ClientConfig, LedgerClient
    from ledger.testing import LocalLedger

    client = LedgerClient(
        ClientConfig(actor="human:admin", signing_key=b"not a key"),  # type: ignore[arg-type]
        transport=LocalLedger(),
    )
    command = _admin_grant()
    with pytest.raises(UsageError, match="signing_key is a bytes"):
        client.submit_command(command)


def test_a_failed_kafka_python_constructor_leaves_no_client_open() -> None:
    """kafka-python abandons the network client of a constructor that fails (a refused
    authentication): its wake-up socket pair stayed open until some later garbage collection,
    which then failed an unrelated test. ``_client`` closes it from the failed frame."""
    from kafka.errors import KafkaError

    from ledger.kafka.clients import close_abandoned

    closed: list[str] = []

    class NetworkClient:  # stands for kafka-python's, by its module
        def close(self) -> None:
            closed.append("client")

    NetworkClient.__module__ = "kafka.net.compat"

    class Unrelated:
        def close(self) -> None:
            closed.append("unrelated")

    def constructor() -> None:
        client = NetworkClient()  # noqa: F841 - found in the frame
        raise KafkaError("authentication failed")

    def caller() -> None:
        client = Unrelated()  # noqa: F841 - not kafka-python's: left alone
        constructor()

    with pytest.raises(KafkaError) as raised:
        caller()
    close_abandoned(raised.value)
    assert closed == ["client"]


def test_a_signing_key_others_may_write_is_refused_and_one_they_may_read_warned_of(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = KeyStore(tmp_path / "keys")
    store.create("human:alice")
    path = store.private_path("human:alice")
    path.chmod(0o620)
    with pytest.raises(UsageError, match=r"may be written by others \(mode 0620\).*chmod 600"):
        store.private_key("human:alice")
    # Readable by others: a Kubernetes secret mounts 0644, or 0440 with an fsGroup; honest
    # deployments need it, so it is a warning (once per file), not a refusal.
    path.chmod(0o440)
    with caplog.at_level("WARNING", logger="ledger.keys"):
        store.private_key("human:alice")
        store.private_key("human:alice")
    warned = [r.getMessage() for r in caplog.records if "may be read by others" in r.getMessage()]
    assert len(warned) == 1 and "(mode 0440)" in warned[0]
    path.chmod(0o600)
    # A red team: a key store another user owns ($LEDGER_KEYS) was used without a word.
    if os.getuid() == 0:
        os.chown(path, 65534, 65534)
        with pytest.raises(UsageError, match=r"is owned by another user \(uid 65534\)"):
            store.private_key("human:alice")
        os.chown(path, 0, 0)
    else:  # this user's file, said by its status to be another's
        from ledger import keys

        real = keys.read_bounded_stat
        monkeypatch.setattr(
            keys, "read_bounded_stat",
            lambda *a, **k: (lambda d, st: (d, os.stat_result((*st[:4], os.getuid() + 1, *st[5:]))))(*real(*a, **k)),
        )  # fmt: skip
        with pytest.raises(UsageError, match="is owned by another user"):
            store.private_key("human:alice")
        monkeypatch.undo()
    store.private_key("human:alice")
    path.unlink()
    path.symlink_to("/dev/zero")
    with pytest.raises(UsageError, match="is not a regular file"):
        store.private_key("human:alice")


def test_credentials_show_needs_no_kafka_and_says_what_is_missing(tmp_path: Path) -> None:
    # With no Kafka address it exited 7 although it contacts nothing; with no credential it
    # printed a plain connection without a word.
    from click.testing import CliRunner

    from ledger.cli.app import cli

    env = {"LEDGER_HOME": str(tmp_path), "LEDGER_BOOTSTRAP": None, "LEDGER_CREDENTIALS": None}
    env.update({k: None for k in os.environ if k.startswith(("LEDGER_SASL", "LEDGER_SSL"))})
    env["LEDGER_SECURITY_PROTOCOL"] = None
    result = CliRunner().invoke(cli, ["credentials", "show", "agent", "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"bootstrap_servers": None}
    warnings = result.stderr.strip().splitlines()
    assert len(warnings) == 2 and "no Kafka address" in warnings[0]
    assert "no credential for agent" in warnings[1]
    env["LEDGER_BOOTSTRAP"] = "127.0.0.1:1"
    env["LEDGER_SASL_USERNAME"], env["LEDGER_SASL_PASSWORD"] = "agent", "pw"
    result = CliRunner().invoke(cli, ["credentials", "show", "agent", "--json"], env=env)
    assert result.exit_code == 0 and result.stderr == "", result.output
    shown = json.loads(result.stdout)
    assert shown["bootstrap_servers"] == "127.0.0.1:1" and shown["sasl_plain_username"] == "agent"


def test_actor_verify_notes_an_administrator_with_a_second_trust_anchor() -> None:
    from types import SimpleNamespace

    from ledger.cli.actors import _anchor_notes

    # An anchor's verdict names no signing key (an operator saw "(None, None)"): the note
    # names the keys the anchoring events register.
    def entry(principal: str, key: str) -> Any:
        return SimpleNamespace(event=SimpleNamespace(principal=principal, actor_key_id=key))

    def verdict(key: str | None, anchor: bool) -> Any:
        return SimpleNamespace(key_id=key, anchor=anchor)

    history = [entry("human:admin", "k1"), entry("human:alice", "k2"), entry("human:admin", "k3")]
    assert _anchor_notes(history[:2], [verdict(None, True), verdict("k9", False)]) == []
    [note] = _anchor_notes(
        history, [verdict(None, True), verdict("k9", False), verdict(None, True)]
    )
    assert note.startswith("human:admin has 2 trust anchor keys (k1, k3)")
    assert "someone replaced its .pub" in note


def test_actor_verify_notes_a_trust_anchor_of_someone_not_configured_as_administrator() -> None:
    # A red team with the command processor's credential wrote an ActorKeyRegistered anchoring
    # human:mallory's key; verify took mallory for an administrator and proved what it signed,
    # without a word.
    from types import SimpleNamespace

    from ledger.cli.actors import _anchor_notes

    def entry(principal: str, key: str) -> Any:
        return SimpleNamespace(event=SimpleNamespace(principal=principal, actor_key_id=key))

    anchor = SimpleNamespace(key_id=None, anchor=True)
    history = [entry("human:admin", "k1"), entry("human:mallory", "k2")]
    assert _anchor_notes(history[:1], [anchor], frozenset({"human:admin"})) == []
    [note] = _anchor_notes(history, [anchor, anchor], frozenset({"human:admin"}))
    assert note.startswith("human:mallory has a trust anchor")
    assert "not in $LEDGER_ADMINS here" in note and "command processor's credential" in note


def test_keygen_says_how_the_administrator_registers_the_key(tmp_path: Path) -> None:
    # An operator followed keygen's hint literally: `--public-key human:zed.pub` was "no such
    # public key file" anywhere but in the key store itself.
    from click.testing import CliRunner

    from ledger.cli.app import cli

    env = {"LEDGER_HOME": str(tmp_path / "home"), "LEDGER_KEYS": str(tmp_path / "keys")}
    result = CliRunner().invoke(cli, ["actor", "keygen", "human:zed"], env=env)
    assert result.exit_code == 0, result.output
    public = tmp_path / "keys" / "human:zed.pub"
    said = " ".join(result.stdout.split())
    assert "send that file to an administrator" in said
    assert "`ledger actor add human:zed --public-key PATH --by ADMIN`" in said
    assert f"(here: {public})" in said and public.exists()


def test_a_password_written_anew_is_said_to_need_its_clients_restarted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An operator's walkthrough: after a new agent password, `ledger up` said only "adding SCRAM
    # credentials for agent…"; the running agents kept working until the broker's next restart
    # four minutes later, then every call timed out.
    from ledger.local import broker, credentials

    settings = Settings(home=tmp_path)

    def scram(password: str) -> KafkaSecurity:
        return KafkaSecurity(
            protocol="SASL_PLAINTEXT",
            sasl_mechanism="SCRAM-SHA-512",
            username="agent",
            password=password,
        )

    admin = KafkaSecurity(
        protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-512", username="admin", password="a"
    )
    monkeypatch.setattr(credentials, "register", lambda *a, **k: None)
    said: list[str] = []
    broker._register_missing(
        settings, "x:1", {"broker": admin, "admin": admin, "agent": scram("old")}, said.append
    )
    assert not any("new password" in line for line in said)  # new users: nothing to restart
    said.clear()
    broker._register_missing(
        settings, "x:1", {"broker": admin, "admin": admin, "agent": scram("new")}, said.append
    )
    assert said[0] == "adding SCRAM credentials for agent…"
    assert said[1].startswith("the agent credential has a new password: clients still connected")
    assert said[1].endswith(f"restart them now with {tmp_path / 'credentials' / 'agent.json'}")
    said.clear()
    broker._register_missing(
        settings, "x:1", {"broker": admin, "admin": admin, "agent": scram("new")}, said.append
    )
    assert said == []  # known with this password: nothing to add or say
    # A README check: "restart them now" was said of the processors too, which `up` restarts.
    ev = dataclasses.replace(scram("e1"), username="evaluator")
    broker._register_missing(
        settings, "x:1", {"broker": admin, "admin": admin, "evaluator": ev}, said.append
    )
    said.clear()
    ev = dataclasses.replace(ev, password="e2")
    broker._register_missing(
        settings, "x:1", {"broker": admin, "admin": admin, "evaluator": ev}, said.append
    )
    assert said[1].endswith("(`ledger up` restarts this home's processors that use it)"), said


def test_actor_verify_notes_trust_anchor_keys_that_are_not_the_key_stores(tmp_path: Path) -> None:
    # A red team wrote a second anchor for human:admin (its own key) into the log: verify
    # said only that rotating adds one, "or someone replaced its .pub", which no one had.
    from types import SimpleNamespace

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from ledger.cli.actors import _anchor_notes
    from ledger.core.signing import key_id_of
    from ledger.keys import KeyStore, public_bytes

    store = KeyStore(tmp_path / "keys")
    store.create("human:admin")
    configured = store.public_key("human:admin")
    assert configured is not None
    planted = key_id_of(public_bytes(Ed25519PrivateKey.generate()))

    def entry(key: str) -> Any:
        return SimpleNamespace(event=SimpleNamespace(principal="human:admin", actor_key_id=key))

    anchor = SimpleNamespace(key_id=None, anchor=True)
    history = [entry(key_id_of(configured)), entry(planted)]
    notes = _anchor_notes(history, [anchor, anchor], frozenset({"human:admin"}), tmp_path / "keys")
    assert any(
        f"human:admin's trust anchor keys {planted} are not its .pub in" in n for n in notes
    ), notes
    [alone] = _anchor_notes(history[1:], [anchor], frozenset({"human:admin"}), tmp_path / "keys")
    assert alone.startswith("none of human:admin's trust anchor keys is its .pub in")


def test_the_key_store_lock_makes_a_second_writer_wait(tmp_path: Path) -> None:
    # A review: a refused `actor add` removed the key pair a concurrent `actor add` had just
    # registered; `actor add` now holds the store until its answer, and a second one waits.
    import threading

    store = KeyStore(tmp_path / "keys")
    order: list[str] = []
    held, release = threading.Event(), threading.Event()

    def first() -> None:
        with store.locked():
            order.append("first in")
            held.set()
            release.wait(10)
            order.append("first out")

    def second() -> None:
        with store.locked(lambda: order.append("second waits")):  # and says so
            order.append("second in")

    one = threading.Thread(target=first)
    one.start()
    assert held.wait(10)
    two = threading.Thread(target=second)
    two.start()
    two.join(0.3)
    assert order == ["first in", "second waits"]  # waiting for the first
    release.set()
    one.join(10)
    two.join(10)
    assert order == ["first in", "second waits", "first out", "second in"]
    assert store.actors() == []  # the lock file is no actor's key


def test_keygen_says_it_waits_while_another_writer_holds_the_key_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A review: `actor keygen` waited silently while an `actor add` held the store.
    import threading

    from click.testing import CliRunner

    from ledger.cli import actors
    from ledger.cli.app import cli

    store = KeyStore(tmp_path / "keys")
    said_it = threading.Event()
    say = actors._say_waiting

    def saying() -> None:
        say()
        said_it.set()

    monkeypatch.setattr(actors, "_say_waiting", saying)
    env = {"LEDGER_HOME": str(tmp_path / "home"), "LEDGER_KEYS": str(tmp_path / "keys")}
    results: list[Any] = []
    with store.locked():
        run = threading.Thread(
            target=lambda: results.append(
                CliRunner().invoke(cli, ["actor", "keygen", "human:zed"], env=env)
            )
        )
        run.start()
        assert said_it.wait(10)
        assert not store.has_private("human:zed")  # nothing made while the other holds it
    run.join(10)
    [result] = results
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith(
        "another `ledger actor add` or `actor keygen` holds the key store; waiting for it…\n"
    )
    assert store.has_private("human:zed")
