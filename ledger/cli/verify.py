"""``ledger audit verify``: recompute the decision hash chains over an export (DESIGN §9).

A command of the ``audit`` group (:mod:`ledger.cli.audit` adds :data:`COMMANDS` to it). The
checking is :func:`ledger.audit.verify.verify_export`; this module parses and prints.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ledger.cli.common import from_option, load_settings
from ledger.cli.output import handle_errors, json_option, print_json, print_table
from ledger.errors import ExportError, TamperDetected

if TYPE_CHECKING:  # the checking (pyarrow, DuckDB) is imported when a verification runs
    from ledger.audit.verify import VerifyReport

__all__ = ["COMMANDS", "verify_cmd"]

_SHOWN = 20
F = TypeVar("F", bound=Callable[..., Any])


@click.command("verify")
@from_option()
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=None,
    help="Processes sharing the chains (default: one per CPU, up to 4, from 50,000 decisions).",
)
@click.option(
    "--allow-unchained",
    is_flag=True,
    help="Accept decisions outside every chain (written before chains existed).",
)
@json_option
@handle_errors
def verify_cmd(
    from_dir: Path | None, workers: int | None, allow_unchained: bool, as_json: bool
) -> None:
    """Recompute every decision hash chain over an export; exit 0 when intact.

    Each decision row's JSON form is rebuilt from the columns analysts query, hashed and
    checked against its hash; its raw record must decode to the same form; each chain is
    followed by chain_seq and checked against its latest checkpoints. Otherwise exit 11
    (tamper_detected), naming the first altered, missing, inserted or reordered decision
    (topic, partition, offset, decision id) and what was expected. The scheme is in the
    README ("Tamper evidence"), so it can be checked without this code. An export whose last
    run stopped part-way (killed, Ctrl-C) is exit 9 (export_error): export again, then verify;
    unless what is found is something no stopped run leaves (a gap between a partition's rows,
    a listed file gone or rewritten, a record altered): exit 11 all the same.
    """
    settings = load_settings()
    path = from_dir if from_dir is not None else settings.export_dir
    # Seconds per hundred thousand decisions: say what it is doing (an auditor's walkthrough:
    # 20 s of silence over 157,505).
    if sys.stderr.isatty():
        click.echo(f"verifying the decision chains of {path}…", err=True)
    from ledger.audit.verify import verify_export  # every `ledger` command imports this module

    report = verify_export(path, allow_unchained=allow_unchained, workers=workers)
    if as_json:
        print_json(_document(report))
    else:
        _print(report)
    if report.unverified_files:
        pid = f" (pid {report.writer_pid})" if report.writer_pid is not None else ""
        who, when = (
            (f"a running export{pid}", "(a flush in progress): verify again once it has stopped")
            if report.writer_running
            else ("an export run", "(it flushed meanwhile): verify again")
        )
        click.echo(
            f"note: {report.unverified_files} file(s) {who} wrote after the manifest this "
            f"verification read were not verified {when}",
            err=True,
        )
    if not report.complete and not report.beyond_interruption:
        found = (
            f"; the {report.problem_count} problem(s) found may come from that"
            if report.problem_count
            else ""
        )
        raise ExportError(
            f"incomplete: the export that last wrote {report.export_dir} stopped part-way, so its "
            f"topics end at different points{found}: run `ledger export --out "
            f"{report.export_dir}` again, then verify"
        )
    if not report.intact:
        first = report.problems[0]
        more = f" (and {report.problem_count - 1} more)" if report.problem_count > 1 else ""
        raise TamperDetected(f"{first}{more}")


def _document(report: VerifyReport) -> dict[str, Any]:
    return {
        "intact": report.intact,
        "complete": report.complete,
        "export_dir": report.export_dir,
        "decisions_topic": report.decisions_topic,
        "records": report.records,
        "chains": report.chains,
        "checkpoints": report.checkpoints,
        "unconfirmed": report.unconfirmed,
        "unchained": report.unchained,
        "unverified_files": report.unverified_files,
        "writer_running": report.writer_running,
        "writer_pid": report.writer_pid,
        "problem_count": report.problem_count,
        "problems": report.problems,
        "recent": report.recent,
        "decided_again": report.decided_again,
        "seconds": round(report.seconds, 3),
    }


def _print(report: VerifyReport) -> None:
    print_table(
        ["chain", "evaluator", "records", "last seq", "checkpointed", "final", "unconfirmed"],
        [
            [
                c.chain_id,
                c.evaluator_id or "-",
                c.records,
                c.last_seq,
                c.checkpoint_seq if c.checkpoint_seq is not None else "-",
                "yes" if c.final else "no",
                c.unconfirmed,
            ]
            for c in report.chains
        ],
        title=f"decision chains in {report.export_dir}",
    )
    if report.problems:
        print_table(
            ["kind", "decision", "topic[partition]@offset", "chain #seq", "found", "expected"],
            [
                [
                    p.kind,
                    p.decision_id or "-",
                    (f"{p.topic}[{p.partition}]@{p.offset}" if p.topic else "-")
                    + (f" in {p.file}" if p.file else ""),
                    f"{p.chain_id} #{p.chain_seq}" if p.chain_id else "-",
                    p.found,
                    p.expected,
                ]
                for p in report.problems[:_SHOWN]
            ],
            title=f"problems (first {min(_SHOWN, report.problem_count)} of "
            f"{report.problem_count}, first in time first)",
        )
    verdict = (
        "incomplete (the export stopped part-way)"
        if not report.complete
        else "intact"
        if report.intact
        else "NOT intact"
    )
    click.echo(
        f"{report.records} decision(s) in {len(report.chains)} chain(s), {report.checkpoints} "
        f"checkpoint(s): {verdict}"
        + (
            f"; {report.unconfirmed} after their chain's last checkpoint"
            if report.unconfirmed
            else ""
        )
        + (f"; {report.unchained} outside every chain" if report.unchained else "")
        + f" ({report.seconds:.2f} s)"
    )
    if report.complete and report.recent:
        # An auditor's walkthrough: an export verified at once read "intact" with none of the
        # answers, corrections and requests of its last minute checked, and nothing said so.
        click.echo(
            f"  ({report.recent} request(s) and decision(s) the broker received in the minute "
            "before the export read the ledger were not held to their answers, corrections "
            "and requests, which may not have been written yet: export again in a minute and "
            "verify that to check them)"
        )
    if report.decided_again:
        click.echo(
            f"  ({report.decided_again} request id(s) answered more than once: a retry decided "
            "again, or a copy of a request someone holding the agent credential wrote under its "
            "id, with facts of their choosing; `ledger audit run requests_decided_twice` lists "
            "each answer and whether it differs from the first)"
        )
    open_chains = [c for c in report.chains if not c.final and c.unconfirmed]
    if report.intact and open_chains:
        # An auditor's walkthrough: after an evaluator's kill -9, two exports said the same
        # "intact; 93 after their chain's last checkpoint", and nothing of what it means.
        click.echo(
            f"  ({len(open_chains)} chain(s) not closed by a final checkpoint, with records "
            "after their last one: a writer still running, or one that stopped without "
            "closing its chain (killed or crashed: an evaluator that stops cleanly closes it; "
            "its log says which). Export again later and verify: a running writer's chain "
            "has grown, or been checkpointed)"
        )
    unanswered_only = bool(report.problems) and all(
        p.kind == "missing" and p.subject == "request" for p in report.problems
    )
    if not report.intact and report.complete and unanswered_only:
        # An auditor's walkthrough: an evaluator's outage read as tampering, in its words.
        click.echo(
            "  (only requests without an answer: an evaluator that was down when they were sent "
            "leaves exactly this, as does deleting their decisions. Check `ledger ps` and the "
            "evaluators' logs of that time, then export into a new folder, `ledger export --out "
            "NEW`, and verify that: answered there, they were answered late "
            "(`ledger audit run decisions_answered_late`); still unanswered, no evaluator "
            "answered them)"
        )
    elif not report.intact and report.complete:  # what to do next (an auditor's walkthrough)
        click.echo(
            "  (keep this folder as it is, as evidence: do not export into it again. Export the "
            "ledger into a new folder, `ledger export --out NEW`, and verify that: problems "
            "found only here mean this copy was changed; found in both, the ledger's topics)"
        )
    if (
        report.intact and report.complete
    ):  # what "intact" covers, and what it does not (an auditor's walkthrough)
        click.echo(
            "  (the decisions' chains, the other topics' rows against their records, and the "
            "files; governance rows' signatures and authority: `ledger actor verify --from "
            f"{report.export_dir}`)"
        )


COMMANDS = (verify_cmd,)
