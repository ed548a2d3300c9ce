"""A small persistent (immutable, structure-sharing) mapping for the fold's hot paths.

``fold`` must not copy every principal or every grant per event: replaying a million governance
events would be quadratic. :class:`PMap` is a two-level, 64-way trie of small dicts; an update
copies two 64-slot tuples and one small dict, and shares the rest with the previous version.

Placement is deterministic across processes (CRC-32 for text keys; never the salted
``hash()`` of a str), so iteration order is the same on every worker and in every replay.

A map of at most :data:`FLAT_MAX` items (most principals' grants) is one plain dict instead,
kept in the order the trie would iterate (by slot, then insertion): building it costs a sort of
a few keys instead of two 64-slot levels per key, and no caller can tell the two forms apart.

A subclass keeps its class through ``set``/``delete``/``update``. :class:`BuiltOnRead` is the
one such subclass here: its values may be stored in a raw form and are built, once, when first
read (the state's grants are held as the events that issued them, its principals' records as a
replay's drafts: a replay answers "what held P at T" without building everyone's).
"""

from __future__ import annotations

import zlib
from collections.abc import ItemsView, Iterator, Mapping, ValuesView
from typing import Any, ClassVar, Final, Generic, TypeVar, cast

__all__ = ["PMap", "BuiltOnRead"]

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

FLAT_MAX: Final = 16
"""Maps up to this size are built flat (one dict in trie order); larger ones as the trie."""


def _slot(key: object) -> int:
    """The trie slot of ``key`` as one number that sorts in the trie's iteration order."""
    h = _hash(key)
    return ((h & _MASK) << _BITS) | ((h >> _BITS) & _MASK)


def _flat_order(items: Mapping[K, V]) -> dict[K, V]:
    """``items`` as a dict in the trie's iteration order (stable: insertion order per slot)."""
    crc32 = zlib.crc32
    keyed = []
    for n, (key, value) in enumerate(items.items()):
        # _slot, inlined for the common str key (this runs once per key of a whole replay)
        h = (
            crc32(cast(str, key).encode("utf-8", "surrogatepass"))
            if type(key) is str
            else _hash(key)
        )
        keyed.append((((h & _MASK) << _BITS) | ((h >> _BITS) & _MASK), n, key, value))
    if len(keyed) > 1:
        keyed.sort()  # (slot, n) is unique: keys and values are never compared
    return {key: value for _, _, key, value in keyed}


