"""``ledger policy propose|approve|promote|rollback|retire|list|show|get|diff``: the policy lifecycle on
the ledger (DESIGN §7). The ``policy`` group itself lives in :mod:`ledger.cli.policy`, which adds
these commands to it.

Every command here publishes a command and waits for its answer, printing it as a table or, with
``--json``, as one JSON document. A rejected command exits 4 with its reason and stable code; a
timeout exits 8 — never a silent success.
"""

from __future__ import annotations

import difflib
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import click

from ledger.cli.common import (
    bootstrap_option,
    canary_cell,
    current_state,
    ledger_options,
    policy_rows,
    principal_arg,
    read_text_file,
    reason_option,
    submit,
)
from ledger.cli.output import (
    VERSION,
    handle_errors,
    json_option,
    print_json,
    print_table,
    to_jsonable,
)
from ledger.cli.policyfiles import TEST_TIMEOUT, cases_for, tests_files_option
from ledger.core.events import (
    ApprovePolicyVersion,
    PromotePolicyVersion,
    ProposePolicyVersion,
    RetirePolicy,
    RollbackPolicy,
    Stage,
)
from ledger.core.jsonform import format_timestamp
from ledger.core.lifecycle import CANARY_PERCENTS, taken_out_of_service
from ledger.core.policy import Policy, check_policy, parse_policy
from ledger.core.policy.canonical import content_hash, document_yaml
from ledger.core.policytests import run_case, unreached_rules
from ledger.core.state import EMPTY_STATE, PolicyVersion, fold
from ledger.errors import (
    LedgerTimeout,
    PolicyError,
    PolicyProblem,
    PolicyTestsFailed,
    TamperDetected,
    UsageError,
)
from ledger.ids import new_id, utcnow

__all__ = ["COMMANDS"]


@click.command("propose")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--by", "by", required=True, help="Author, e.g. human:alice.")
@click.option("--note", default=None, help="Why this version (kept in the ledger).")
@tests_files_option(
    "Also run this tests file's cases first (repeatable): the current version's, "
    "refund.tests.yaml, for a new version's file that `policy get` wrote without them.",
)
@click.option(
    "--skip-tests",
    is_flag=True,
    help="Propose even though the test cases (its tests: block, NAME.tests.yaml beside the "
    "file, each --tests file) fail or cannot be read.",
)
@ledger_options
@handle_errors
def propose(
    file: Path,
    by: str,
    note: str | None,
    tests_files: tuple[Path, ...],
    skip_tests: bool,
    bootstrap: str | None,
    timeout: float,
    as_json: bool,
) -> None:
    """Submit a new version of a policy; prints the version number the ledger assigned.

    The document is validated by the command processor exactly as `ledger policy validate`
    does offline; an invalid one is rejected with the problems found. First, the policy's own
    test cases (its tests: block and NAME.tests.yaml beside FILE) and those of each --tests
    file are run as `ledger policy test FILE --tests …` runs them: a failing case stops the
    proposal (exit 1) unless --skip-tests. A file with no case at all is proposed with a
    warning: pass the current version's cases with --tests.
    """
    document = read_text_file(file, what="policy file")
    # Validate here first: an invalid file fails fast with its problems, even with no ledger up.
    # Warnings (a rule that can never match) are said, and do not stop the proposal.
    policy, found = check_policy(document, filename=str(file))
    warnings = list(found)
    for warning in warnings:
        click.echo(f"warning  {warning}", err=True)
    if skip_tests:
        skipped = PolicyProblem(
            message="its test cases were not run (--skip-tests)", file=str(file)
        )
        click.echo(f"warning  {skipped}", err=True)
        warnings.append(skipped)
    else:
        untested = _own_cases_pass(file, policy, tests_files)
        if untested is not None:  # a docs walkthrough: a CI script reading --json never saw it
            warnings.append(untested)
    # The name travels beside the document: the processor authorizes on it before reading it.
    command = ProposePolicyVersion(
        event_id=new_id(),
        occurred_at=utcnow(),
        actor=principal_arg(by, "--by"),
        document=document,
        note=note,
        policy=policy.name,
    )
    # --json carries them too: a script reading only stdout must not lose them.
    submit(
        bootstrap,
        timeout,
        as_json,
        command,
        f"proposed {policy.name}",
        extra={"warnings": warnings},
    )


