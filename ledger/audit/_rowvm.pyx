# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The export's row decoder in C: reads a record's Avro body into its export row.

An optional accelerator of :mod:`ledger.audit.rows` (which builds the programs this module runs
and keeps the pure-Python decoders it generates as the fallback; a test holds the two to the same
rows). A program is a tree of :class:`Node` made once per schema and topic; :meth:`Row.decode`
walks it over the record's bytes. Anything malformed raises :class:`Malformed` (the caller then
takes the reference path, which says whether the record decodes at all).
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_Keys
from cpython.float cimport PyFloat_FromDouble
from cpython.object cimport PyObject_Repr
from cpython.long cimport PyLong_FromLongLong
from cpython.tuple cimport PyTuple_New, PyTuple_SET_ITEM
from cpython.ref cimport Py_INCREF
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport int64_t, uint64_t
from libc.math cimport isfinite
from libc.string cimport memcpy

import json.encoder

cdef object _quote = json.encoder.encode_basestring  # the C one when the json module has it

cdef enum Kind:
    K_NULL = 0
    K_BOOLEAN = 1
    K_LONG = 2
    K_FLOAT = 3
    K_DOUBLE = 4
    K_STRING = 5
    K_BYTES = 6
    K_ENUM = 7
    K_UNION = 8
    K_ARRAY = 9
    K_MAP = 10
    K_RECORD = 11
    K_CONVERT = 12
    K_DUMPS = 13


KINDS = {
    "null": K_NULL,
    "boolean": K_BOOLEAN,
    "long": K_LONG,
    "float": K_FLOAT,
    "double": K_DOUBLE,
    "string": K_STRING,
    "bytes": K_BYTES,
    "enum": K_ENUM,
    "union": K_UNION,
    "array": K_ARRAY,
    "map": K_MAP,
    "record": K_RECORD,
    "convert": K_CONVERT,
    "dumps": K_DUMPS,
}
"""The node kinds by name (what :class:`Node` takes)."""


class Malformed(ValueError):
    """A record body this decoder cannot read."""


cdef class Node:
    """One value of a program: its kind, its children (union branches, record fields, the item
    of an array or map, the value converted), the record's field names, ``arg`` (an enum's
    symbols, a conversion's function, a ``dumps`` node's Python encoder) and ``empty`` (the
    JSON text of an empty map or array). A ``dumps`` node writes its value's canonical JSON
    text itself, and asks the Python encoder for what it does not write."""

    cdef readonly int kind
    cdef readonly list kids
    cdef readonly tuple keys
    cdef readonly object arg
    cdef readonly object empty
    cdef Py_ssize_t nkids

    def __init__(self, int kind, kids=(), keys=(), arg=None, empty=None):
        if kind < K_NULL or kind > K_DUMPS:
            raise ValueError(f"no node kind {kind}")
        self.kind = kind
        self.kids = list(kids)
        self.keys = tuple(keys)
        self.arg = arg
        self.empty = empty
        self.nkids = len(self.kids)
        for kid in self.kids:
            if not isinstance(kid, Node):
                raise TypeError("a node's children are nodes")
        if kind == K_RECORD and len(self.keys) != self.nkids:
            raise ValueError("a record node names each of its fields")
        if kind in (K_ARRAY, K_MAP, K_CONVERT, K_DUMPS) and self.nkids != 1:
            raise ValueError("this node has exactly one child")
        if kind == K_ENUM and not isinstance(arg, tuple):
            raise TypeError("an enum node's arg is its symbols")
        if kind in (K_CONVERT, K_DUMPS) and not callable(arg):
            raise TypeError("a conversion node's arg is its function")


cdef struct Cursor:
    const unsigned char* data
    Py_ssize_t pos
    Py_ssize_t end


cdef int64_t _long(Cursor* c) except? -1:
    cdef uint64_t acc = 0
    cdef unsigned int shift = 0
    cdef unsigned char b
    while True:
        if c.pos >= c.end:
            raise Malformed("runs past the end of the record")
        b = c.data[c.pos]
        c.pos += 1
        if shift == 63 and b > 1:
            raise Malformed("varint larger than 64 bits")
        acc |= (<uint64_t>(b & 0x7F)) << shift
        if b < 0x80:
            break
        shift += 7
        if shift > 63:
            raise Malformed("varint longer than 10 bytes")
    return <int64_t>((acc >> 1) ^ (<uint64_t>0 - (acc & 1)))


