"""``ledger up`` / ``ledger down`` / ``ledger ps``: the local stack in the background."""

from __future__ import annotations

import click

from ledger.cli.common import bootstrap_option, load_settings
from ledger.cli.output import handle_errors, json_option, print_json, print_table, to_jsonable
from ledger.kafka.snapshots import installed_fingerprint
from ledger.local import broker, stack
from ledger.settings import parse_bootstrap
from processors.heartbeat import DecisionCounts

__all__ = ["up_cmd", "down_cmd", "ps_cmd"]


@click.command("up", short_help="Start the local stack: broker, topics, processors.")
@bootstrap_option
@click.option(
    "--evaluators",
    type=click.IntRange(1, 64),
    default=None,
    help="Evaluator worker processes (they share the request partitions) [default: 1, or as "
    "many as an earlier `up --evaluators N` left].",
)
@click.option(
    "--wait",
    type=click.IntRange(1, 86_400),
    default=int(stack.START_WAIT),
    show_default=True,
    metavar="SECONDS",
    help="How long each processor may take to become ready: it first catches up with the "
    "governance history (about 8 s per million events on 2 cores, 11.5 s signed).",
)
@click.option(
    "--insecure",
    is_flag=True,
    help="DEBUGGING ONLY: run the local broker without authentication or ACLs.",
)
@json_option
@handle_errors
def up_cmd(
    bootstrap: str | None, evaluators: int | None, wait: int, insecure: bool, as_json: bool
) -> None:
    """Start the local stack: broker (unless --bootstrap/$LEDGER_BOOTSTRAP), topics, processors.

    Returns once the command processor and the evaluator have caught up with the ledger and are
    healthy. Idempotent: what is healthy is left alone, what is not is restarted (a processor
    that does not recover within 20 s, or that was started with another Kafka address; one
    still catching up gets --wait); each is reported. Logs: $LEDGER_HOME/logs/<processor>.log.
    A healthy processor on other code than this command (an upgrade installed since it started)
    is left running too, but then `up` fails (other_code), saying how to restart it on this code.

    The local broker authenticates every client (SASL/SCRAM, one credential per role in
    $LEDGER_HOME/credentials) and enforces the ledger's ACLs; --insecure turns both off, for
    debugging only, and says so loudly.
    """
    settings = load_settings(bootstrap)
    if insecure:
        click.secho(
            "WARNING: --insecure: the broker accepts anyone on this machine, with every right "
            "(no authentication, no ACLs). Never use it for a ledger that matters.",
            err=True,
            fg="red",
            bold=True,
        )
    address = stack.up(
        settings,
        evaluators=evaluators,
        progress=lambda m: click.echo(m, err=True),
        insecure=insecure,
        wait=wait,
    )
    procs = stack.processes(settings)
    # Up, but failing closed where it cannot read: said here too, not only by `ps` (a review).
    for problem in stack.behind_a_newer_release(procs) + stack.damaged_governance(procs):
        click.echo(f"warning: {problem}", err=True)
    if as_json:
        print_json({"bootstrap": address, "processors": _json(procs)})
    else:
        click.echo(f"ledger is up on {address}")


@click.command("down", short_help="Stop the processors, then the local broker.")
@click.option(
    "--keep-broker", is_flag=True, help="Stop the processors but leave the broker running."
)
@json_option
@handle_errors
def down_cmd(keep_broker: bool, as_json: bool) -> None:
    """Stop the processors (cleanly, committing their progress), then the local broker.

    Notes on stderr name a processor that had ended by itself, and how many evaluator workers
    ran (a plain `ledger up` starts one); --json has them as `ended` and `evaluators`.
    """
    done = stack.down(
        load_settings(), keep_broker=keep_broker, progress=lambda line: click.echo(line, err=True)
    )
    if as_json:
        print_json({"stopped": done.stopped, "ended": done.ended, "evaluators": done.evaluators})
    else:
        click.echo(f"stopped: {', '.join(done.stopped)}" if done.stopped else "nothing was running")