def _own_cases_pass(
    file: Path, policy: Policy, tests_files: tuple[Path, ...] = ()
) -> PolicyProblem | None:
    """Run the cases a policy file brings with it, and ``tests_files``' (a policy owner's
    walkthrough: versions whose own tests failed, one letting blocked accounts be refunded,
    were proposed without a word); :class:`PolicyTestsFailed` naming the first failure when
    any fails. Returns the warning said when there is no case at all, or the note that names
    the rules no case reaches."""
    try:
        cases = cases_for(file, policy, tests_files)
    except (PolicyError, UsageError) as exc:
        click.echo(f"error  {file}: its test cases cannot be read: {exc}", err=True)
        checked = " ".join([str(file), *(f"--tests {t}" for t in tests_files)])
        raise UsageError(
            f"fix the tests of {policy.name} (`ledger policy test {checked}` reads them), or "
            "propose with --skip-tests"
        ) from exc
    failed, results, started = [], [], time.monotonic()
    for n, case in enumerate(cases):  # each bounded by the evaluation budget; all of them here
        if time.monotonic() - started > TEST_TIMEOUT:
            raise LedgerTimeout(
                f"{policy.name}'s own test cases ran over {TEST_TIMEOUT:g} s ({n} of "
                f"{len(cases)} run): run them with `ledger policy test {file} --timeout …`, then "
                "propose with --skip-tests"
            )
        result = run_case(policy, case)
        results.append(result)
        if not result.passed:
            failed.append(result)
    also = "".join(f" --tests {t}" for t in tests_files)
    if failed:
        first = failed[0]
        raise PolicyTestsFailed(
            f"{len(failed)} of {len(cases)} of {policy.name}'s test cases fail (first: "
            f"{first.case!r}: {first.failures[0]}): `ledger policy test {file}{also}` shows "
            "them; fix the policy or the cases, or propose with --skip-tests"
        )
    if cases:
        click.echo(f"tested  {file}: {len(cases)} passed", err=True)
        unreached = unreached_rules(policy, results)
        if not unreached:
            return None
        # An auditor's walkthrough: `policy test` said which rules no case reaches, and the
        # proposal, which its approver acts on, did not.
        shown = ", ".join(unreached[:10]) + (
            f" and {len(unreached) - 10} more" if len(unreached) > 10 else ""
        )
        uncovered = PolicyProblem(
            message=f"no case is decided by rule {shown}: write a case that reaches each rule",
            file=str(file),
        )
        click.echo(f"note  {uncovered}", err=True)
        return uncovered
    # A warning (a policy owner's walkthrough: `policy get`'s file, which has no cases,
    # went through after the owner had seen the current version's cases fail against it).
    untested = PolicyProblem(
        message="it has no test cases: it is proposed untested; pass the current version's "
        f"cases with `--tests FILE` (`ledger policy test {file} --tests FILE` runs them alone)",
        file=str(file),
    )
    click.echo(f"warning  {untested}", err=True)
    return untested


@click.command("approve")
@click.argument("name")
@click.argument("version", type=VERSION)
@click.option("--by", "by", required=True, help="Approver; must differ from the author.")
@click.option("--note", default=None, help="Approval note.")
@ledger_options
@handle_errors
def approve(
    name: str,
    version: int,
    by: str,
    note: str | None,
    bootstrap: str | None,
    timeout: float,
    as_json: bool,
) -> None:
    """Approve a proposed version (the approver must not be its author)."""
    command = ApprovePolicyVersion(
        event_id=new_id(),
        occurred_at=utcnow(),
        actor=principal_arg(by, "--by"),
        policy=name,
        version=version,
        note=note,
    )
    submit(bootstrap, timeout, as_json, command, f"approved {name} v{version}")


def _percent(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    """A canary's share: a whole number from 1 to 99 (the core's
    :data:`~ledger.core.lifecycle.CANARY_PERCENTS`), told so in the policy owner's terms."""
    if value is None:
        return None
    shares = f"{CANARY_PERCENTS[0]} to {CANARY_PERCENTS[-1]}"
    try:
        percent = int(value, 10)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a whole number: a canary takes {shares} percent of requests"
        ) from None
    if percent == 100:
        raise click.BadParameter("100 percent is all requests: promote --to active instead")
    if percent not in CANARY_PERCENTS:
        raise click.BadParameter(f"{percent} is outside {shares}")
    return percent