class PMap(Mapping[K, V], Generic[K, V]):
    """Immutable mapping; :meth:`set` and :meth:`delete` return new maps sharing structure.

    Two levels of 64-way branching end in small dicts, so an update copies two 64-slot tuples
    and one leaf of about ``len / 4096`` entries, whatever the size of the map.
    """

    __slots__ = ("_flat", "_len", "_root")

    def __init__(self, items: Mapping[K, V] | None = None) -> None:
        self._root: tuple[tuple[dict[K, V] | None, ...] | None, ...] = _EMPTY_LEVEL
        self._flat: dict[K, V] | None = {}
        self._len = 0
        if items:
            built = type(self).from_mapping(items)
            self._root, self._flat, self._len = built._root, built._flat, built._len

    @classmethod
    def from_mapping(cls, items: Mapping[K, V]) -> PMap[K, V]:
        """Build a map in one pass (no per-key copying): equal to setting each item in turn.

        Keys land in their leaves in ``items``' order, so iteration order is also the same as
        that of a map built by successive :meth:`set` calls in that order.
        """
        if len(items) <= FLAT_MAX:
            return cls._make_flat(_flat_order(items) if items else {})
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
            if self._flat is not None:
                m: PMap[K, V] = self
                for key, value in items.items():
                    m = m.set(key, value)
                return m
            return self._update_trie(items)
        merged = dict(self.stored_items())
        merged.update(items)
        return type(self).from_mapping(merged)

    def _update_trie(self, items: Mapping[K, V]) -> PMap[K, V]:
        """:meth:`update` of a trie, copying each leaf and level it touches once (successive
        :meth:`set` calls copy them once per item)."""
        root = list(self._root)
        levels: dict[int, list[dict[K, V] | None]] = {}
        leaves: dict[int, dict[K, V]] = {}  # by slot, i * _WIDTH + j
        length = self._len
        for key, value in items.items():
            h = _hash(key)
            i, j = h & _MASK, (h >> _BITS) & _MASK
            leaf = leaves.get(i * _WIDTH + j)
            if leaf is None:
                level = levels.get(i)
                if level is None:
                    level = levels[i] = list(root[i] or _EMPTY_LEVEL)
                old = level[j]
                leaf = leaves[i * _WIDTH + j] = old.copy() if old else {}
                level[j] = leaf
            if key not in leaf:
                length += 1
            leaf[key] = value
        for i, level in levels.items():
            root[i] = tuple(level)
        return type(self)._make(tuple(root), length)

    @classmethod
    def _make(
        cls, root: tuple[tuple[dict[K, V] | None, ...] | None, ...], length: int
    ) -> PMap[K, V]:
        new: PMap[K, V] = cls.__new__(cls)
        new._root = root
        new._flat = None
        new._len = length
        return new

    @classmethod
    def _make_flat(cls, flat: dict[K, V]) -> PMap[K, V]:
        new: PMap[K, V] = cls.__new__(cls)
        new._root = _EMPTY_LEVEL
        new._flat = flat
        new._len = len(flat)
        return new

    def _leaf(self, key: object) -> dict[K, V] | None:
        h = _hash(key)
        level = self._root[h & _MASK]
        if level is None:
            return None
        return level[(h >> _BITS) & _MASK]

    def __getitem__(self, key: K) -> V:
        if self._flat is not None:
            return self._flat[key]
        leaf = self._leaf(key)
        if leaf is None:
            raise KeyError(key)
        return leaf[key]

    def get(self, key: K, default: V | None = None) -> V | None:  # type: ignore[override]  # Mapping.get's overloads, one signature here for speed
        """Faster than Mapping.get: one leaf look-up, no exception."""
        if self._flat is not None:
            return self._flat.get(key, default)
        try:
            leaf = self._leaf(key)
        except TypeError:
            return default
        if leaf is None:
            return default
        return leaf.get(key, default)

    def stored(self, key: K) -> Any:
        """``key``'s value as stored, or ``None``: for a :class:`BuiltOnRead` map, in its raw
        form if not read yet (for code that carries values over, like :meth:`stored_items`)."""
        return PMap.get(self, key)

    def __contains__(self, key: object) -> bool:
        if self._flat is not None:
            return key in self._flat
        try:
            leaf = self._leaf(key)
        except TypeError:
            return False
        return leaf is not None and key in leaf

    def __iter__(self) -> Iterator[K]:
        if self._flat is not None:
            yield from self._flat
            return
        for level in self._root:
            if level is not None:
                for leaf in level:
                    if leaf:
                        yield from leaf

    def __len__(self) -> int:
        return self._len

    def __repr__(self) -> str:
        return f"{type(self).__name__}({dict(self.items())!r})"

    def stored_items(self) -> Iterator[tuple[K, V]]:
        """The items as stored, in iteration order: for a :class:`BuiltOnRead` map, values not
        read yet in their raw form (for :class:`PMap` itself, the same as ``items()``, faster)."""
        if self._flat is not None:
            yield from self._flat.items()
            return
        for level in self._root:
            if level is not None:
                for leaf in level:
                    if leaf:
                        yield from leaf.items()

    def _with_leaf(self, i: int, j: int, leaf: dict[K, V] | None, length: int) -> PMap[K, V]:
        level = list(self._root[i] or _EMPTY_LEVEL)
        level[j] = leaf
        root = list(self._root)
        root[i] = tuple(level)
        return type(self)._make(tuple(root), length)

    def set(self, key: K, value: V) -> PMap[K, V]:
        """A new map with ``key`` bound to ``value``."""
        flat = self._flat
        if flat is not None:
            slot = _slot(key)  # raises for a key of the wrong type, as the trie does
            if key in flat:
                changed = flat.copy()
                changed[key] = value  # keeps its place, as in a trie leaf
                return type(self)._make_flat(changed)
            if len(flat) >= FLAT_MAX:
                grown = dict(flat)
                grown[key] = value  # after every key of its slot: where the trie puts it
                return type(self).from_mapping(grown)
            items = list(flat.items())
            at = next((n for n, (k, _) in enumerate(items) if _slot(k) > slot), len(items))
            items.insert(at, (key, value))
            return type(self)._make_flat(dict(items))
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
        flat = self._flat
        if flat is not None:
            if key not in flat:
                return self
            smaller = flat.copy()
            del smaller[key]
            return type(self)._make_flat(smaller)
        h = _hash(key)
        i, j = h & _MASK, (h >> _BITS) & _MASK
        level = self._root[i]
        old = level[j] if level is not None else None
        if not old or key not in old:
            return self
        leaf = old.copy()
        del leaf[key]
        return self._with_leaf(i, j, leaf or None, self._len - 1)


