"""The ledger's topics, their partition counts and configs (DESIGN §4), and their creation.

Partition counts are deliberate:

- ``ledger.commands`` has one partition: governance commands are rare, and one partition gives
  the command processor a total order and makes it the single writer of every aggregate.
- ``ledger.policy-events`` and ``ledger.grant-events`` have one partition each, so the
  governance position of a decision is two offsets that anyone can replay up to.
- Evaluation requests, decisions and corrections have several partitions: evaluators scale by
  partitions and workers.
- ``ledger.chain-checkpoints`` has one partition: the heads of the evaluators' decision hash
  chains are few (one every second of activity per evaluator) and kept forever, like the
  decisions they vouch for.

Ledger topics keep data forever (``retention.ms=-1``); command topics are bounded (7 days). The
topics outsiders write (requests, commands) take the broker's time as each record's timestamp
(``message.timestamp.type=LogAppendTime``).

On an existing topic, ``create_topics`` repairs config drift and adds partitions where more are
declared (scaling out evaluators), but keeps the retention an operator set on a topic whose
retention is the operator's to choose (:data:`OPERATORS_RETENTION`: the requests, which the
README tells operators to bound); a single-partition topic whose order the ledger relies on
but that has more partitions is refused (:class:`~ledger.errors.TopicMismatch`): no
partition can be removed, so only recreating it under another prefix fixes that.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Final

from ledger.errors import KafkaUnavailable, TopicMismatch, UsageError
from ledger.kafka.clients import make_admin
from ledger.settings import KafkaSecurity, Settings

__all__ = [
    "TopicSpec",
    "COMMANDS_KEPT",
    "set_requests_retention",
    "topic_specs",
    "create_topics",
    "TopicReport",
    "EVALUATION_PARTITIONS",
    "OPERATORS_RETENTION",
    "config_drift",
]

EVALUATION_PARTITIONS: Final = 6
"""Partitions of the evaluation-request, decision and correction topics unless told otherwise:
how many evaluator workers can share the requests, and reply partitions the clients spread over."""

_FOREVER = {"retention.ms": "-1", "retention.bytes": "-1", "cleanup.policy": "delete"}
COMMANDS_KEPT: Final = timedelta(days=7)
"""How long the commands topic (and the command results) keep their records."""
_BOUNDED = {
    "retention.ms": str(int(COMMANDS_KEPT.total_seconds() * 1000)),
    "cleanup.policy": "delete",
}
OPERATORS_RETENTION: Final = ("retention.ms", "retention.bytes")
"""The configs an operator may set on a topic whose retention is theirs to choose
(:attr:`TopicSpec.operators_retention`), kept by ``create_topics``. Only the requests: the
governance topics are replayed whole by every processor, and the decisions, corrections, chain
checkpoints and dead letters are what an export and ``ledger audit verify`` hold complete (a
record a retention deleted reads as *missing*); their ``cleanup.policy`` is repaired too."""

_BROKER_TIME = {"message.timestamp.type": "LogAppendTime"}
"""For the topics outsiders write (agents' requests, actors' commands): each record's Kafka
timestamp is the broker's, not a sender's choice, so retention, reading from a time and an
export's date folders cannot be steered by a forged clock (``ledger/audit/writer.row_date``)."""

_INFLATED = {"compression.type": "uncompressed"}
"""For every topic: the broker stores each record uncompressed, whatever the sender compressed,
so the limit on a record's size (``max.message.bytes``) holds for what it inflates to, and no
reader meets a batch it cannot decompress. A 5 KB zstd record inflating to 150 MB (more than
librdkafka decompresses) stopped a request partition and the export for good, and an lz4 or
zstd record crashed the command processor's consumer (a red team); then, with the command
processor's credential, one 3.7 KB zstd batch of two such records on ``ledger.grant-events``
froze both processors' followers on it for good, while ``ps`` stayed green, and hung every
reader (a red team, round eight). The broker refuses such a record (``MSG_SIZE_TOO_LARGE``)
instead. The ledger's own writers send uncompressed: the broker has nothing to recompress."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TopicSpec:
    name: str
    partitions: int
    configs: Mapping[str, str] = field(default_factory=dict)
    purpose: str = ""
    ordered: bool = False  # one partition because the ledger relies on its total order
    operators_retention: bool = False  # an operator's OPERATORS_RETENTION on it is kept


@dataclass(frozen=True, slots=True, kw_only=True)
class TopicReport:
    name: str
    partitions: int
    action: str  # "created" | "exists" | "updated" (configs) | "expanded" (partitions added)
    configs: Mapping[str, str]  # as the topic has them now: the declared ones and ``kept``
    kept: Mapping[str, str] = field(default_factory=dict)
    """The operator's settings kept in place of declared ones (:data:`OPERATORS_RETENTION`)."""

    def kept_note(self) -> str | None:
        """One line saying what of the operator's was kept, for ``ledger up``/``topics create``."""
        if not self.kept:
            return None
        shown = ", ".join(f"{k}={v}" for k, v in sorted(self.kept.items()))
        return f"kept the operator's retention on {self.name}: {shown}"


