"""A small persistent (immutable, structure-sharing) mapping for the fold's hot paths.

``fold`` must not copy every principal or every grant per event: replaying a million governance
events would be quadratic. :class:`PMap` is a two-level, 64-way trie of small dicts; an update
copies two 64-slot tuples and one small dict, and shares the rest with the previous version.

Placement is deterministic across processes (CRC-32 for text keys; never the salted
``hash()`` of a str), so iteration order is the same on every worker and in every replay.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Mapping
from typing import Final, Generic, TypeVar, cast

__all__ = ["PMap", "EMPTY_PMAP"]

K = TypeVar("K")
V = TypeVar("V")

_BITS: Final = 6
_WIDTH: Final = 1 << _BITS  # 64 branches per level, two levels: 4096 leaf dicts
_MASK: Final = _WIDTH - 1


def _hash(key: object) -> int:
    if type(key) is str:
        return zlib.crc32(key.encode("utf-8", "surrogatepass"))
    if type(key) is int:
        return key & 0xFFFFFFFF
    raise TypeError(f"PMap keys are str or int, not {type(key).__name__}")


_EMPTY_LEVEL: Final[tuple[None, ...]] = (None,) * _WIDTH


class PMap(Mapping[K, V], Generic[K, V]):
    """Immutable mapping; :meth:`set` and :meth:`delete` return new maps sharing structure.

    Two levels of 64-way branching end in small dicts, so an update copies two 64-slot tuples
    and one leaf of about ``len / 4096`` entries, whatever the size of the map.
    """

    __slots__ = ("_len", "_root")

    def __init__(self, items: Mapping[K, V] | None = None) -> None:
        self._root: tuple[tuple[dict[K, V] | None, ...] | None, ...] = _EMPTY_LEVEL
        self._len = 0
        if items:
            built = PMap.from_mapping(items)
            self._root, self._len = built._root, built._len

    @classmethod
    def from_mapping(cls, items: Mapping[K, V]) -> PMap[K, V]:
        """Build a map in one pass (no per-key copying): equal to setting each item in turn.

        Keys land in their leaves in ``items``' order, so iteration order is also the same as
        that of a map built by successive :meth:`set` calls in that order.
        """
        if not items:
            return cls._make(_EMPTY_LEVEL, 0)
        levels: dict[int, list[dict[K, V] | None]] = {}
        crc32 = zlib.crc32
        for key, value in items.items():
            # _hash, inlined for the common str key (this runs once per key of a whole replay)
            if type(key) is str:
                h = crc32(cast(str, key).encode("utf-8", "surrogatepass"))
            else:
                h = _hash(key)
            level = levels.get(h & _MASK)
            if level is None:
                level = levels[h & _MASK] = list(_EMPTY_LEVEL)
            j = (h >> _BITS) & _MASK
            leaf = level[j]
            if leaf is None:
                leaf = level[j] = {}
            leaf[key] = value
        root: list[tuple[dict[K, V] | None, ...] | None] = list(_EMPTY_LEVEL)
        for i, level in levels.items():
            root[i] = tuple(level)
        return cls._make(tuple(root), len(items))

    def update(self, items: Mapping[K, V]) -> PMap[K, V]:
        """A new map with every item of ``items`` set (in order), as successive :meth:`set`."""
        if not items:
            return self
        if len(items) * 8 < self._len:  # a few changes to a big map: share structure
            m: PMap[K, V] = self
            for key, value in items.items():
                m = m.set(key, value)
            return m
        merged = dict(self.items())
        merged.update(items)
        return PMap.from_mapping(merged)

    @classmethod
    def _make(
        cls, root: tuple[tuple[dict[K, V] | None, ...] | None, ...], length: int
    ) -> PMap[K, V]:
        new: PMap[K, V] = cls.__new__(cls)
        new._root = root
        new._len = length
        return new

    def _leaf(self, key: object) -> dict[K, V] | None:
        h = _hash(key)
        level = self._root[h & _MASK]
        if level is None:
            return None
        return level[(h >> _BITS) & _MASK]

    def __getitem__(self, key: K) -> V:
        leaf = self._leaf(key)
        if leaf is None:
            raise KeyError(key)
        return leaf[key]

    def get(self, key: K, default: V | None = None) -> V | None:  # type: ignore[override]
        """Faster than Mapping.get: one leaf look-up, no exception."""
        try:
            leaf = self._leaf(key)
        except TypeError:
            return default
        if leaf is None:
            return default
        return leaf.get(key, default)

    def __contains__(self, key: object) -> bool:
        try:
            leaf = self._leaf(key)
        except TypeError:
            return False
        return leaf is not None and key in leaf

    def __iter__(self) -> Iterator[K]:
        for level in self._root:
            if level is not None:
                for leaf in level:
                    if leaf:
                        yield from leaf

    def __len__(self) -> int:
        return self._len

    def __repr__(self) -> str:
        return f"PMap({dict(self.items())!r})"

    def _with_leaf(self, i: int, j: int, leaf: dict[K, V] | None, length: int) -> PMap[K, V]:
        level = list(self._root[i] or _EMPTY_LEVEL)
        level[j] = leaf
        root = list(self._root)
        root[i] = tuple(level)
        return PMap._make(tuple(root), length)

    def set(self, key: K, value: V) -> PMap[K, V]:
        """A new map with ``key`` bound to ``value``."""
        h = _hash(key)
        i, j = h & _MASK, (h >> _BITS) & _MASK
        level = self._root[i]
        old = level[j] if level is not None else None
        leaf = old.copy() if old else {}
        grew = key not in leaf
        leaf[key] = value
        return self._with_leaf(i, j, leaf, self._len + grew)

    def delete(self, key: K) -> PMap[K, V]:
        """A new map without ``key`` (the same map if it is absent)."""
        h = _hash(key)
        i, j = h & _MASK, (h >> _BITS) & _MASK
        level = self._root[i]
        old = level[j] if level is not None else None
        if not old or key not in old:
            return self
        leaf = old.copy()
        del leaf[key]
        return self._with_leaf(i, j, leaf or None, self._len - 1)


EMPTY_PMAP: Final[PMap[object, object]] = PMap()
