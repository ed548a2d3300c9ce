"""The isolated stack the Kafka benchmarks run on, and what they share.

:func:`bench_stack` gives each benchmark a ledger of its own: the local broker started under a
temporary ``LEDGER_HOME`` (the jar cache is reused from ``Settings.from_env().cache``) unless
``--bootstrap`` names a running one, the topics under a unique prefix, and the processors as
real worker processes (:func:`ledger.stack.start_processor`). Everything it started is stopped
on the way out, also on Ctrl-C, SIGTERM or an error.

:func:`bootstrap_governance` sets up the authority and the refund policy through the command
processor, as an operator would: ``human:admin`` (a bootstrap admin) grants ``human:alice`` the
policy commands and ``agent:refund-bot`` ``refund.*``; alice proposes, admin approves (the
approver must differ from the author) and promotes.

Security is on, as in ``ledger up``: the private broker authenticates every client and enforces
the ledger's ACLs, and each client (processors, the SDK, the load generators) uses its role's
credential. ``--insecure`` runs the same benchmark on a broker without either, to measure what
authentication costs. With ``--bootstrap``, credentials come from ``$LEDGER_SECURITY_PROTOCOL``,
``$LEDGER_SASL_*`` or ``$LEDGER_CREDENTIALS``, as for any ledger command.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from ledger.client import ClientConfig, LedgerClient
from ledger.core.events import (
    ApprovePolicyVersion,
    CommandAccepted,
    DecisionRecorded,
    EvaluationRequested,
    IssueGrant,
    PromotePolicyVersion,
    ProposePolicyVersion,
    RegisterActorKey,
    Stage,
    Value,
)
from ledger.core.policy import parse_policy
from ledger.core.signing import key_id_of
from ledger.discovery import resolve_security
from ledger.ids import new_id, utcnow
from ledger.kafka.acls import ensure_acls
from ledger.kafka.topics import EVALUATION_PARTITIONS, create_topics, topic_specs
from ledger.keys import KeyStore, public_bytes, sign
from ledger.local import broker
from ledger.local.stack import (
    PROCESSORS,
    ensure_admin_keys,
    processes,
    start_processor,
    stop_processor,
)
from ledger.settings import KafkaSecurity, Role, Settings, TopicNames

__all__ = [
    "ADMIN",
    "ALICE",
    "AGENT",
    "POLICIES",
    "BenchStack",
    "CpuMeter",
    "add_stack_arguments",
    "bench_stack",
    "bootstrap_governance",
    "deploy",
    "load_average",
    "median",
    "percentile",
    "promote",
    "request_facts",
    "make_request",
    "wait_for_version",
]

ADMIN = "human:admin"
ALICE = "human:alice"
AGENT = "agent:refund-bot"
POLICIES = Path(__file__).resolve().parent.parent / "examples" / "policies"

Progress = Callable[[str], None]


def _say(message: str) -> None:
    print(f"  · {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True, slots=True)
class BenchStack:
    bootstrap: str
    settings: Settings
    started_broker: bool

    @property
    def topics(self) -> TopicNames:
        return self.settings.topics

    def security(self, role: Role) -> KafkaSecurity:
        """``role``'s credential for this stack's broker."""
        return resolve_security(self.settings, role, bootstrap=self.bootstrap)

    def client(
        self, actor: str = AGENT, *, timeout: float = 10.0, role: Role | None = None
    ) -> LedgerClient:
        role = role or ("governance" if actor.startswith("human:") else "agent")
        keys = KeyStore(self.settings.keys)
        return LedgerClient(
            ClientConfig(
                bootstrap=self.bootstrap,
                topics=self.topics,
                actor=actor,
                timeout=timeout,
                security=self.security(role),
                role=role,
                signing_key=keys.private_path(actor) if keys.has_private(actor) else None,
            )
        )

    def start(self, name: str) -> int:
        return start_processor(self.settings, name, bootstrap=self.bootstrap, timeout=90)

    def stop(self, name: str) -> bool:
        return stop_processor(self.settings, name)

    def log(self, name: str) -> Path:
        return self.settings.home / "logs" / f"{name}.log"

    def pids(self) -> dict[str, int]:
        """Pids of the running processors, and of the broker if this stack started it."""
        found = {p.name: p.pid for p in processes(self.settings) if p.pid is not None}
        state = self.settings.home / "broker" / "broker.json"
        if self.started_broker and state.exists():
            found["broker"] = int(json.loads(state.read_text()).get("pid") or 0)
        return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds used by a set of processes (and this one) between two calls of ``mark``."""

    def __init__(self, pids: dict[str, int]) -> None:
        self._pids = dict(pids)
        self._start = self._now()

    def _now(self) -> dict[str, float]:
        now = {name: cpu_seconds(pid) for name, pid in self._pids.items()}
        now["benchmark"] = time.process_time()
        return now

    def used(self) -> dict[str, float]:
        end = self._now()
        return {name: end[name] - self._start[name] for name in end}


