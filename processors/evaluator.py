"""The evaluator: answers evaluation requests with decision traces (DESIGN §6, §8, §12).

Per request: decode → core ``evaluate`` → encode → send (:class:`RequestHandler`, no I/O, in
:mod:`processors.request_handler`).
Everything else is here to make that safe: the governance follower (state from the ledger,
caught up before the first answer), one decision per request id (a bounded memory of answered
ids, seeded for each request partition the worker is assigned, before any of its records is
fetched, from the decisions written after the group's last commit on it, so a crash-restart does
not answer twice: :meth:`RequestLoop._assigned`), dead-letters for undecodable records, an
``error`` decision for a bad request.

The request path runs in batches end to end (:class:`RequestLoop`, in
:mod:`processors.request_loop`): a librdkafka consumer in the
evaluator group fetches up to :data:`~processors.request_loop.BATCH_MAX` requests, the handler answers them all against one
governance state, the answers are produced (many per produce request), and once every one of them
is acknowledged by the broker (``acks=all``) the batch's offsets are committed — once per batch.
It runs on a thread the Faust app starts once the processor is ready and stops with the app;
Faust remains the runtime around it (worker, lifecycle, the governance follower, the heartbeat,
stats). Answers go to the decisions/corrections partition a request names
(``reply_partition``), so a client reads one partition, not every decision of the ledger.

Tamper evidence (DESIGN §9): each worker keeps one hash chain (:mod:`ledger.core.chain`), named
by its evaluator id and a start-up nonce, and every record it writes to the decisions topic is
the chain's next link; the chain's head is published on ``ledger.chain-checkpoints`` every
:data:`~processors.request_handler.CHECKPOINT_EVERY` records, after each second with decisions,
and at a clean shutdown.

Run it: ``python -m processors.evaluator`` (reads ``LEDGER_*`` from the environment), or let
``ledger up`` do it. Scale with more workers (same group) and more request partitions.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from typing import Any

from ledger.codec import default_codec
from ledger.kafka.acls import PROCESSOR_GROUPS
from ledger.kafka.governance import GovernanceFollower
from ledger.kafka.snapshots import snapshot_file
from ledger.settings import Settings
from processors.common import (
    HANDLING_FAILED_EXIT,
    Processor,
    create_faust_app,
    die,
    state_dir,
)
from processors.inflight import InFlight
from processors.outputs import (
    ERRORS_LOGGED,
    DecisionCounts,
    OutputLimit,
    ProcessorStats,
    error_note,
    unreadable_advice,
)
from processors.request_handler import CHECKPOINT_EVERY, RecentIds, RequestHandler
from processors.request_loop import CHECKPOINT_INTERVAL, RequestLoop

__all__ = [
    "create_app",
    "RequestHandler",
    "RecentIds",
    "RequestLoop",
    "main",
    "APP_ID",
    "CHECKPOINT_EVERY",
    "CHECKPOINT_INTERVAL",
    "errors_warning",
]

log = logging.getLogger("ledger.evaluator")
APP_ID = PROCESSOR_GROUPS["evaluator"]
REPORT_EVERY = 30.0
"""Seconds between two stats reports in the evaluator's log."""