cdef Py_ssize_t _size(Cursor* c) except -1:
    cdef int64_t n = _long(c)
    if n < 0 or n > c.end - c.pos:
        raise Malformed("runs past the end of the record")
    return <Py_ssize_t>n


cdef Py_ssize_t _count(Cursor* c) except -1:
    """An array/map block count (a negative count is followed by the block's byte size)."""
    cdef int64_t n = _long(c)
    if n < 0:
        n = -n
        _long(c)
    if n > c.end - c.pos:  # every item takes at least one byte
        raise Malformed("block count larger than the bytes left")
    return <Py_ssize_t>n


cdef object _read(Node node, Cursor* c):
    cdef int kind = node.kind
    cdef Py_ssize_t n, i, count
    cdef int64_t index
    cdef double d
    cdef float f
    cdef unsigned char b
    cdef object value, key
    cdef list items
    cdef dict mapping
    if kind == K_STRING:
        n = _size(c)
        value = PyUnicode_DecodeUTF8(<const char*>c.data + c.pos, n, NULL)
        c.pos += n
        return value
    if kind == K_LONG:
        return PyLong_FromLongLong(_long(c))
    if kind == K_UNION:
        index = _long(c)
        if index < 0 or index >= node.nkids:
            raise Malformed("no such union branch")
        return _read(<Node>node.kids[index], c)
    if kind == K_NULL:
        return None
    if kind == K_ENUM:
        index = _long(c)
        if index < 0 or index >= len(<tuple>node.arg):
            raise Malformed("no such enum symbol")
        return (<tuple>node.arg)[index]
    if kind == K_BOOLEAN:
        if c.pos >= c.end:
            raise Malformed("runs past the end of the record")
        b = c.data[c.pos]
        if b > 1:
            raise Malformed("not a boolean")
        c.pos += 1
        return b == 1
    if kind == K_DOUBLE:
        if c.pos + 8 > c.end:
            raise Malformed("runs past the end of the record")
        memcpy(&d, c.data + c.pos, 8)  # little-endian, as the machines this runs on
        c.pos += 8
        return PyFloat_FromDouble(d)
    if kind == K_FLOAT:
        if c.pos + 4 > c.end:
            raise Malformed("runs past the end of the record")
        memcpy(&f, c.data + c.pos, 4)
        c.pos += 4
        return PyFloat_FromDouble(<double>f)
    if kind == K_BYTES:
        n = _size(c)
        value = PyBytes_FromStringAndSize(<const char*>c.data + c.pos, n)
        c.pos += n
        return value
    if kind == K_RECORD:
        mapping = {}
        for i in range(node.nkids):
            mapping[(<tuple>node.keys)[i]] = _read(<Node>node.kids[i], c)
        return mapping
    if kind == K_ARRAY:
        items = []
        while True:
            count = _count(c)
            if count == 0:
                return items
            for i in range(count):
                items.append(_read(<Node>node.kids[0], c))
    if kind == K_MAP:
        mapping = {}
        while True:
            count = _count(c)
            if count == 0:
                return mapping
            for i in range(count):
                n = _size(c)
                key = PyUnicode_DecodeUTF8(<const char*>c.data + c.pos, n, NULL)
                c.pos += n
                mapping[key] = _read(<Node>node.kids[0], c)
    if kind == K_CONVERT:
        value = _read(<Node>node.kids[0], c)
        return None if value is None else node.arg(value)
    if kind == K_DUMPS:
        value = _read(<Node>node.kids[0], c)
        if value is None:
            return None
        if node.empty is not None and not value:
            return node.empty
        items = []
        if _canonical(value, items):
            return "".join(items)
        return node.arg(value)
    raise Malformed("unknown node")  # pragma: no cover - Node refuses other kinds