def add_stack_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bootstrap",
        help="use this running broker instead of starting a private one (topics get a unique "
        "prefix either way)",
    )
    parser.add_argument(
        "--partitions",
        type=int,
        default=EVALUATION_PARTITIONS,
        help=f"partitions of the request/decision topics (default {EVALUATION_PARTITIONS}, as "
        "`ledger topics create`)",
    )
    parser.add_argument(
        "--keep-home", action="store_true", help="keep the temporary LEDGER_HOME (processor logs)"
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="run the private broker without authentication or ACLs (to measure their cost)",
    )


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def bench_stack(
    *,
    bootstrap: str | None = None,
    processors: Sequence[str] = ("command-processor", "evaluator"),
    partitions: int = 6,
    keep_home: bool = False,
    progress: Progress = _say,
    insecure: bool = False,
) -> Iterator[BenchStack]:
    """A private ledger for one benchmark run, torn down whatever happens (see module doc)."""
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    home = Path(tempfile.mkdtemp(prefix="ledger-bench-"))
    base = Settings.from_env()
    settings = Settings(
        bootstrap=bootstrap,
        home=home,
        cache=base.cache,
        topics=TopicNames(prefix=f"bench{uuid.uuid4().hex[:8]}."),
        # With --bootstrap, the operator's credentials (a private broker's are found in home).
        security=base.security if bootstrap else None,
        credentials_dir=base.credentials_dir if bootstrap else None,
    )
    started_broker = False
    try:
        if bootstrap is None:
            progress(f"starting a private broker (home {home})…")
            started_broker = True
            status = broker.start(settings, insecure=insecure)
            assert status.bootstrap is not None
            bootstrap = status.bootstrap
        progress(f"creating topics {settings.topics.prefix}* on {bootstrap}…")
        stack = BenchStack(bootstrap=bootstrap, settings=settings, started_broker=started_broker)
        admin = stack.security("admin")
        create_topics(
            bootstrap, topic_specs(settings, evaluation_partitions=partitions), security=admin
        )
        if admin.enabled:
            ensure_acls(bootstrap, settings.topics, security=admin)
        ensure_admin_keys(settings)  # the command processor's trust anchor: human:admin's key
        for name in processors:
            progress(f"starting {name}…")
            stack.start(name)
        yield stack
    finally:
        # Tear-down must finish even if another Ctrl-C arrives while it runs.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            for name in reversed(PROCESSORS):  # also those a benchmark started itself
                stop_processor(settings, name)
            if started_broker:
                progress("stopping the private broker…")
                broker.stop(settings)
            if keep_home:
                progress(f"kept {home}")
            else:
                shutil.rmtree(home, ignore_errors=True)
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, previous)


# ---------------------------------------------------------------------- governance


def _submit(client: LedgerClient, command: Any) -> CommandAccepted:
    """Submit ``command`` signed with its actor's key, from the key store the administrator's
    client signs from (the stack's: :meth:`BenchStack.client`)."""
    key = client.config.signing_key
    if not isinstance(key, Path):
        raise RuntimeError(f"{client.config.actor}'s client has no signing key in a key store")
    return client.submit_command(sign(command, KeyStore(key.parent).private_key(command.actor)))


