"""The governance history read back from an export: what ``ledger replay --from DIR`` folds.

The export keeps every governance record's bytes (the ``record`` column), so the history is
rebuilt by decoding exactly what the ledger held, in log order, with the same position keys and
offsets as a read from Kafka (:func:`ledger.kafka.governance.read_governance`): replay from an
export and replay from Kafka fold the same events.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from ledger.audit.export import ExportPath, read_manifest
from ledger.codec import Codec, default_codec
from ledger.core.events import GovernanceEvent
from ledger.core.history import HistoryEntry
from ledger.errors import CodecError, ExportError
from ledger.kafka.governance import decode_governance
from ledger.kafka.reading import position_key
from ledger.settings import TopicNames

__all__ = ["load_export_history"]


def load_export_history(
    export_dir: ExportPath, *, codec: Codec | None = None
) -> list[HistoryEntry]:
    """Every governance event of the export at ``export_dir``, in log order.

    Raises :class:`~ledger.errors.ExportError` when the directory holds no export. Records that
    are not governance events are skipped, as a read from Kafka skips them.
    """
    export_dir = Path(export_dir)
    if not export_dir.is_dir():
        raise ExportError(f"{export_dir} is not an export directory (it does not exist)")
    manifest = read_manifest(export_dir)
    if manifest is None:
        raise ExportError(
            f"{export_dir} holds no export (no _manifest.json): run `ledger export --out "
            f"{export_dir}` first"
        )
    codec = codec or default_codec()
    topics = TopicNames(prefix=manifest.prefix)
    wanted = (topics.policy_events, topics.grant_events)
    found: list[tuple[str, int, int, GovernanceEvent]] = []
    for entry in manifest.files:
        if entry["topic"] not in wanted:
            continue
        path = export_dir / str(entry["path"])
        try:
            table = pq.read_table(path, columns=["topic", "partition", "offset", "record"])
        except (OSError, ValueError) as exc:
            raise ExportError(f"cannot read {path}: {exc}") from exc
        columns = table.to_pydict()
        for topic, partition, offset, record in zip(
            columns["topic"],
            columns["partition"],
            columns["offset"],
            columns["record"],
            strict=True,
        ):
            try:
                event = decode_governance(codec, record)
            except CodecError:
                continue
            found.append((topic, partition, offset, event))
    order = {topic: index for index, topic in enumerate(wanted)}
    found.sort(key=lambda item: (order[item[0]], item[1], item[2]))
    return [HistoryEntry(position_key(t, p), o, e) for t, p, o, e in found]
