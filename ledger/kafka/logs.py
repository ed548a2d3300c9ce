"""Log lines of the Kafka libraries, thinned: a broker that is away makes librdkafka, aiokafka
and kafka-python log the same failure many times a second (an agent's stderr took 1,034 lines in
40 s of a broker outage). :class:`RepeatFilter` lets each kind through once per half-minute,
with a count of the ones it held back; the project's own lines are never thinned, but for
the line of each dead letter (:data:`DEAD_LETTER_LOGGER`).

The SDK thins librdkafka's logger (:data:`~ledger.kafka.clients.RDKAFKA_LOGGER`) itself; the
processors put the filter on their log handler, for every library.
"""

from __future__ import annotations

import logging
import time
from typing import Final

__all__ = ["LIBRARY_LOGGERS", "RepeatFilter"]

RDKAFKA_LOGGER: Final = "ledger.kafka.librdkafka"
"""The logger librdkafka's own lines go to (each application decides what to show of them)."""
DEAD_LETTER_LOGGER: Final = "ledger.processors.dead_letters"
"""The processors' line for each record they set aside: the one line of the project's own that
is thinned, per dead-letter code (a red team: 300,000 garbage records of 10 bytes grew the logs
by 69 MB). Every dead letter is on the dead-letters topic, one by one, whatever the log keeps."""
LIBRARY_LOGGERS: Final = ("faust", "aiokafka", "mode", "kafka", RDKAFKA_LOGGER, DEAD_LETTER_LOGGER)
"""The loggers whose repeats are thinned: the libraries', and the dead letters'."""


class RepeatFilter(logging.Filter):
    """Drop a library's log record that repeats one seen less than ``every`` seconds ago.

    Records repeat when they share logger, level and message template; the next one let
    through says how many were dropped. The project's own loggers are never filtered.
    """

    def __init__(self, every: float = 30.0, libraries: tuple[str, ...] = LIBRARY_LOGGERS) -> None:
        super().__init__()
        self.every = every
        self.libraries = libraries
        self._seen: dict[tuple[str, int, str, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self.libraries):
            return True
        if record.levelno == logging.WARNING and _transient(record):
            record.levelno, record.levelname = logging.INFO, "INFO"
            if not logging.getLogger(record.name).isEnabledFor(logging.INFO):
                return False
        key = (record.name, record.levelno, str(record.msg), _facility(record))
        now = time.monotonic()
        last, dropped = self._seen.get(key, (float("-inf"), 0))
        if now - last < self.every:
            self._seen[key] = (last, dropped + 1)
            return False
        if len(self._seen) > 1000:  # messages with varying text would otherwise pile up
            self._seen.clear()
        self._seen[key] = (now, 0)
        if dropped:
            record.msg = (
                f"{record.msg} [and {dropped} more like this in the last {now - last:.0f} s]"
            )
        return True


_TRANSIENT: Final = ("Coordinator load in progress",)
"""librdkafka WARNINGs of a broker that is starting and that librdkafka retries itself: said at
INFO (an agent engineer's walkthrough: a client made within two minutes of a broker restart
printed "Failed to acquire idempotence PID … Coordinator load in progress: retrying" on
stderr, though nothing was wrong)."""


def _transient(record: logging.LogRecord) -> bool:
    """Is ``record`` one of librdkafka's :data:`_TRANSIENT` lines?"""
    if record.name != RDKAFKA_LOGGER:
        return False
    text = record.getMessage()
    return "retrying" in text and any(part in text for part in _TRANSIENT)


def _facility(record: logging.LogRecord) -> str:
    """librdkafka logs every line with one template (facility, client name, text): its facility
    (``FAIL``, ``GETPID`` …) tells its repeats apart."""
    if record.name == RDKAFKA_LOGGER and isinstance(record.args, tuple) and record.args:
        return str(record.args[0])
    return str(getattr(record, "ledger_facility", ""))  # a dead letter's code