def _register(client: LedgerClient, actor: str) -> None:
    """Create ``actor``'s key pair in the key store and register it, signed by the admin."""
    key = client.config.signing_key
    assert isinstance(key, Path)
    public = public_bytes(KeyStore(key.parent).ensure(actor))
    _submit(
        client,
        RegisterActorKey(
            event_id=new_id(),
            occurred_at=utcnow(),
            actor=ADMIN,
            principal=actor,
            actor_key_id=key_id_of(public),
            public_key=public,
        ),
    )


def _grant(client: LedgerClient, principal: str, actions: tuple[str, ...], resource: str) -> None:
    _submit(
        client,
        IssueGrant(
            event_id=new_id(),
            occurred_at=utcnow(),
            actor=ADMIN,
            grant_id=f"g-{uuid.uuid4().hex[:12]}",
            principal=principal,
            actions=actions,
            resource=resource,
        ),
    )


def promote(client: LedgerClient, policy: str, version: int) -> None:
    _submit(
        client,
        PromotePolicyVersion(
            event_id=new_id(),
            occurred_at=utcnow(),
            actor=ADMIN,
            policy=policy,
            version=version,
            stage=Stage.ACTIVE,
        ),
    )


def deploy(client: LedgerClient, document: str) -> int:
    """Propose as alice, approve and promote to active as admin. Returns the version."""
    proposed = _submit(
        client,
        ProposePolicyVersion(
            event_id=new_id(),
            occurred_at=utcnow(),
            actor=ALICE,
            document=document,
            policy=parse_policy(document).name,  # the name the signature covers
        ),
    )
    assert proposed.version is not None
    _submit(
        client,
        ApprovePolicyVersion(
            event_id=new_id(),
            occurred_at=utcnow(),
            actor=ADMIN,
            policy=proposed.aggregate,
            version=proposed.version,
        ),
    )
    promote(client, proposed.aggregate, proposed.version)
    return proposed.version


def bootstrap_governance(client: LedgerClient) -> int:
    """Alice's signing key, grants and the refund policy (v1) active. Returns its version."""
    _register(client, ALICE)
    _grant(client, ALICE, ("ledger.policy.*",), "policy:*")
    _grant(client, AGENT, ("refund.*",), "account:*")
    return deploy(client, (POLICIES / "refund.yaml").read_text())


_STANDINGS = ("good", "good", "watch", "delinquent", "good", "suspended")


def request_facts(i: int) -> dict[str, Value]:
    return {
        "tenure_days": (i * 7) % 400,
        "amount": f"{(i * 37) % 100_000 / 100:.2f}",
        "prior_refunds_12m": i % 5,
        "standing": _STANDINGS[i % len(_STANDINGS)],
    }


def make_request(i: int, *, actor: str = AGENT) -> EvaluationRequested:
    return EvaluationRequested(
        event_id=new_id(),
        occurred_at=utcnow(),
        actor=actor,
        action="refund.issue",
        principal=AGENT,
        resource=f"account:{i % 5000}",
        facts=request_facts(i),
    )


def wait_for_version(
    client: LedgerClient, version: int, *, deadline: float = 30.0, policy: str = "refund"
) -> DecisionRecorded:
    """Ask until a decision is made by ``version`` of ``policy`` (governance is eventual)."""
    give_up = time.monotonic() + deadline
    i = 0
    while True:
        decision = client.evaluate(
            action="refund.issue", principal=AGENT, resource="account:1", facts=request_facts(i)
        )
        if decision.policy == policy and decision.policy_version == version:
            return decision
        if time.monotonic() > give_up:
            raise RuntimeError(
                f"no decision by {policy} v{version} within {deadline} s "
                f"(last: {decision.policy} v{decision.policy_version}, {decision.reasons})"
            )
        i += 1
        time.sleep(0.02)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0-1) of already sorted values, nearest-rank."""
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * len(sorted_values) + 0.5) - 1))
    return sorted_values[index]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def load_average() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} / {five:.2f} on {os.cpu_count()} CPUs"