cdef inline void _string(str text, list out) except *:
    """Append ``text`` as a JSON string (``ensure_ascii=False``): as is between quotes when
    nothing in it needs an escape, the most common case, else through the json module."""
    cdef Py_UCS4 ch
    for ch in text:
        if ch < 0x20 or ch == 0x22 or ch == 0x5C:  # a control character, '"' or '\\'
            out.append(_quote(text))
            return
    out.append('"')
    out.append(text)
    out.append('"')


cdef bint _canonical(object value, list out) except -1:
    """Append the canonical JSON text of ``value`` (a JSON form just read: dicts with string
    keys, lists, strings, ints, floats, booleans, None) to ``out``, as ``json.dumps`` with
    sorted keys, ``(",", ":")`` and ``ensure_ascii=False`` writes it. False, with ``out``
    unusable, for anything else (the caller then asks the Python encoder)."""
    cdef object kind = type(value)
    cdef list keys
    cdef Py_ssize_t i
    if kind is str:
        _string(<str>value, out)
    elif value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif kind is int:
        out.append(PyObject_Repr(value))
    elif kind is float:
        if not isfinite(<double>value):
            return False
        out.append(PyObject_Repr(value))
    elif kind is dict:
        if not value:
            out.append("{}")
            return True
        keys = PyDict_Keys(value)
        keys.sort()
        for i in range(len(keys)):
            if type(keys[i]) is not str:
                return False
            out.append("{" if i == 0 else ",")
            _string(<str>keys[i], out)
            out.append(":")
            if not _canonical((<dict>value)[keys[i]], out):
                return False
        out.append("}")
    elif kind is list:
        if not value:
            out.append("[]")
            return True
        for i in range(len(<list>value)):
            out.append("[" if i == 0 else ",")
            if not _canonical((<list>value)[i], out):
                return False
        out.append("]")
    else:
        return False
    return True


cdef class Row:
    """The program of one event type on one topic: ``decode(data, pos, head)`` is the row of a
    record whose body starts at ``pos`` and takes the rest of ``data``: ``head`` (the Kafka
    columns), the event type's name, the record, then one column per ``columns`` entry (the
    index of the schema field it holds, or -1 for NULL)."""

    cdef list fields
    cdef Py_ssize_t nfields
    cdef object name
    cdef long long[:] columns
    cdef Py_ssize_t ncolumns
    cdef object _columns

    def __init__(self, name, fields, columns):
        import array

        self.name = str(name)
        self.fields = list(fields)
        self.nfields = len(self.fields)
        for field in self.fields:
            if not isinstance(field, Node):
                raise TypeError("a row's fields are nodes")
        self._columns = array.array("q", columns)
        self.columns = self._columns
        self.ncolumns = len(self._columns)
        for i in range(self.ncolumns):
            if self.columns[i] < -1 or self.columns[i] >= self.nfields:
                raise ValueError("a column names a field of the row, or -1")

    def decode(self, bytes data, Py_ssize_t pos, tuple head):
        cdef Cursor c
        cdef Py_ssize_t i, nhead, at
        cdef list values = [None] * self.nfields
        cdef tuple row
        cdef object item
        c.data = <const unsigned char*>PyBytes_AS_STRING(data)
        c.end = PyBytes_GET_SIZE(data)
        if pos < 0 or pos > c.end:
            raise Malformed("no body")
        c.pos = pos
        for i in range(self.nfields):
            values[i] = _read(<Node>self.fields[i], &c)
        if c.pos != c.end:
            raise Malformed("bytes after the body")
        nhead = len(head)
        row = PyTuple_New(nhead + 2 + self.ncolumns)
        for i in range(nhead):
            item = head[i]
            Py_INCREF(item)
            PyTuple_SET_ITEM(row, i, item)
        Py_INCREF(self.name)
        PyTuple_SET_ITEM(row, nhead, self.name)
        Py_INCREF(data)
        PyTuple_SET_ITEM(row, nhead + 1, data)
        for i in range(self.ncolumns):
            at = self.columns[i]
            item = None if at < 0 else values[at]
            Py_INCREF(item)
            PyTuple_SET_ITEM(row, nhead + 2 + i, item)
        return row
