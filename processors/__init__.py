"""The Faust stream processors: ``command_processor`` (the single writer of governance events)
and ``evaluator`` (answers evaluation requests). Each module builds its app with ``create_app``
and runs as ``python -m processors.<name>``. The evaluator's request path is two modules of its
own: ``request_handler`` (a request record in, the records to write out: no I/O) and
``request_loop`` (batches from and to Kafka on a thread, commits after acknowledgements); the
command processor's work on a command record is ``command_handler`` (no I/O either).
``outputs`` holds the records a handler returns, their size limit and the counters,
``common`` holds what the processors share, ``dead_letters`` the one dead-letter envelope and
code table, ``inflight`` the markers that keep a poison record from crash-looping a processor,
``heartbeat`` their health, ``run`` the worker entry point.

Nothing is imported here: a worker loads only its own module (no global Faust app).
"""

__all__: list[str] = []
