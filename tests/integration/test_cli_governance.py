"""The governance CLI (DESIGN §13) end to end: ``ledger`` commands, through click's
``CliRunner``, against a running stack on the real broker — configured as an operator would,
with ``$LEDGER_BOOTSTRAP`` and ``$LEDGER_TOPIC_PREFIX``.

Assertions read the ``--json`` documents (the human wording may change); rejections are checked
by exit code (4) and the stable rejection code on stderr. The module has a stack of its own, so
the example policy file can be proposed as it is (policy ``refund``) and the inventory holds only
what these tests put there. Authority is handed out through the CLI itself, by the bootstrap
administrator, as ``examples/demo.sh`` does.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from harness import ADMIN, AGENT, ALICE, BOB, GOOD_FACTS, ROOT, LedgerStack, policy_doc

from ledger.cli.app import cli
from ledger.client import LedgerClient
from ledger.core import parse_policy
from ledger.core.events import Determination
from ledger.keys import KeyStore

pytestmark = pytest.mark.integration

REFUND_FILE = ROOT / "examples" / "policies" / "refund.yaml"
CAROL = "human:carol"
REJECTED = 4
# 300 is under v1's auto-refund threshold (500) and over v2's (200).
FACTS_300 = {**GOOD_FACTS, "amount": "300"}


@dataclass
class Ledger:
    """Runs ``ledger …`` against the module's stack and checks the exit code."""

    stack: LedgerStack
    env: dict[str, str]

    def __call__(self, *args: str, expect: int = 0) -> Result:
        result = CliRunner().invoke(cli, list(args), env=self.env, catch_exceptions=False)
        assert result.exit_code == expect, (
            f"`ledger {' '.join(args)}` exited {result.exit_code}, expected {expect}\n"
            f"stdout: {result.stdout}\nstderr: {result.stderr}"
        )
        return result

    def json(self, *args: str) -> Any:
        """The one JSON document ``ledger ARGS --json`` prints."""
        return json.loads(self(*args, "--json").stdout)

    def rejected(self, *args: str, code: str) -> str:
        """Run a command that must be rejected with ``code``; its stderr."""
        result = self(*args, expect=REJECTED)
        assert code in result.stderr, result.stderr
        return result.stderr

    def propose(self, file: str, *, by: str = ALICE) -> int:
        """``ledger policy propose FILE --by BY``; the version the ledger assigned."""
        accepted = self.json("policy", "propose", file, "--by", by)
        assert accepted["command_type"] == "ProposePolicyVersion"
        return int(accepted["version"])

    def grant(self, principal: str, actions: str, resource: str) -> None:
        accepted = self.json(
            "grant",
            "issue",
            "--to",
            principal,
            "--actions",
            actions,
            "--resource",
            resource,
            "--by",
            ADMIN,
        )
        assert (accepted["command_type"], accepted["aggregate"]) == ("IssueGrant", principal)

    def evaluate(self, client: LedgerClient, **request: Any) -> dict[str, Any]:
        """``ledger evaluate --json`` once the evaluator has caught up with the ledger.

        The SDK waits for a decision made at the current governance position (a condition, not
        a sleep); the evaluator's state only moves forward, so the CLI's request is decided
        at that position or later.
        """
        self.stack.evaluate_settled(client, **request)
        return self.json(
            "evaluate",
            "--action",
            request["action"],
            "--principal",
            request["principal"],
            "--resource",
            request["resource"],
            "--facts",
            json.dumps(request.get("facts", {})),
        )


@pytest.fixture(scope="module")
def ledger(stack_factory) -> Ledger:
    """The CLI pointed at a stack of this module's, with alice, bob and the agent authorized
    (through ``ledger grant issue``, by the bootstrap administrator)."""
    stack = stack_factory()
    env = {**stack.cli_env(), "LEDGER_ADMINS": ADMIN}
    run = Ledger(stack, env)
    for person in (ALICE, BOB, CAROL, "human:mallory"):  # their signing keys
        added = run.json("actor", "add", person, "--by", ADMIN)
        assert added["command_type"] == "RegisterActorKey" and added["key_id"].startswith(
            "ed25519:"
        )
    for person in (ALICE, BOB):
        run.grant(person, "ledger.policy.*", "policy:*")
    run.grant(AGENT, "*", "*")
    return run