@click.command("promote")
@click.argument("name")
@click.argument("version", type=VERSION)
@click.option(
    "--to",
    "stage",
    required=True,
    type=click.Choice(["shadow", "canary", "active"]),
    help="Target stage.",
)
@click.option(
    "--percent",
    callback=_percent,
    default=None,
    metavar="1-99",
    help="Canary only: the share the canary decides, by resource (every request for one "
    "resource falls on the same side; one without a resource by its request id).",
)
@click.option("--by", "by", required=True, help="Who promotes, e.g. human:bob.")
@click.option(
    "--note",
    default=None,
    help="Why now (kept in the ledger beside who and when, e.g. 'a week in shadow, no diffs').",
)
@click.option(
    "--replacing",
    "previous_version",
    type=VERSION,
    default=None,
    help="The version you see in that stage (the active one, or the canary) and mean to "
    "replace, as `policy show` shows it: refused if another holds it by then, whatever the "
    "clocks say.",
)
@ledger_options
@handle_errors
def promote(
    name: str,
    version: int,
    stage: str,
    percent: int | None,
    by: str,
    note: str | None,
    previous_version: int | None,
    bootstrap: str | None,
    timeout: float,
    as_json: bool,
) -> None:
    """Promote a version to shadow (recorded, never enforced), canary (--percent) or active.

    Only an approved version may become canary or active. It is judged against what you saw:
    when someone else changed the active or canary version after this command was made, it is
    refused (deployment_changed, exit 4). `--replacing N` adds a check that needs no clock:
    refused unless vN still holds that stage.
    """
    if stage == "canary" and percent is None:
        raise UsageError("--to canary needs --percent N (1-99)")
    if stage != "canary" and percent is not None:
        raise UsageError("--percent applies only to --to canary")
    if stage == "shadow" and previous_version is not None:
        raise UsageError("a shadow replaces no version: --replacing applies to canary and active")
    command = PromotePolicyVersion(
        event_id=new_id(),
        occurred_at=utcnow(),
        actor=principal_arg(by, "--by"),
        policy=name,
        version=version,
        stage=Stage(stage),
        percent=percent,
        note=note,
        previous_version=previous_version,
    )
    share = f" ({percent}% of requests)" if percent is not None else ""
    submit(bootstrap, timeout, as_json, command, f"{name} v{version} → {stage}{share}")


@click.command("rollback")
@click.argument("name")
@click.option(
    "--to",
    "to_version",
    type=VERSION,
    default=None,
    help="Version to restore, one that was active before (default: the previously active one).",
)
@click.option(
    "--from",
    "from_version",
    type=VERSION,
    default=None,
    help="The active version you mean to undo (as `policy show` shows it): refused if another "
    "is active by then, whatever the clocks say.",
)
@click.option("--by", "by", required=True, help="Who rolls back.")
@reason_option
@ledger_options
@handle_errors
def rollback(
    name: str,
    to_version: int | None,
    from_version: int | None,
    by: str,
    reason: str,
    bootstrap: str | None,
    timeout: float,
    as_json: bool,
) -> None:
    """Restore the previously active (or a named) version now, ending any canary. Needs a
    reason, not an approval.

    The previously active version is the one active before the current one: with v3 active
    (after v1) and v4 as canary, a rollback ends the canary AND makes v1 active again. To end
    only a canary, keeping the active version, name it: `--to 3`. Only with no earlier active
    version (v1 active, v2 as canary) does a bare rollback end the canary alone.

    It is judged against what you saw: when someone else changed the active or canary version
    after this command was made (two people rolling back at once), it is refused
    (deployment_changed, exit 4), not taken a step further back. `--from N` adds a check that
    needs no clock: the rollback is refused unless vN is still the active version (a second
    rollback signed just after the first was applied, which the clock rule lets through).
    """
    command = RollbackPolicy(
        event_id=new_id(),
        occurred_at=utcnow(),
        actor=principal_arg(by, "--by"),
        policy=name,
        reason=reason,
        to_version=to_version,
        from_version=from_version,
    )
    submit(bootstrap, timeout, as_json, command, f"rolled back {name}", version_label="to version")


@click.command("retire")
@click.argument("name")
@click.option("--by", "by", required=True, help="Who retires the policy.")
@reason_option
@ledger_options
@handle_errors
def retire(
    name: str, by: str, reason: str, bootstrap: str | None, timeout: float, as_json: bool
) -> None:
    """Retire a policy: its actions go to another policy that governs them, else become
    ungoverned, and so denied (the answer notes the policies that may now decide them).

    It is judged against what you saw: when someone else changed the active or canary version
    after this command was made (a fix promoted meanwhile), it is refused (deployment_changed,
    exit 4).
    """
    command = RetirePolicy(
        event_id=new_id(),
        occurred_at=utcnow(),
        actor=principal_arg(by, "--by"),
        policy=name,
        reason=reason,
    )
    submit(bootstrap, timeout, as_json, command, f"retired {name}")


