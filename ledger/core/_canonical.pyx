# cython: language_level=3, boundscheck=False, wraparound=False
"""The canonical JSON text of a record, in C: what :mod:`ledger.core.chain` hashes.

An optional accelerator (built by Cython when the package is installed with a C compiler):
:func:`text` writes exactly ``canonical_json`` of the record's JSON form
(:mod:`ledger.core.jsonform`: keys sorted, ``(",", ":")``, ``ensure_ascii=False``, instants as
RFC 3339 text, enums as their values, decimals as their text, non-finite floats as text) with
the named field left out. For a value it does not write itself (a subclass of a plain type, a
set, a mapping with keys that are not strings ...) it raises :class:`Unsupported`, and the
caller writes the whole text in Python. Tests hold the two to the same text.
"""

import dataclasses
import enum
import json.encoder
from datetime import datetime as _datetime_type
from datetime import timezone
from decimal import Decimal
from types import MappingProxyType

from cpython.datetime cimport (
    datetime_day,
    datetime_hour,
    datetime_microsecond,
    datetime_minute,
    datetime_month,
    datetime_second,
    datetime_tzinfo,
    datetime_year,
    import_datetime,
)
from cpython.dict cimport PyDict_Keys
from cpython.object cimport PyObject_Repr
from libc.math cimport isfinite, isnan
from libc.stdio cimport snprintf

import_datetime()

cdef object _quote = json.encoder.encode_basestring  # the C one when the json module has it
cdef object _UTC = timezone.utc
cdef object _Enum = enum.Enum
cdef dict _names = {}  # (class, fields left out) -> the members' '{"name":' / ',"name":' texts


class Unsupported(TypeError):
    """A value this writer leaves to the Python one."""


cdef tuple _members(object cls, object skip):
    """The record's member prefixes in sorted key order, and the field names in that order."""
    key = (cls, skip)
    found = _names.get(key)
    if found is None:
        if not (dataclasses.is_dataclass(cls) and isinstance(cls, type)):
            raise Unsupported("not a dataclass")
        left_out = skip if type(skip) is tuple else (skip,)
        names = sorted(f.name for f in dataclasses.fields(cls) if f.name not in left_out)
        prefixes = tuple(
            ("{" if i == 0 else ",") + _quote(name) + ":" for i, name in enumerate(names)
        )
        found = _names[key] = (prefixes, tuple(names))
    return <tuple>found


cdef inline int _string(str text, list out) except -1:
    cdef Py_UCS4 ch
    for ch in text:
        if ch < 0x20 or ch == 0x22 or ch == 0x5C:  # a control character, '"' or '\\'
            out.append(_quote(text))
            return 0
    out.append('"')
    out.append(text)
    out.append('"')
    return 0


cdef int _instant(object value, list out) except -1:
    cdef char buf[40]
    cdef int n
    if datetime_tzinfo(value) is not _UTC or datetime_year(value) < 1000:
        raise Unsupported("an instant not in UTC, or before the year 1000")
    n = snprintf(
        buf,
        sizeof(buf),
        b'"%04d-%02d-%02dT%02d:%02d:%02d.%06dZ"',
        datetime_year(value),
        datetime_month(value),
        datetime_day(value),
        datetime_hour(value),
        datetime_minute(value),
        datetime_second(value),
        datetime_microsecond(value),
    )
    out.append(buf[:n].decode("ascii"))
    return 0


cdef int _object(object value, object skip, list out) except -1:
    cdef tuple found = _members(type(value), skip)
    cdef tuple prefixes = <tuple>found[0]
    cdef tuple names = <tuple>found[1]
    cdef Py_ssize_t i, n = len(names)
    if n == 0:
        out.append("{}")
        return 0
    for i in range(n):
        out.append(prefixes[i])
        _value(getattr(value, names[i]), out)
    out.append("}")
    return 0


cdef int _value(object value, list out) except -1:
    cdef object kind = type(value)
    cdef list keys
    cdef Py_ssize_t i
    cdef double number
    if kind is str:
        return _string(<str>value, out)
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif kind is int:
        out.append(PyObject_Repr(value))
    elif kind is float:
        number = value
        if isfinite(number):
            out.append(PyObject_Repr(value))
        elif isnan(number):
            out.append('"NaN"')
        else:
            out.append('"Infinity"' if number > 0 else '"-Infinity"')
    elif isinstance(value, _Enum):
        return _value(value.value, out)
    elif kind is _datetime_type:
        return _instant(value, out)
    elif kind is dict or kind is MappingProxyType:
        keys = list(value)
        for key in keys:
            if type(key) is not str:
                raise Unsupported("a mapping key that is not a str")
        if not keys:
            out.append("{}")
            return 0
        keys.sort()
        for i in range(len(keys)):
            out.append("{" if i == 0 else ",")
            _string(<str>keys[i], out)
            out.append(":")
            _value(value[keys[i]], out)
        out.append("}")
    elif kind is tuple or kind is list:
        if not value:
            out.append("[]")
            return 0
        for i in range(len(value)):
            out.append("[" if i == 0 else ",")
            _value(value[i], out)
        out.append("]")
    elif kind is Decimal:
        return _string(str(value), out)
    elif kind is bytes:
        return _string(value.hex(), out)
    elif dataclasses.is_dataclass(kind):
        return _object(value, None, out)
    else:
        raise Unsupported(f"a value of type {kind.__name__}")
    return 0


def text(record, skip=None):
    """The canonical JSON text of ``record``'s JSON form, without its field ``skip`` (a name,
    or a tuple of names)."""
    cdef list out = []
    _object(record, skip, out)
    return "".join(out)