def _not_running(p: stack.ProcessStatus) -> str:
    """``evaluator is not running``, and how its last run ended when its log says it was killed."""
    killed = stack.ended_unannounced(p.log)
    return f"{p.name} is not running" + (f": {killed}" if killed else "")


@click.command("ps", short_help="What of the local stack runs, and its health.")
@json_option
@handle_errors
def ps_cmd(as_json: bool) -> None:
    """What of the local stack runs, whether it is healthy, with pids and log files.

    A processor is healthy when its heartbeat (written every second) is fresh, its consumer heard
    from the broker within the last 5 s, it talks to the address Kafka is at now, and (an
    evaluator) it has not been out of its consumer group for 60 s (holding no request partition
    while not a settled member of the group). The evaluators must also hold every request
    partition between them (for some 10 s after a broker restart they do not: requests to the
    others wait); partitions an evaluator this home did not start holds (`python -m
    processors.evaluator` run by hand) count as held, and are named, when the broker says so
    (asked as the admin, only when this home's hold fewer). What is not running or not healthy
    is said on stderr, first a filesystem of $LEDGER_HOME or the broker's data that is nearly
    full (under 200 MB or 1 % free), and the exit status is then 1 (0: all is well; the local
    broker counts unless $LEDGER_BOOTSTRAP names another); `ledger up` starts or restarts it.

    The decisions column says an evaluator's decisions over the last minute by determination;
    --json has them as `recent` (`determinations`, and `errors` by `reason_code`, `policy` and
    `policy_version`), over `recent_seconds`. When `error` decisions are half of them or more
    (3 at least) over that minute, all evaluators together, that is a problem too (exit 1): a
    policy that fails on every request answers every request, with `error`.

    The code column says whether each processor runs the code installed now, which this command
    runs (`ledger --version` prints its fingerprint; --json has each processor's): after an
    upgrade in place, one started before it runs the old code until it is restarted.
    """
    settings = load_settings()
    if settings.bootstrap:
        parse_bootstrap(settings.bootstrap)  # a malformed address is a usage error, as elsewhere
    stack.checked_home(settings)  # another user's home: not this user's to judge
    b = broker.status(settings)
    procs = stack.processes(settings)
    problems = [
        f"{p.name} is not healthy: {p.problem}" if p.running else _not_running(p)
        for p in procs
        if not p.healthy
    ]
    local = settings.bootstrap is None  # the processors' broker is the local one
    # Its pid alone is not health: a hung broker (SIGSTOP, a full GC) showed healthy here while
    # `broker status` and `up` said it does not answer (an operator's walkthrough).
    answering, refusal = broker.answering(settings, b) if b.running and local else (b.running, None)
    if local and not b.running:
        problems.insert(0, broker.not_running(b))
    elif local and not answering:
        problems.insert(0, broker.not_answering(b.pid))
    elif refusal is not None:  # answers: not to be restarted (a README check)
        problems.insert(0, broker.admin_refused(settings, b, refusal))
    # What `up` can mend: a processor down or unhealthy, a stopped local broker; not a hung
    # broker (the line above says `ledger broker stop` first), a full disk, or a policy that
    # fails (an operator's walkthrough: the same `up` hint closed every `ps`).
    hung = local and b.running and not answering
    fixable = not hung and (any(not p.healthy for p in procs) or (local and not b.running))
    low = stack.low_disk(settings)
    if low is not None:  # first: on a full disk the broker's own failure says little
        problems.insert(0, low)
    unheld, elsewhere = stack.request_holders(
        settings, procs, bootstrap=stack.kafka_address(settings) if answering or not local else None
    )
    if unheld is not None:
        problems.append(unheld)
    foreign = stack.commands_held_elsewhere(
        settings, procs, bootstrap=stack.kafka_address(settings) if answering or not local else None
    )
    if foreign is not None:
        problems.append(foreign)
    erroring = stack.erroring(procs)
    if erroring is not None:
        problems.append(erroring)
    problems += stack.behind_a_newer_release(procs) + stack.damaged_governance(procs)
    other = [p.name for p in procs if p.same_code is False]
    # Asked only of a broker known to answer, so `ps` stays quick: the local one that answered
    # above, another while a processor talking to it is healthy. Not only while an evaluator
    # runs (a chaos drill and its review: with every evaluator down, the backlog that grows
    # then went unreported).
    reachable = answering if local else any(p.healthy for p in procs)
    address = stack.kafka_address(settings) if reachable else None
    waiting, unasked = stack.requests_waiting(settings, address, procs) if address else (None, None)
    if as_json:
        print_json(
            {
                "broker": {**b.as_dict(), "answering": answering},
                "processors": _json(procs),
                "code": installed_fingerprint(),
                # What the exit status is for, as the table's lines say it (an operator's
                # walkthrough: exit 1 with nothing to tell a monitor why).
                "problems": problems,
                # Requests not answered and committed yet: how far behind the evaluators are.
                "requests_waiting": waiting,
                "notes": [n for n in (elsewhere, unasked) if n is not None],
            }
        )
    else:
        rows: list[list[object]] = [
            ["broker", b.running, answering, "-", "-", "-", b.pid, b.bootstrap, b.log_file]
        ]
        rows += [
            [
                p.name,
                p.running,
                p.healthy,
                _age(p.heartbeat_age),
                _recent(p.recent, p.recent_seconds),
                _code(p.same_code),
                p.pid,
                p.bootstrap,
                p.log,
            ]
            for p in procs
        ]
        print_table(
            [
                "process",
                "running",
                "healthy",
                "heartbeat",
                "decisions",
                "code",
                "pid",
                "kafka",
                "log",
            ],
            rows,
        )
        for problem in problems:
            click.echo(problem, err=True)
        if waiting:
            several = "requests wait" if waiting != 1 else "request waits"
            click.echo(f"{waiting:,} {several} for an evaluator's answer", err=True)
        if elsewhere is not None:  # they answer: a fact, not a problem
            click.echo(elsewhere, err=True)
        if unasked is not None:  # this command's own trouble, not the processors'
            click.echo(f"note: {unasked}", err=True)
        if other:  # healthy or not, it answers with the old code: not a health problem
            click.echo(stack.other_code(other, [p.name for p in procs if p.running]), err=True)
        no_admin = stack.no_admin(settings) if problems and fixable else None
        if no_admin is not None:
            # A developer's machine pointed at its team's ledger with the agent credential
            # alone: `up` would be refused (a red team: this line advised it). First: such a
            # machine has usually no home of its own either (a README check: the missing
            # home's line, which speaks of `ledger up`, came first).
            click.echo(no_admin, err=True)
        elif problems and not settings.home.exists():
            # Nothing ever ran with this home: a mistyped $LEDGER_HOME, or another user's
            # environment (sudo), where `ledger up` would start a second, empty ledger.
            click.echo(
                f"{settings.home} (LEDGER_HOME) does not exist: no ledger has run with this "
                "home; check $LEDGER_HOME (a typo, another user's environment?) before "
                "`ledger up` starts a new, empty ledger there",
                err=True,
            )
        elif problems and not settings.home.is_dir():
            click.echo(
                f"{settings.home} (LEDGER_HOME) is not a directory: no ledger can run there; "
                "check $LEDGER_HOME",
                err=True,
            )
        elif problems and fixable:
            click.echo(
                "`ledger up` starts what is not running and restarts what does not recover",
                err=True,
            )
    if problems:
        raise click.exceptions.Exit(1)


def _json(procs: list[stack.ProcessStatus]) -> list[dict[str, object]]:
    """The processors as ``--json`` shows them: their recent decisions in their heartbeat's
    form (errors a list of ``reason_code``, ``policy``, ``policy_version``, ``count``)."""
    return [
        {**to_jsonable(p), "recent": None if p.recent is None else p.recent.to_json()}
        for p in procs
    ]


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.1f} s ago" if seconds >= 0 else f"{-seconds:.0f} s in the future"


def _recent(counts: DecisionCounts | None, seconds: float | None) -> str:
    return "-" if counts is None else f"{counts.describe()} ({seconds or 0:.0f} s)"


def _code(same: bool | None) -> str:
    return "-" if same is None else "same" if same else "other (an upgrade?)"