_ABSENT: Final = object()


class BuiltOnRead(PMap[K, V]):
    """A map whose values may be stored raw (of type :attr:`RAW`) and are built on first read.

    Every read — ``[]``, ``get``, ``values``, ``items``, equality — gives built values; the built
    value then replaces the raw one in the storage (:meth:`_memo_store`), where every map that
    shares that leaf finds it built. That is a cache, not a change: each raw value has exactly
    one built form, so no reader can tell when it was built. :meth:`stored_items` gives what is
    stored, raw or built, for code that only carries values over (a fold copying a record).
    Concurrent readers may both build a value; either result is the same value.
    """

    __slots__ = ()
    RAW: ClassVar[type]
    """The type of the raw form (checked by exact type: one comparison per read)."""

    def _build_value(self, raw: Any) -> V:
        raise NotImplementedError

    def __getitem__(self, key: K) -> V:
        held: Any = PMap.__getitem__(self, key)
        return self._built(key, held) if type(held) is self.RAW else cast(V, held)

    def get(self, key: K, default: V | None = None) -> V | None:  # type: ignore[override]  # Mapping.get's overloads, one signature here for speed
        held: Any = PMap.get(self, key, _ABSENT)
        if held is _ABSENT:
            return default
        return self._built(key, held) if type(held) is self.RAW else cast(V, held)

    def values(self) -> ValuesView[V]:
        self._build_all()
        return super().values()

    def items(self) -> ItemsView[K, V]:
        self._build_all()
        return super().items()

    def _built(self, key: K, raw: Any) -> V:
        value = self._build_value(raw)
        self._memo_store(key, value)
        return value

    def _build_all(self) -> None:
        # One pass over the storage, no look-up per key: for the reads that take every value.
        raw_type = self.RAW
        for leaf in self._leaves():
            for key, held in leaf.items():
                if type(held) is raw_type:
                    leaf[key] = self._build_value(held)  # same key: the dict keeps its shape

    def _leaves(self) -> Iterator[dict[K, V]]:
        """The dicts that store the items (one when flat)."""
        if self._flat is not None:
            yield self._flat
            return
        for level in self._root:
            if level is not None:
                yield from (leaf for leaf in level if leaf)

    def _memo_store(self, key: K, value: V) -> None:
        """Store the built ``value`` in place of ``key``'s raw one, in this map and every map
        sharing its leaf. Assigning an existing key does not resize the dict, so iterations in
        progress (another reader's) are unaffected."""
        if self._flat is not None:
            self._flat[key] = value
            return
        leaf = self._leaf(key)
        if leaf is not None:
            leaf[key] = value