@click.command("list")
@bootstrap_option
@json_option
@handle_errors
def list_policies(bootstrap: str | None, as_json: bool) -> None:
    """Inventory: every policy with its owner (the deciding version's; a newer version naming
    another is shown beside it), active / canary / shadow versions, and what they govern (a shadow's own actions in parentheses; nothing until a version is deployed)."""
    state, _ = current_state(bootstrap)
    rows = policy_rows(state)
    if as_json:
        print_json(rows)
        return
    print_table(
        ["policy", "owner", "active", "canary", "shadow", "latest", "governs"],
        [
            [
                r["policy"],
                owner_cell(r),
                r["active"] or "-",
                canary_cell(r),
                ",".join(map(str, r["shadow"])) or "-",
                r["latest"],
                "retired" if r["retired"] else governs_cell(r),
            ]
            for r in rows
        ],
    )


def owner_cell(row: dict[str, Any]) -> str:
    """``customer-success``, or ``customer-success (v4 proposes otto)`` when the newest version
    names another owner than the one that decides."""
    owner, latest = row["owner"], row["latest_owner"]
    if latest is None or latest == owner:
        return str(owner)
    return f"{owner} (v{row['latest']} proposes {latest})"


def governs_cell(row: dict[str, Any]) -> str:
    """``refund.issue (shadow: refund.partial)``: what a policy decides, then what only its
    shadows observe; ``-`` when nothing of it is deployed."""
    shadow = f"(shadow: {', '.join(row['observes'])})" if row["observes"] else ""
    return " ".join(x for x in (", ".join(row["governs"]), shadow) if x) or "-"


@click.command("show")
@click.argument("name")
@bootstrap_option
@json_option
@handle_errors
def show(name: str, bootstrap: str | None, as_json: bool) -> None:
    """Full history of one policy: every version (with the actions it governs, which are the
    only ones it decides) and every lifecycle event, who, when and why.

    The table leaves out each event's signature proof and the documents; --json has them all.
    """
    state, history = current_state(bootstrap)
    record = state.policies.get(name)
    if record is None:
        raise _no_policy(name, state.policies)
    events = [e.event for e in history if getattr(e.event, "policy", None) == name]
    versions: list[dict[str, Any]] = [
        {
            "version": v.version,
            "stage": v.stage,
            "author": v.author,
            "owner": v.owner,  # a README check: the text promised each version's owner
            "proposed_at": v.proposed_at,
            "approved_by": v.approved_by,
            "governs": list(v.governs),
            "content_hash": v.content_hash,
            "note": v.note,
            # What runs is the document; what was signed, its hash (a red team's version was
            # listed as any other): one that does not hash to it decides only error.
            "altered": content_hash(v.document) != v.content_hash,
        }
        for v in sorted(record.versions.values(), key=lambda v: v.version)
    ]
    if as_json:
        print_json(
            {
                "policy": next(r for r in policy_rows(state) if r["policy"] == name),
                "versions": versions,
                "events": [{"type": type(e).__name__, **to_jsonable(e)} for e in events],
            }
        )
        return
    print_table(
        ["version", "stage", "owner", "author", "approved by", "governs", "content hash", "note"],
        [
            [
                v["version"],
                f"{v['stage']} (ALTERED: its document is not its hash's)"
                if v["altered"]
                else v["stage"],
                v["owner"],
                v["author"],
                v["approved_by"] or "-",
                ", ".join(v["governs"]),  # each version decides only what its own governs names
                v["content_hash"][:19],
                v["note"] or "",
            ]
            for v in versions
        ],
        title=f"policy {name}",
    )
    print_table(
        ["when", "event", "by", "details"],
        _history_rows(name, events),
        title="history",
    )


def _history_rows(name: str, events: list[Any]) -> list[list[Any]]:
    """One row per lifecycle event; a promotion or a rollback also says what it took out of
    service, as its command's answer did (a rollback's own fields, ``from_version=1,
    to_version=1``, read as one that did nothing)."""
    rows = []
    state = EMPTY_STATE
    for event in events:
        said = [_details(event), *taken_out_of_service(state.policies.get(name), event)]
        state = fold(state, event)
        rows.append(
            [
                format_timestamp(event.occurred_at),
                type(event).__name__,
                event.actor,
                "; ".join(s for s in said if s),
            ]
        )
    return rows


def _details(event: Any) -> str:
    data = to_jsonable(event)
    skip = {
        "event_id",
        "occurred_at",
        "actor",
        "command_id",
        "policy",
        "sequence",
        "document",
        "content_hash",
        "governs",
        # The signature's proof: `ledger actor verify` checks it, --json shows it.
        "command_key_id",
        "command_signature",
        "signed_command",
    }
    return ", ".join(
        f"{k}={v}" for k, v in data.items() if k not in skip and v not in (None, [], "")
    )