@pytest.fixture
def sdk(ledger: Ledger) -> Iterator[LedgerClient]:
    """An SDK client on the same stack, used only to wait for the evaluator to catch up."""
    client = ledger.stack.client(AGENT)
    yield client
    ledger.stack.release(client)


def _policy_file(tmp_path: Path, name: str, **changes: Any) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(policy_doc(name, **changes))
    return str(path)


def _row(ledger: Ledger, name: str) -> dict[str, Any]:
    rows = [row for row in ledger.json("policy", "list") if row["policy"] == name]
    assert len(rows) == 1, rows
    return rows[0]


# --------------------------------------------------------------------------- policy lifecycle


def test_policy_lifecycle_propose_approve_promote_evaluate_rollback(
    ledger: Ledger, sdk: LedgerClient, tmp_path: Path
):
    v1_hash = parse_policy(REFUND_FILE.read_text()).content_hash
    proposed = ledger.json("policy", "propose", str(REFUND_FILE), "--by", ALICE, "--note", "first")
    assert (proposed["command_type"], proposed["aggregate"], proposed["version"]) == (
        "ProposePolicyVersion",
        "refund",
        1,
    )
    approved = ledger.json("policy", "approve", "refund", "1", "--by", BOB)
    assert (approved["command_type"], approved["aggregate"]) == ("ApprovePolicyVersion", "refund")
    promoted = ledger.json("policy", "promote", "refund", "1", "--to", "active", "--by", BOB)
    assert promoted["command_type"] == "PromotePolicyVersion"

    row = _row(ledger, "refund")
    assert row["active"] == 1 and row["latest"] == 1
    assert row["owner"] == "customer-success" and row["governs"] == ["refund.issue"]
    assert (row["canary"], row["shadow"], row["retired"]) == (None, [], False)

    shown = ledger.json("policy", "show", "refund")
    assert shown["policy"] == row
    (version,) = shown["versions"]
    assert (version["version"], version["author"], version["approved_by"]) == (1, ALICE, BOB)
    assert version["owner"] == "customer-success"  # each version's owner, as its file names
    assert version["governs"] == ["refund.issue"]  # each version decides only what it governs
    assert (version["stage"], version["note"], version["content_hash"]) == (
        "active",
        "first",
        v1_hash,
    )
    assert [e["actor"] for e in shown["events"]] == [ALICE, BOB, BOB]
    assert [e["type"] for e in shown["events"]] == [
        "PolicyVersionProposed",
        "PolicyVersionApproved",
        "PolicyVersionPromoted",
    ]
    assert shown["events"][-1]["stage"] == "active"

    ask = {"action": "refund.issue", "principal": AGENT, "resource": "account:42"}
    first = ledger.evaluate(sdk, **ask, facts=FACTS_300)
    assert (first["determination"], first["rule"], first["reason_code"]) == (
        "allow",
        "auto-refund",
        "rule_matched",
    )
    assert (first["policy"], first["policy_version"], first["stage"]) == ("refund", 1, "active")
    assert first["content_hash"] == v1_hash

    # v2: the same policy, stricter; it takes over once approved and promoted.
    v2_file = tmp_path / "refund.yaml"
    v2_file.write_text(REFUND_FILE.read_text().replace("amount < 500", "amount < 200", 1))
    assert ledger.propose(str(v2_file)) == 2
    ledger.json("policy", "approve", "refund", "2", "--by", BOB)
    said = ledger.rejected(
        "policy", "promote", "refund", "2", "--to", "active", "--by", BOB, "--replacing", "3",
        code="deployment_changed",
    )  # fmt: skip
    assert "this promotion was sent to replace v3 as active, but refund is now v1 active" in said
    ledger.json(
        "policy", "promote", "refund", "2", "--to", "active", "--by", BOB, "--replacing", "1",
        "--note", "stricter limit after the March review",
    )  # fmt: skip
    promoted = ledger.json("policy", "show", "refund")["events"][-1]
    assert (promoted["type"], promoted["note"]) == (
        "PolicyVersionPromoted",
        "stricter limit after the March review",
    )
    assert json.loads(promoted["signed_command"])["command"]["note"] == promoted["note"]
    assert json.loads(promoted["signed_command"])["command"]["previous_version"] == 1
    second = ledger.evaluate(sdk, **ask, facts=FACTS_300)
    assert (second["policy_version"], second["rule"]) == (2, "credit-only")
    assert second["determination"] == Determination.ALLOW_WITH_CONSTRAINTS.value
    assert second["constraints"] == {"refund_method": "credit"}

    # --from names the version its sender means to undo: refused when another is active.
    said = ledger.rejected(
        "policy", "rollback", "refund", "--from", "1", "--by", BOB, "--reason", "too much store credit",
        code="deployment_changed",
    )  # fmt: skip
    assert "this rollback was sent to undo v1, but refund is now v2 active" in said, said
    rolled = ledger.json(
        "policy", "rollback", "refund", "--from", "2", "--by", BOB, "--reason", "too much store credit",
    )  # fmt: skip
    assert (rolled["command_type"], rolled["aggregate"]) == ("RollbackPolicy", "refund")
    assert rolled["version"] == 1  # the answer says which version is active again
    third = ledger.evaluate(sdk, **ask, facts=FACTS_300)
    assert (third["determination"], third["policy_version"], third["rule"]) == (
        "allow",
        1,
        "auto-refund",
    )
    row = _row(ledger, "refund")
    assert (row["active"], row["latest"]) == (1, 2)
    last = ledger.json("policy", "show", "refund")["events"][-1]
    assert (last["actor"], last["reason"]) == (BOB, "too much store credit")
    assert (last["from_version"], last["to_version"]) == (2, 1)
    assert json.loads(last["signed_command"])["command"]["from_version"] == 2

    # A policy owner starts the next version from the active one, and sees what changed.
    printed = ledger("policy", "get", "refund").stdout  # the active one: v1
    assert printed.startswith("# refund v1 (active), " + v1_hash)
    assert parse_policy(printed).content_hash == v1_hash
    assert parse_policy(ledger("policy", "get", "refund", "v2").stdout).content_hash == (
        parse_policy(v2_file.read_text()).content_hash
    )
    changed = ledger("policy", "diff", "refund", "2").stdout  # v2 against the active v1
    assert "--- refund v2\n+++ refund v1\n" in changed
    assert "-  when: tenure_days > 90 && amount < 200" in changed
    assert "+  when: tenure_days > 90 && amount < 500" in changed
    same = ledger("policy", "diff", "refund", "1", "--file", str(REFUND_FILE)).stdout
    assert same.startswith("no difference: refund v1 and ")
    # A policy owner's walkthrough: without OLD, "Missing argument 'OLD'"; the active one now.
    same = ledger("policy", "diff", "refund", "--file", str(REFUND_FILE)).stdout
    assert same.startswith("no difference: refund v1 and ")
    bare = ledger("policy", "diff", "refund", expect=2).stderr
    assert "`ledger policy diff refund --file FILE` (the active version with a draft)" in bare
    ledger("policy", "get", "refund", "9", expect=2)

    # An auditor reads the traces back: each as recorded, with the version that decided it.
    (trace,) = ledger.json("decisions", "--request", second["request_id"])
    assert trace == second
    history = ledger.json("decisions", "--principal", AGENT, "--action", "refund.*")
    versions = [
        d["policy_version"]
        for d in history
        if d["request_id"] in {first["request_id"], second["request_id"], third["request_id"]}
    ]
    assert versions == [1, 2, 1]
    # A policy owner watching a version: only its decisions.
    of_v2 = ledger.json("decisions", "--policy", "refund", "--version", "v2")
    assert second["request_id"] in {d["request_id"] for d in of_v2}
    assert {d["policy_version"] for d in of_v2} == {2}
    assert ledger.json("decisions", "--request", "no-such-request") == []
    # A pre-evaluation answer is listed too, whole, with its items.
    batch = sdk.preevaluate(
        AGENT, [{"action": "refund.issue", "resource": "account:7", "facts": FACTS_300}]
    )
    (answer,) = ledger.json("decisions", "--request", batch.request_id)
    assert [(i["action"], i["determination"]) for i in answer["decisions"]] == [
        ("refund.issue", "allow")
    ]

    # A policy owner watching a shadow live: only where it would have answered otherwise.
    v3_file = tmp_path / "refund-v3.yaml"
    v3_file.write_text(REFUND_FILE.read_text().replace("amount < 500", "amount < 100", 1))
    assert ledger.propose(str(v3_file)) == 3
    ledger.json("policy", "promote", "refund", "3", "--to", "shadow", "--by", BOB)
    agreed = ledger.evaluate(sdk, **ask, facts={**FACTS_300, "standing": "suspended"})
    differed = ledger.evaluate(sdk, **ask, facts=FACTS_300)
    assert differed["determination"] == "allow"  # v1; the shadow v3 says credit only
    watched = ledger("decisions", "--policy", "refund", "--disagreeing")
    assert differed["request_id"] in watched.stdout
    assert agreed["request_id"] not in watched.stdout
    assert "refund v3 (shadow): allow_with_constraints by rule credit-only" in watched.stdout
    # A policy owner's walkthrough: a misspelt --policy, or a version that decided nothing,
    # read as "no traffic"; the note says so.
    typo = ledger("decisions", "--policy", "refnd", "--disagreeing")
    assert "no decision in the ledger names policy 'refnd' (did you mean 'refund'?)" in (
        typo.stderr
    )
    assert (
        "versions that decided: v1, v2"
        in ledger("decisions", "--policy", "refund", "--version", "9").stderr
    )
    listed = ledger.json("decisions", "--policy", "refund", "--disagreeing")
    # Each request was asked twice (the SDK waits for the evaluator to catch up first).
    assert differed["request_id"] in {d["request_id"] for d in listed}
    assert agreed["request_id"] not in {d["request_id"] for d in listed}
    assert {
        (d["determination"], s["version"], s["determination"])
        for d in listed
        for s in d["shadow_results"]
    } == {("allow", 3, "allow_with_constraints")}