def topic_specs(
    settings: Settings, *, evaluation_partitions: int = EVALUATION_PARTITIONS
) -> tuple[TopicSpec, ...]:
    """Every topic of the ledger with its partitions and configs."""
    t = settings.topics
    n = evaluation_partitions
    outsiders = t.sender_timed()

    def spec(
        name: str, partitions: int, base: Mapping[str, str], purpose: str, **flags: bool
    ) -> TopicSpec:
        configs = {**base, **_INFLATED, **(_BROKER_TIME if name in outsiders else {})}
        return TopicSpec(
            name=name, partitions=partitions, configs=configs, purpose=purpose, **flags
        )

    return (
        spec(t.commands, 1, _BOUNDED, "governance commands", ordered=True),
        spec(t.command_results, 1, _BOUNDED, "command answers"),
        spec(t.policy_events, 1, _FOREVER, "policy history", ordered=True),
        spec(t.grant_events, 1, _FOREVER, "authority history", ordered=True),
        spec(t.evaluation_requests, n, _FOREVER, "requests", operators_retention=True),
        spec(t.decisions, n, _FOREVER, "decision traces"),
        spec(t.corrections, n, _FOREVER, "async corrections"),
        spec(t.dead_letters, 1, _FOREVER, "undecodable input"),
        spec(t.chain_checkpoints, 1, _FOREVER, "decision chain heads"),
    )


def create_topics(
    bootstrap: str,
    specs: tuple[TopicSpec, ...],
    *,
    replication_factor: int | None = None,
    security: KafkaSecurity | None = None,
) -> list[TopicReport]:
    """Create missing topics and bring existing ones to the declared configs. Idempotent."""
    from kafka.admin import ConfigResource, ConfigResourceType, NewPartitions, NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    admin = make_admin(bootstrap, security=security)
    try:
        existing = set(admin.list_topics())
        brokers = len(admin.describe_cluster().get("brokers", [])) or 1
        rf = replication_factor or min(3, brokers)
        if rf > brokers:
            raise UsageError(
                f"replication factor {rf} needs {rf} brokers but the cluster at {bootstrap} has "
                f"{brokers}: pass --replication-factor {brokers} or fewer"
            )
        reports: list[TopicReport] = []
        missing = [s for s in specs if s.name not in existing]
        if missing:
            new = [
                NewTopic(
                    name=s.name,
                    num_partitions=s.partitions,
                    replication_factor=rf,
                    topic_configs=dict(s.configs),
                )
                for s in missing
            ]
            # Created concurrently by another `topics create`: fine.
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(new, timeout_ms=15000)
        settle = {s.name: s.partitions for s in missing}
        present = [s.name for s in specs if s not in missing]
        counts = {
            str(t.get("name") or t.get("topic")): len(t.get("partitions") or ())
            for t in (admin.describe_topics(present) if present else [])
        }
        for spec in specs:
            if spec in missing:
                reports.append(
                    TopicReport(
                        name=spec.name,
                        partitions=spec.partitions,
                        action="created",
                        configs=spec.configs,
                    )
                )
                continue
            partitions, expanded = counts.get(spec.name, spec.partitions), False
            if spec.ordered and partitions != spec.partitions:
                raise TopicMismatch(
                    f"topic {spec.name} has {partitions} partitions but the ledger relies on the "
                    f"order of exactly {spec.partitions}: use a fresh LEDGER_TOPIC_PREFIX "
                    "(partitions cannot be removed)"
                )
            if partitions < spec.partitions:
                admin.create_partitions({spec.name: NewPartitions(total_count=spec.partitions)})
                partitions, expanded = spec.partitions, True
                settle[spec.name] = spec.partitions
            resource = ConfigResource(ConfigResourceType.TOPIC, spec.name)
            current = _describe(admin, resource)
            drift, kept = config_drift(spec, current)
            if drift:
                admin.alter_configs(
                    [
                        ConfigResource(
                            ConfigResourceType.TOPIC, spec.name, configs={**current, **drift}
                        )
                    ]
                )
            action = "expanded" if expanded else "updated" if drift else "exists"
            reports.append(
                TopicReport(
                    name=spec.name,
                    partitions=partitions,
                    action=action,
                    configs={**spec.configs, **kept},
                    kept=kept,
                )
            )
        _await_metadata(admin, settle)
        return reports
    except KafkaError as exc:
        raise KafkaUnavailable(f"creating topics on {bootstrap} failed: {exc}") from exc
    finally:
        admin.close()