def _recorded(name: str, version: int | None, bootstrap: str | None) -> PolicyVersion:
    """Version ``version`` of policy ``name`` as recorded (default: the active one, else the
    latest), or one usage line naming what exists."""
    state, _ = current_state(bootstrap)
    record = state.policies.get(name)
    if record is None:
        raise _no_policy(name, state.policies)
    number = version if version is not None else record.active or record.latest
    held = record.versions.get(number)
    if held is None:
        known = ", ".join(f"v{v}" for v in sorted(record.versions)) or "none"
        raise UsageError(f"{name} has no version {number} (it has {known})")
    if content_hash(held.document) != held.content_hash:  # what runs is not what was signed
        raise TamperDetected(
            f"{name} v{held.version}'s recorded document does not hash to its content hash "
            f"{held.content_hash}: the governance log was altered after it was recorded (the "
            "evaluator decides error for it); `ledger actor verify` says which event"
        )
    return held


def _as_file(name: str, held: PolicyVersion) -> str:
    """A recorded version as the policy file to edit: a header saying which, then the YAML."""
    return (
        f"# {name} v{held.version} ({held.stage.value}), {held.content_hash}\n"
        f"# proposed by {held.author} at {format_timestamp(held.proposed_at)}; "
        "comments and tests are not recorded\n" + document_yaml(held.document)
    )


@click.command("get")
@click.argument("name")
@click.argument("version", type=VERSION, required=False)
@bootstrap_option
@handle_errors
def get(name: str, version: int | None, bootstrap: str | None) -> None:
    """Print a recorded version of policy NAME as a policy file (default: the active version,
    else the latest), to start the next version from: it validates to the same content hash.

    Comments and tests are not part of a recorded version; keep them in your repository."""
    click.echo(_as_file(name, _recorded(name, version, bootstrap)), nl=False)


@click.command("diff")
@click.argument("name")
@click.argument("old", type=VERSION, required=False)
@click.argument("new", type=VERSION, required=False)
@click.option(
    "--file",
    "draft",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Compare version OLD (default: the active one) with this draft policy file instead "
    "of a recorded version.",
)
@bootstrap_option
@handle_errors
def diff(
    name: str, old: int | None, new: int | None, draft: Path | None, bootstrap: str | None
) -> None:
    """What changed between two recorded versions of policy NAME (NEW by default the active
    one), or between version OLD (by default the active one) and a draft --file: a unified
    diff of their policy files, as `policy get` prints them (layout, comments and key order do
    not count). Exits 0 whether they differ or not.

    Examples: `ledger policy diff refund 2 3`, `ledger policy diff refund 2` (with the active
    one), `ledger policy diff refund --file refund-v4.yaml` (the active one with a draft).
    """
    if new is not None and draft is not None:
        raise UsageError("give either NEW or --file, not both")
    if old is None and draft is None:
        # A policy owner's walkthrough: a bare "Missing argument 'OLD'", no example.
        raise UsageError(
            f"say what to compare: `ledger policy diff {name} OLD [NEW]` (two versions; NEW "
            f"by default the active one) or `ledger policy diff {name} --file FILE` (the active "
            "version with a draft)"
        )
    before = _recorded(name, old, bootstrap)
    if draft is not None:
        policy = parse_policy(read_text_file(draft, what="policy file"), filename=str(draft))
        after_text, after_label = document_yaml(policy.canonical), str(draft)
        if policy.name != name:
            raise UsageError(f"{draft} is policy {policy.name!r}, not {name!r}")
    else:
        after = _recorded(name, new, bootstrap)
        after_text, after_label = document_yaml(after.document), f"{name} v{after.version}"
    lines = difflib.unified_diff(
        document_yaml(before.document).splitlines(keepends=True),
        after_text.splitlines(keepends=True),
        fromfile=f"{name} v{before.version}",
        tofile=after_label,
    )
    text = "".join(lines)
    click.echo(text if text else f"no difference: {name} v{before.version} and {after_label}")


COMMANDS = (propose, approve, promote, rollback, retire, list_policies, show, get, diff)
"""Added to the ``policy`` group by :mod:`ledger.cli.policy`."""


def _no_policy(name: str, known: Iterable[str]) -> UsageError:
    """One line for a policy name the ledger does not hold, with the closest it does."""
    close = difflib.get_close_matches(name, list(known), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return UsageError(f"no policy named {name!r}; {hint}`ledger policy list` shows the known ones")