def test_rejected_commands_exit_4_with_their_code_and_change_nothing(
    ledger: Ledger, tmp_path: Path
):
    name = "cli-rejections"
    assert ledger.propose(_policy_file(tmp_path, name)) == 1
    # A rule that can never match is a warning: said on stderr, and in the --json document.
    warned = tmp_path / "cli-warned.yaml"
    warned.write_text(
        "policy: cli-warned\ngoverns: [cli-warned.do]\nowner: team\n"
        "facts:\n  amount: {type: decimal}\n"
        "rules:\n  - id: all\n    effect: allow\n"
        "  - id: never\n    when: amount > 5\n    effect: deny\n"
        "default: {effect: deny}\n"
    )
    accepted = ledger.json("policy", "propose", str(warned), "--by", ALICE)
    assert accepted["version"] == 1
    said = [w["message"] for w in accepted["warnings"]]
    assert any(m.startswith("never matches: rule 'all' before it") for m in said), said
    # A docs walkthrough: proposed untested was said on stderr only, not to a script.
    assert any(m.startswith("it has no test cases: it is proposed untested") for m in said), said

    ledger.rejected("policy", "approve", name, "1", "--by", ALICE, code="self_approval")
    ledger.rejected("policy", "approve", name, "1", "--by", ALICE, "--json", code="self_approval")
    ledger.rejected(
        "policy", "promote", name, "1", "--to", "active", "--by", BOB, code="not_approved"
    )
    ledger.rejected("policy", "approve", name, "1", "--by", "human:mallory", code="not_authorized")
    ledger.rejected(
        "policy", "rollback", name, "--by", BOB, "--reason", "oops", code="no_previous_version"
    )

    # A README check: a refused `actor add` left the key pair it made in the key store, and
    # the refusal told a delegate to get a grant that would not have helped.
    said = ledger.rejected("actor", "add", "human:eve", "--by", BOB, code="not_authorized")
    assert "only an administrator registers a key for another principal" in said, said
    keys = ledger.stack.settings.keys
    assert not KeyStore(keys).has_private("human:eve") and (keys / "human:carol.key").is_file()

    # Nothing was half-applied: still an unapproved draft, with only its proposal recorded.
    shown = ledger.json("policy", "show", name)
    assert shown["policy"]["active"] is None
    assert [(v["version"], v["approved_by"]) for v in shown["versions"]] == [(1, None)]
    assert len(shown["events"]) == 1