def create_app(settings: Settings, *, bootstrap: str, evaluator_id: str | None = None) -> Processor:
    """Build an evaluator app. Several workers of the same app share the request partitions."""
    evaluator_id = evaluator_id or f"evaluator-{socket.gethostname()}-{os.getpid()}"
    app = create_faust_app(settings, app_id=APP_ID, bootstrap=bootstrap, kafka=False)
    codec = default_codec()
    stats = ProcessorStats()
    follower = GovernanceFollower(
        bootstrap=bootstrap,
        topics=settings.topics,
        codec=codec,
        security=settings.security,
        skip=settings.governance_skip,
        compile_deployed=True,  # the request path never waits for a promoted version to compile
        freeze_when_caught_up=True,  # its long-lived state, out of the collector's scans
        # Its next start reads the events after this state, not the whole history; named by
        # its code, so another release's evaluator here keeps a file of its own.
        snapshot=snapshot_file(state_dir(settings, APP_ID)),
    )
    inflight = InFlight(state_dir(settings, APP_ID) / "inflight")
    limit = OutputLimit.for_app(app)
    handler = RequestHandler(
        settings=settings,
        codec=codec,
        evaluator_id=evaluator_id,
        stats=stats,
        limit=limit,
        inflight=inflight,
    )
    requests = RequestLoop(
        bootstrap=bootstrap,
        group_id=app.conf.id,
        settings=settings,
        handler=handler,
        state=lambda: follower.state,
        max_bytes=limit.max_bytes,
        # The broker lists the group's members by it: `ledger ps` tells this worker's from one
        # it did not start. Not the member id: librdkafka answers that on its main thread, and
        # a heartbeat asking while a rebalance waits on the request thread hung the process.
        consumer_config={"client.id": evaluator_id},
    )

    processor = Processor(
        app=app,
        follower=follower,
        stats=stats,
        alive=requests.alive,
        holding=requests.holding,
        out_of_group=requests.out_of_group,
        decisions=lambda: stats.decisions,
        client_id=evaluator_id,
    )

    @app.task
    async def follow_governance() -> None:
        await follower.run()

    @app.task
    async def answer_requests() -> None:
        # Nothing is fetched before the state is complete; then the request loop runs on its
        # thread until the app stops. No read of what the group answered comes first: each
        # partition is read when it is assigned, before any of its records is fetched (see
        # RequestLoop._assigned), and only then is it known which partitions are this worker's.
        # A read of all of them here, before joining, read again at the assignment whatever it
        # brought, and every other partition for nothing: held by the running workers, 60 s of
        # decisions (60,000 ids, 23-37 s under 1,000 requests/s on 2 cores) before a worker
        # added by `ledger up --evaluators 2` answered anything.
        await processor.ready()
        log.info("decisions are chained in %s", handler.chain.chain_id)
        requests.start()
        try:
            while requests.running:
                await asyncio.sleep(0.5)
        finally:
            await asyncio.to_thread(requests.stop)
        if not requests.stopped:
            die(HANDLING_FAILED_EXIT, "the evaluator's request loop stopped")

    @app.on_before_shutdown.connect
    async def stop_requests(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        # Faust sends this first thing when the app stops (before its tasks are cancelled): the
        # loop finishes its batch, writes and commits it, and closes the chain with its final
        # checkpoint (see RequestLoop).
        await asyncio.to_thread(requests.stop)

    reported = DecisionCounts()  # the decisions counted at the last report

    @app.timer(interval=REPORT_EVERY)
    async def report() -> None:
        nonlocal reported
        now = stats.decisions.copy()
        since, reported = now.since(reported), now
        log.info(
            "evaluator stats: %s, batches %d, governance events %d (%d from its snapshot, "
            "%d undecodable); decisions since the last report: %s",
            stats,
            requests.batches,
            follower.from_snapshot + follower.applied,
            follower.from_snapshot,
            follower.undecodable,
            since.describe(),
        )
        warning = errors_warning(since, REPORT_EVERY)
        if warning is not None:
            log.warning("%s", warning)

    return processor


def errors_warning(since: DecisionCounts, seconds: float) -> str | None:
    """The WARNING the stats report logs when ``error`` decisions are at least
    :data:`~processors.outputs.ERRORS_LOGGED` of the decisions ``since`` its last, ``seconds``
    ago: which reason codes, from which policy versions. ``None`` when they are fewer."""
    note = error_note(since, share=ERRORS_LOGGED)
    if note is None:
        return None
    return (
        f"{note} in the last {seconds:.0f} s: a policy version that fails on its requests "
        "(`ledger policy rollback NAME --reason WHY --by ACTOR` restores the version before), "
        "or requests whose facts "
        "it refuses (invalid_facts)" + unreadable_advice(since)
    )


def main() -> None:
    """Entry point of ``python -m processors.evaluator``."""
    from processors.run import run_worker

    run_worker(create_app, name="evaluator")


if __name__ == "__main__":
    main()