def config_drift(
    spec: TopicSpec, current: Mapping[str, str]
) -> tuple[dict[str, str], dict[str, str]]:
    """What of ``spec``'s configs an existing topic (its ``current`` topic-level configs) must be
    brought back to, and what of the operator's it keeps instead: on a topic whose retention is
    the operator's (:attr:`TopicSpec.operators_retention`), a retention set on the topic itself
    is theirs (a `ledger up` repaired it back to forever, silently: an operator's walkthrough);
    one not set there is brought to the declared one, since the broker's default (7 days)
    was nobody's choice."""
    drift, kept = {}, {}
    for key, value in spec.configs.items():
        have = current.get(key)
        if have == value:
            continue
        if spec.operators_retention and key in OPERATORS_RETENTION and have is not None:
            kept[key] = have
        else:
            drift[key] = value
    return drift, kept


def _await_metadata(admin: Any, expected: dict[str, int], timeout: float = 15.0) -> None:
    """Wait until the broker's metadata shows each created or grown topic with its partitions,
    each with a leader: the controller has committed the change, but the broker that answers
    clients applies it a moment later, and a client asking in between would see the topic
    missing or smaller (and, e.g., a second `topics create` would grow it again)."""
    from kafka.errors import UnknownTopicOrPartitionError

    waiting = dict(expected)
    deadline = time.monotonic() + timeout
    while waiting:
        try:
            described = admin.describe_topics(list(waiting))
        except UnknownTopicOrPartitionError:  # not in the broker's metadata yet
            described = []
        for topic in described:
            name = str(topic.get("name") or topic.get("topic"))
            parts = topic.get("partitions") or ()
            if (
                not topic.get("error_code")
                and len(parts) >= waiting.get(name, 0)
                and all(int(p.get("leader_id", p.get("leader", -1))) >= 0 for p in parts)
            ):
                waiting.pop(name, None)
        if not waiting:
            return
        if time.monotonic() > deadline:
            raise KafkaUnavailable(
                f"Kafka did not show {', '.join(sorted(waiting))} with their partitions within "
                f"{timeout:g} s of creating them: is the broker overloaded? run the command again"
            )
        time.sleep(0.1)


def _describe(admin: object, resource: object) -> dict[str, str]:
    """Config entries of one topic that are set on the topic itself (not broker defaults)."""
    result = admin.describe_configs([resource])  # type: ignore[attr-defined]  # kafka-python ships no type hints
    configs: dict[str, str] = {}
    for entries in result.get("topic", {}).values():
        for name, entry in entries.items():
            if (
                entry.get("config_source") == "DYNAMIC_TOPIC_CONFIG"
                and entry.get("value") is not None
            ):
                configs[str(name)] = str(entry["value"])
    return configs


def describe_topic_configs(
    bootstrap: str, names: list[str], *, security: KafkaSecurity | None = None
) -> dict[str, dict[str, str]]:
    """Current configs of the named topics (what an operator or a test checks a create
    against; ``ledger topics`` does not print them)."""
    from kafka.admin import ConfigResource, ConfigResourceType

    admin = make_admin(bootstrap, security=security)
    try:
        return {n: _describe(admin, ConfigResource(ConfigResourceType.TOPIC, n)) for n in names}
    finally:
        admin.close()


def set_requests_retention(
    bootstrap: str,
    topic: str,
    *,
    ms: int | None = None,
    size: int | None = None,
    security: KafkaSecurity | None = None,
) -> dict[str, str]:
    """Set the retention of the requests topic ``topic`` (``retention.ms``, ``retention.bytes``;
    -1: forever), the one topic whose retention is the operator's (:data:`OPERATORS_RETENTION`),
    keeping its other configs; its retention configs as they are after. Without either, only
    read them."""
    from kafka.admin import ConfigResource, ConfigResourceType

    wanted = {
        name: str(value)
        for name, value in (("retention.ms", ms), ("retention.bytes", size))
        if value is not None
    }
    admin = make_admin(bootstrap, security=security)
    try:
        resource = ConfigResource(ConfigResourceType.TOPIC, topic)
        current = _describe(admin, resource)
        if wanted:
            done = admin.alter_configs(
                [ConfigResource(ConfigResourceType.TOPIC, topic, configs={**current, **wanted})]
            )
            # kafka-python answers a refusal as a value, not an exception (a review: a refused
            # change printed the old retention as if it were set).
            for outcomes in (done or {}).values():
                for outcome in (outcomes or {}).values():
                    if outcome != "OK":  # kafka-python's word for success; else the error
                        raise UsageError(f"the broker refused the retention of {topic}: {outcome}")
            # The broker applies it a moment later: return once it reads back (a `topics
            # create` straight after would otherwise see, and keep, the old one).
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                current = _describe(admin, resource)
                if all(current.get(k) == v for k, v in wanted.items()):
                    break
                time.sleep(0.1)
        return {name: current.get(name, "-1") for name in OPERATORS_RETENTION}
    finally:
        admin.close()