# --------------------------------------------------------------------------- grants and roles


def test_grant_issue_list_revoke(ledger: Ledger, sdk: LedgerClient):
    bot = "agent:cli-grants"
    # Nothing governs this action, so the answer tells authority apart: with a grant it is
    # `ungoverned_action` (naming the grant), without one `no_authority`.
    ask = {"action": "cli-grants.run", "principal": bot, "resource": "job:1"}
    issued = ledger.json(
        "grant",
        "issue",
        "--to",
        bot,
        "--actions",
        "cli-grants.*, report.read",
        "--resource",
        "job:*",
        "--by",
        ADMIN,
        "--until",
        "2099-01-01T00:00:00Z",
        "--approved-by",
        CAROL,
        "--note",
        "nightly jobs",
    )
    assert (issued["command_type"], issued["aggregate"]) == ("IssueGrant", bot)

    listed = ledger.json("grant", "list", "--principal", bot)
    (grant,) = listed["grants"]
    assert grant["principal"] == bot
    assert grant["actions"] == ["cli-grants.*", "report.read"]
    assert (grant["resource"], grant["condition"]) == ("job:*", None)
    assert (grant["granted_by"], grant["approved_by"]) == (ADMIN, CAROL)
    assert grant["valid_until"].startswith("2099-01-01T00:00:00")
    assert grant["in_force"] is True
    assert listed["roles"] == {}
    # A policy owner's walkthrough: a grant already ended was accepted (and listed like one in
    # force), and one not yet begun showed nothing to tell it apart.
    ledger.rejected(
        "grant",
        "issue",
        "--to",
        bot,
        "--actions",
        "report.read",
        "--resource",
        "job:*",
        "--by",
        ADMIN,
        "--until",
        "2020-01-01T00:00:00Z",
        code="invalid_grant",
    )
    ledger(
        "grant",
        "issue",
        "--to",
        bot,
        "--actions",
        "report.read",
        "--resource",
        "job:9",
        "--by",
        ADMIN,
        "--from",
        "2098-01-01T00:00:00Z",
    )
    later = [
        g
        for g in ledger.json("grant", "list", "--principal", bot)["grants"]
        if g["resource"] == "job:9"
    ]
    assert [g["in_force"] for g in later] == [False]
    ledger("grant", "revoke", later[0]["grant_id"], "--by", ADMIN, "--reason", "not needed")

    authorized = ledger.evaluate(sdk, **ask)
    assert (authorized["determination"], authorized["reason_code"]) == (
        "deny",
        "ungoverned_action",
    )
    assert authorized["grant_id"] == grant["grant_id"]

    revoked = ledger.json(
        "grant", "revoke", grant["grant_id"], "--by", ADMIN, "--reason", "jobs moved"
    )
    assert (revoked["command_type"], revoked["aggregate"]) == ("RevokeGrant", bot)
    assert ledger.json("grant", "list", "--principal", bot)["grants"] == []
    unauthorized = ledger.evaluate(sdk, **ask)
    assert (unauthorized["reason_code"], unauthorized["grant_id"]) == ("no_authority", None)

    ledger.rejected("grant", "revoke", grant["grant_id"], "--by", ADMIN, code="unknown_grant")
    ledger.rejected(
        "grant",
        "issue",
        "--to",
        bot,
        "--actions",
        "x.y",
        "--resource",
        "*",
        "--when",
        "amount <",
        "--by",
        ADMIN,
        code="invalid_condition",
    )
    ledger.rejected(
        "grant",
        "issue",
        "--to",
        bot,
        "--actions",
        "x.y",
        "--resource",
        "*",
        "--by",
        BOB,
        code="not_authorized",
    )


