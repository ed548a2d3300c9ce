"""The integration harness: a whole ledger stack on the real broker, and helpers to drive it.

A *stack* is the ledger topics under a unique prefix, a ``Settings`` whose home is a temp dir
(processor logs land in ``<home>/logs``), and the command processor and evaluator running as
real worker processes (``ledger.stack.start_processor``). Nothing about Kafka is mocked.

- ``stack_factory`` (conftest) builds stacks on demand (stopped at the end of the module): fault tests
  that kill or restart processors take their own.
- ``shared_stack`` (conftest) is one stack for a whole module, bootstrapped with grants. Tests sharing
  it stay apart by giving each its own policy (name and governed action), see :func:`policy_doc`.

Every client of a stack uses its role's credential on the session's (secured) broker: processors
theirs, :meth:`LedgerStack.client` ``governance`` for people and ``agent`` for the rest.

Every governance command is signed by its actor, as the command processor requires: the stack's
key store (``<home>/keys``) holds the bootstrap administrator's key (the processor's trust
anchor), and the helpers below sign each command with its actor's key, registering a key for a
new actor (signed by the administrator) the first time it acts.

Governance is eventually consistent: the evaluator follows the policy/grant topics on its own.
:meth:`LedgerStack.evaluate_settled` waits (with a deadline) until a decision was made at a
governance position at least as far as the one the ledger had when it was called.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

from ledger.client import ClientConfig, LedgerClient
from ledger.core.events import (
    ApprovePolicyVersion,
    Command,
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
from ledger.ids import new_id, utcnow
from ledger.kafka.clients import make_consumer, make_producer
from ledger.kafka.reading import read_topic
from ledger.keys import C, KeyStore, public_bytes, sign
from ledger.local.stack import start_processor, stop_processor
from ledger.settings import KafkaSecurity, Role, Settings, TopicNames

ROOT = Path(__file__).resolve().parents[2]
REFUND = (ROOT / "examples" / "policies" / "refund.yaml").read_text()

ADMIN = "human:admin"
ALICE = "human:alice"
BOB = "human:bob"
AGENT = "agent:refund-bot"

GOOD_FACTS: dict[str, Value] = {
    "tenure_days": 400,
    "amount": "120.50",
    "prior_refunds_12m": 0,
    "standing": "good",
}


def agent_request(
    resource: str = "account:1",
    *,
    action: str = "refund.issue",
    facts: Mapping[str, Value] | None = None,
    **fields: Any,
) -> EvaluationRequested:
    """A request by :data:`AGENT` about itself: :data:`GOOD_FACTS` with ``facts`` over them."""
    return EvaluationRequested(
        event_id=new_id(),
        occurred_at=utcnow(),
        actor=AGENT,
        action=action,
        principal=AGENT,
        resource=resource,
        facts={**GOOD_FACTS, **(facts or {})},
        **fields,
    )


def policy_doc(name: str = "refund", *, action: str | None = None, auto_below: int = 500) -> str:
    """The example refund policy, renamed (so tests can share a stack) and re-thresholded.

    ``auto_below`` is the amount under which the ``auto-refund`` rule allows outright: changing
    it makes a different version (different content hash, different decisions).
    """
    doc = REFUND.replace("policy: refund", f"policy: {name}", 1)
    doc = doc.replace("governs: [refund.issue]", f"governs: [{action or name + '.issue'}]", 1)
    return doc.replace("amount < 500", f"amount < {auto_below}", 1)


@dataclass
class LedgerStack:
    """One running ledger: topics, settings, processors, and the clients made for it."""

    bootstrap: str
    settings: Settings
    credentials: Mapping[str, KafkaSecurity] = field(default_factory=dict)
    clients: list[LedgerClient] = field(default_factory=list)

    def security(self, role: Role) -> KafkaSecurity | None:
        """``role``'s credential on the session's broker (``None``: a plain connection)."""
        return self.credentials.get(role)

    def producer(self, role: Role = "admin", **config: Any) -> Any:
        """A kafka-python producer with ``role``'s credential (the caller closes it)."""
        return make_producer(self.bootstrap, security=self.security(role), **config)

    def consumer(self, role: Role = "admin", **config: Any) -> Any:
        """A kafka-python consumer with ``role``'s credential (the caller closes it)."""
        return make_consumer(self.bootstrap, security=self.security(role), **config)

    def cli_env(self) -> dict[str, str]:
        """The environment of a ``ledger`` command run against this stack, as an operator sets
        it: where Kafka is, the topic prefix, this stack's home and its roles' credentials."""
        return {
            "LEDGER_BOOTSTRAP": self.bootstrap,
            "LEDGER_TOPIC_PREFIX": self.topics.prefix,
            "LEDGER_HOME": str(self.settings.home),
            "LEDGER_CREDENTIALS": str(self.settings.credentials),
        }

    @property
    def topics(self) -> TopicNames:
        return self.settings.topics

    @property
    def log_dir(self) -> Path:
        return self.settings.home / "logs"

    # ------------------------------------------------------------------ processes

    def start(self, name: str, *, instance: int | None = None) -> int:
        return start_processor(
            self.settings,
            name,
            bootstrap=self.bootstrap,
            timeout=90,
            instance=instance,
            security=self.security(cast(Role, name)) or KafkaSecurity(),
        )

    def stop(self, name: str, *, kill: bool = False, instance: int | None = None) -> bool:
        return stop_processor(self.settings, name, kill=kill, instance=instance)

    def logs(self) -> str:
        """Every processor log, for assertion messages."""
        parts = []
        for log in sorted(self.log_dir.glob("*.log")):
            parts.append(f"--- {log.name}\n{log.read_text(errors='replace')[-4000:]}")
        return "\n".join(parts)

    # ------------------------------------------------------------------ clients

    def config(
        self, actor: str = AGENT, *, role: Role | None = None, timeout: float = 20.0
    ) -> ClientConfig:
        """A client configuration for ``actor`` with ``role``'s credential (default: a person
        governs, anyone else is an agent)."""
        role = role or ("governance" if actor.startswith("human:") else "agent")
        key = self.keys.private_path(actor)
        return ClientConfig(
            bootstrap=self.bootstrap,
            topics=self.topics,
            actor=actor,
            timeout=timeout,
            security=self.security(role),
            role=role,
            signing_key=key if key.is_file() else None,
        )

    # ------------------------------------------------------------------ signing

    @property
    def keys(self) -> KeyStore:
        """The stack's key store (the command processor's trust anchors come from it)."""
        return KeyStore(self.settings.keys)

    def register_key(self, client: LedgerClient, actor: str, *, by: str = ADMIN) -> str:
        """Create ``actor``'s key pair and register it, signed by ``by``. Returns its key id."""
        public = public_bytes(self.keys.create(actor))
        command = RegisterActorKey(
            event_id=new_id(),
            occurred_at=utcnow(),
            actor=by,
            principal=actor,
            actor_key_id=key_id_of(public),
            public_key=public,
        )
        client.submit_command(sign(command, self.keys.private_key(by)))
        return command.actor_key_id

    def sign(self, command: C) -> C:
        """``command`` signed by its actor, who must have a key here (the administrator has)."""
        return sign(command, self.keys.private_key(command.actor))

    def signed(self, client: LedgerClient, command: Command) -> Command:
        """``command`` signed by its actor (whose key is registered first if it has none)."""
        if not self.keys.has_private(command.actor):
            self.register_key(client, command.actor)
        if isinstance(command, ProposePolicyVersion) and command.policy is None:
            # The name the signature covers, as the SDK fills it in (from the document).
            command = replace(command, policy=parse_policy(command.document).name)
        return sign(command, self.keys.private_key(command.actor))

    def submit(
        self, client: LedgerClient, command: Command, *, timeout: float | None = None
    ) -> CommandAccepted:
        """Sign ``command`` as its actor and submit it through ``client``."""
        return client.submit_command(self.signed(client, command), timeout=timeout)

    def client(
        self, actor: str = AGENT, *, role: Role | None = None, timeout: float = 20.0
    ) -> LedgerClient:
        client = LedgerClient(self.config(actor, role=role, timeout=timeout))
        self.clients.append(client)
        return client

    def close_clients(self) -> None:
        while self.clients:
            self.clients.pop().close()

    def release(self, client: LedgerClient) -> None:
        """Close one client made by :meth:`client` before the stack goes away."""
        if client in self.clients:
            self.clients.remove(client)
            client.close()

    # ------------------------------------------------------------------ governance helpers

    def propose(
        self, client: LedgerClient, document: str, *, by: str, timeout: float | None = None
    ) -> CommandAccepted:
        return self.submit(
            client,
            ProposePolicyVersion(
                event_id=new_id(), occurred_at=utcnow(), actor=by, document=document
            ),
            timeout=timeout,
        )

    def approve(
        self, client: LedgerClient, policy: str, version: int, *, by: str
    ) -> CommandAccepted:
        return self.submit(
            client,
            ApprovePolicyVersion(
                event_id=new_id(), occurred_at=utcnow(), actor=by, policy=policy, version=version
            ),
        )

    def promote(
        self,
        client: LedgerClient,
        policy: str,
        version: int,
        stage: Stage,
        *,
        by: str = ADMIN,
        percent: int | None = None,
    ) -> CommandAccepted:
        return self.submit(
            client,
            PromotePolicyVersion(
                event_id=new_id(),
                occurred_at=utcnow(),
                actor=by,
                policy=policy,
                version=version,
                stage=stage,
                percent=percent,
            ),
        )

    def grant(
        self,
        client: LedgerClient,
        principal: str,
        actions: tuple[str, ...],
        resource: str,
        *,
        by: str = ADMIN,
    ) -> CommandAccepted:
        return self.submit(
            client,
            IssueGrant(
                event_id=new_id(),
                occurred_at=utcnow(),
                actor=by,
                grant_id=f"g-{uuid.uuid4().hex[:12]}",
                principal=principal,
                actions=actions,
                resource=resource,
            ),
        )

    def grant_defaults(self) -> None:
        """Alice and bob may run every policy command; the agent may do anything to anything."""
        admin = self.client(ADMIN)
        try:
            for person in (ALICE, BOB):
                self.grant(admin, person, ("ledger.policy.*",), "policy:*")
            self.grant(admin, AGENT, ("*",), "*")
        finally:
            self.release(admin)

    def deploy(
        self,
        client: LedgerClient,
        document: str,
        *,
        author: str = ALICE,
        approver: str = BOB,
        stage: Stage = Stage.ACTIVE,
        percent: int | None = None,
    ) -> int:
        """Propose (author), approve (approver), promote (admin). Returns the version."""
        proposed = self.propose(client, document, by=author)
        assert proposed.version is not None
        policy = proposed.aggregate
        self.approve(client, policy, proposed.version, by=approver)
        self.promote(client, policy, proposed.version, stage, percent=percent)
        return proposed.version

    # ------------------------------------------------------------------ evaluation helpers

    def evaluate_settled(
        self, client: LedgerClient, *, deadline: float = 20.0, **request: Any
    ) -> DecisionRecorded:
        """A decision made at (or after) the ledger's governance position as of now.

        Governance changes reach the evaluator asynchronously; this asks again until the
        evaluator's state has caught up with every policy/grant event written before the call.
        """
        target = client.governance_position()
        give_up = time.monotonic() + deadline
        while True:
            decision = client.evaluate(**request)
            if covers(decision.governance_position, target):
                return decision
            if time.monotonic() > give_up:
                raise AssertionError(
                    f"evaluator did not reach governance position {target} in {deadline} s "
                    f"(last decision at {dict(decision.governance_position)})\n{self.logs()}"
                )
            time.sleep(0.05)

    def records(self, topic: str) -> list[Any]:
        """Every decodable record of ``topic``, start to current end."""
        return [
            r.event
            for r in read_topic(
                self.bootstrap, [topic], idle_timeout=1.0, security=self.security("auditor")
            )
        ]


def covers(position: Mapping[str, int], target: Mapping[str, int]) -> bool:
    return all(position.get(key, -1) >= offset for key, offset in target.items())


def wait_for(predicate: Callable[[], Any], *, timeout: float, what: str, poll: float = 0.1) -> Any:
    """Poll ``predicate`` until it returns something truthy, or fail after ``timeout`` seconds."""
    give_up = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > give_up:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(poll)