def test_grant_issue_json_names_the_grant_it_issued(ledger: Ledger):
    """`grant issue` "prints its id (needed to revoke it)" — with --json too, for scripts."""
    bot = "agent:cli-grant-id"
    issued = ledger.json(
        "grant", "issue", "--to", bot, "--actions", "a.b", "--resource", "r:*", "--by", ADMIN
    )
    (grant,) = ledger.json("grant", "list", "--principal", bot)["grants"]
    assert issued["grant_id"] == grant["grant_id"], issued
    ledger.json("grant", "revoke", issued["grant_id"], "--by", ADMIN)  # what a script does next
    assert ledger.json("grant", "list", "--principal", bot)["grants"] == []


def test_role_assign_and_revoke(ledger: Ledger, tmp_path: Path):
    name = "cli-roles"
    ledger.grant("role:cli_approver", "ledger.policy.approve", "policy:*")
    assert ledger.propose(_policy_file(tmp_path, name)) == 1
    ledger.rejected("policy", "approve", name, "1", "--by", CAROL, code="not_authorized")

    assigned = ledger.json("role", "assign", CAROL, "cli_approver", "--by", ADMIN)
    assert (assigned["command_type"], assigned["aggregate"]) == ("AssignRole", CAROL)
    held = ledger.json("grant", "list", "--principal", CAROL)
    assert held["roles"] == {CAROL: ["role:cli_approver"]}
    assert held["memberships"] == [
        {"principal": CAROL, "role": "role:cli_approver", "assigned_by": ADMIN}
    ]
    shown = ledger("grant", "list", "--principal", CAROL).stdout  # the table says it too
    words = " ".join(shown.replace("│", " ").replace("┃", " ").split())
    assert "principal role assigned by" in words and f"{CAROL} role:cli_approver {ADMIN}" in words
    # What carol can use includes the role's grant, marked with the role it comes through.
    assert [(g["actions"], g["via"]) for g in held["grants"]] == [
        (["ledger.policy.approve"], "role:cli_approver")
    ]
    ledger.rejected(
        "role", "assign", CAROL, "role:cli_approver", "--by", ADMIN, code="already_applied"
    )
    # Holding the role, carol holds its grant.
    ledger.json("policy", "approve", name, "1", "--by", CAROL)
    assert ledger.json("policy", "show", name)["versions"][0]["approved_by"] == CAROL

    revoked = ledger.json("role", "revoke", CAROL, "role:cli_approver", "--by", ADMIN)
    assert (revoked["command_type"], revoked["aggregate"]) == ("RevokeRole", CAROL)
    assert ledger.json("grant", "list", "--principal", CAROL) == {
        "grants": [],
        "roles": {},
        "memberships": [],
    }
    ledger.rejected("role", "revoke", CAROL, "cli_approver", "--by", ADMIN, code="not_member")

    assert ledger.propose(_policy_file(tmp_path, name, auto_below=100)) == 2
    ledger.rejected("policy", "approve", name, "2", "--by", CAROL, code="not_authorized")


def test_an_actor_makes_its_own_key_and_the_administrator_registers_only_the_public_half(
    ledger: Ledger, tmp_path: Path
):
    """A policy owner's walkthrough: `actor add` made every person's private key in the
    administrator's key store, so the self-approval rule proved little about who signed.
    `actor keygen` on the actor's machine and `actor add --public-key` keep it the actor's."""
    dave, own = "human:dave", tmp_path / "daves-keys"
    env = {**ledger.env, "LEDGER_KEYS": str(own)}
    made = CliRunner().invoke(cli, ["actor", "keygen", dave, "--json"], env=env)
    assert made.exit_code == 0, made.stderr
    made_by_dave = json.loads(made.stdout)
    added = ledger.json(
        "actor", "add", dave, "--public-key", made_by_dave["public_key"], "--by", ADMIN
    )
    assert added["key_id"] == made_by_dave["key_id"] and added["private_key"] is None
    listed = [r for r in ledger.json("actor", "list") if r["actor"] == dave]
    assert [(r["key_id"], r["private_key_here"]) for r in listed] == [
        (made_by_dave["key_id"], False)  # the administrator's store holds no key of dave's
    ]
    ledger.grant(dave, "ledger.policy.propose", "policy:*")
    proposed = CliRunner().invoke(
        cli,
        ["policy", "propose", _policy_file(tmp_path, "daves"), "--by", dave, "--json"],
        env=env,
    )
    assert proposed.exit_code == 0, proposed.stderr  # signed with the key only dave holds
    ledger("policy", "propose", _policy_file(tmp_path, "daves"), "--by", dave, expect=2)
    # A red team: with dave's key stolen, a thief registered a key of its own with it, which
    # stayed active, unnamed, when the stolen key was revoked.
    ledger.grant(dave, "ledger.key.register", f"principal:{dave}")
    thief = CliRunner().invoke(
        cli, ["actor", "keygen", dave, "--json"], env={**ledger.env, "LEDGER_KEYS": str(tmp_path)}
    )
    assert thief.exit_code == 0, thief.stderr
    thiefs = json.loads(thief.stdout)
    registered = CliRunner().invoke(
        cli,
        ["actor", "add", dave, "--public-key", thiefs["public_key"], "--by", dave, "--json"],
        env=env,  # signed with dave's (stolen) key
    )
    assert registered.exit_code == 0, registered.stderr
    # An operator's upgrade: revoking one key by --key said "revoked the keys of human:dave".
    revoked = ledger(
        "actor", "revoke", dave, "--key", added["key_id"], "--by", ADMIN, "--reason", "rotated"
    )
    assert f"revoked {added['key_id']} of {dave}" in revoked.stdout, revoked.stdout
    assert f"note: {thiefs['key_id']} of {dave}, registered " in revoked.stderr, revoked.stderr
    assert f"with {added['key_id']}, stays active: if {added['key_id']} was stolen" in (
        revoked.stderr
    )
    listed = {r["key_id"]: r for r in ledger.json("actor", "list") if r["actor"] == dave}
    assert listed[thiefs["key_id"]]["registered_with"] == added["key_id"]
    # A red team revoked the only administrator key: every admin command after it failed.
    last = ledger("actor", "revoke", ADMIN, "--by", ADMIN, "--reason", "oops", expect=2)
    assert "is a bootstrap administrator and this leaves it no active key" in last.stderr


def test_revoking_a_key_tells_a_rotations_new_key_from_a_thiefs_and_counts_past_five(
    ledger: Ledger, tmp_path: Path
):
    """A review: a routine rotation's `revoke --key` named its own new key as if a thief had
    registered it, and an administrator's would list every key it ever registered."""
    erin, old = "human:erin", tmp_path / "erins-old-keys"

    def keygen(store: Path) -> dict[str, str]:
        made = CliRunner().invoke(
            cli, ["actor", "keygen", erin, "--json"], env={**ledger.env, "LEDGER_KEYS": str(store)}
        )
        assert made.exit_code == 0, made.stderr
        return dict(json.loads(made.stdout))

    first = keygen(old)
    ledger.json("actor", "add", erin, "--public-key", first["public_key"], "--by", ADMIN)
    ledger.grant(erin, "ledger.key.register", f"principal:{erin}")
    # The rotation: the new pair made in the key store that will revoke the old key, and
    # registered by erin with the old one.
    rotated = keygen(Path(ledger.env["LEDGER_HOME"]) / "keys")
    elsewhere = [keygen(tmp_path / f"other-{n}") for n in range(6)]
    for made in [rotated, *elsewhere]:
        added = CliRunner().invoke(
            cli,
            ["actor", "add", erin, "--public-key", made["public_key"], "--by", erin, "--json"],
            env={**ledger.env, "LEDGER_KEYS": str(old)},  # signed with erin's old key
        )
        assert added.exit_code == 0, added.stderr
    revoked = ledger(
        "actor", "revoke", erin, "--key", first["key_id"], "--by", ADMIN, "--reason", "rotated"
    )
    notes = revoked.stderr.splitlines()
    assert (
        f"note: {rotated['key_id']} of {erin}, registered with {first['key_id']}, stays active: "
        "its private key is in this key store (a rotation's new key, or another key made here)"
    ) in notes, revoked.stderr
    named = [line for line in notes if "was stolen, revoke it too" in line]
    assert [line.split()[1] for line in named] == [k["key_id"] for k in elsewhere[:5]]
    assert (
        f"note: and 1 more active key(s) registered with {first['key_id']}, directly or down "
        "the chain"
    ) in revoked.stderr


def test_replay_of_a_principal_includes_the_grants_it_holds_through_its_roles(ledger: Ledger):
    """Reported: `ledger replay --principal X` left out the grants X holds through its roles
    while `ledger grant list --principal X` showed them (the CLI rebuilt the rule by hand)."""
    dave = "human:dave"
    ledger.grant("role:replay_auditor", "report.read", "report:*")
    ledger.json("role", "assign", dave, "replay_auditor", "--by", ADMIN)
    listed = ledger.json("grant", "list", "--principal", dave)
    replayed = ledger.json("replay", "--principal", dave)
    via_list = {(tuple(g["actions"]), g["via"]) for g in listed["grants"]}
    via_replay = {(tuple(g["actions"]), g["via"]) for g in replayed["grants"]}
    assert (("report.read",), "role:replay_auditor") in via_replay
    assert via_replay == via_list
    assert replayed["roles"] == {dave: ["role:replay_auditor"]}


# --------------------------------------------------------------------------- command status


TIMED_OUT = 8


def _timed_out_id(ledger: Ledger, *args: str) -> str:
    """Run a command that must time out (the command processor is down); the command id its
    message names, in the `ledger command status` it advises."""
    said = ledger(*args, "--timeout", "1", expect=TIMED_OUT).stderr
    found = re.search(r"`ledger command status (\S+) --wait 60`", said)
    assert found, said
    return found.group(1)


def test_command_status_says_what_became_of_a_command_that_timed_out(
    ledger: Ledger, tmp_path: Path
):
    """An operator at 3 a.m.: a rollback timed out with the command processor down, and only
    `policy show` could hint whether sending it again would apply it twice. `ledger command
    status` reads the commands, their answers and dead letters, and waits with --wait."""
    never = ledger("command", "status", "no-such-command", expect=1).stderr
    assert "never reached Kafka" in never and "[not_sent]" in never, never
    governance_only = tmp_path / "governance-only"
    governance_only.mkdir(mode=0o700)
    source = Path(ledger.env["LEDGER_CREDENTIALS"]) / "governance.json"
    (governance_only / "governance.json").write_bytes(source.read_bytes())
    (governance_only / "governance.json").chmod(0o600)

    stack = ledger.stack
    assert stack.stop("command-processor")
    try:
        issued = _timed_out_id(
            ledger,
            "grant", "issue", "--to", "agent:status-bot", "--actions", "status.read",
            "--resource", "report:*", "--by", ADMIN,
        )  # fmt: skip
        refused = _timed_out_id(
            ledger, "policy", "rollback", "no-such-policy", "--by", ADMIN, "--reason", "test"
        )
        waiting = ledger("command", "status", issued, expect=TIMED_OUT)
        assert "is in " in waiting.stderr and "do not send it again" in waiting.stderr
        document = json.loads(
            ledger("command", "status", refused, "--json", expect=TIMED_OUT).stdout
        )
        assert (document["status"], document["command_type"], document["actor"]) == (
            "waiting",
            "RollbackPolicy",
            ADMIN,
        ), document
        assert document["sent_at"] is not None and document["answers"] == 0
        # The governance credential reads the answers, not the commands: it cannot tell.
        unsure = CliRunner().invoke(
            cli,
            ["command", "status", issued, "--json"],
            env={**ledger.env, "LEDGER_CREDENTIALS": str(governance_only)},
            catch_exceptions=False,
        )
        assert unsure.exit_code == TIMED_OUT, unsure.stderr
        assert json.loads(unsure.stdout)["status"] == "not_answered"
    finally:
        stack.start("command-processor")

    accepted = ledger.json("command", "status", issued, "--wait", "60")
    assert (accepted["status"], accepted["command_type"], accepted["aggregate"]) == (
        "accepted",
        "IssueGrant",
        "agent:status-bot",
    ), accepted
    assert accepted["answered_at"] >= accepted["sent_at"] and len(accepted["event_ids"]) == 1
    said = ledger("command", "status", refused, "--wait", "60", expect=REJECTED).stderr
    assert "[unknown_policy]" in said and "RollbackPolicy on 'no-such-policy'" in said, said
    # The answers alone, with the governance credential, once they are there.
    known = CliRunner().invoke(
        cli,
        ["command", "status", issued],
        env={**ledger.env, "LEDGER_CREDENTIALS": str(governance_only)},
        catch_exceptions=False,
    )
    assert known.exit_code == 0 and known.stdout.startswith("accepted at "), known.stdout
