"""CEL conditions: parsed once with celpy's grammar, type-checked, compiled to one Python function.

A condition is compiled when its policy (or grant) is loaded, never per request: the celpy parse
tree is checked against the declared fact types and translated into the source of a single Python
``lambda f, c, m: ...`` expression, which is compiled once. Evaluating a condition is then one call
of plain Python code, with no tree walking — that is what makes ≥100k decisions/s possible. A
condition in which a side of ``||``/``&&`` other than the last can raise (see *Absent facts*) is
compiled into one function holding that plain expression in a ``try``, and a second, commutative
form run only when the plain one raised: a request that meets no absent value and no fault runs
exactly the plain expression.

Supported subset (anything else is rejected at validation, with its position):

- literals: int (``42``, ``0x2A``), uint (``42u``, treated as int), double (``1.5``), string
  (``"a"``, ``'a'``, raw ``r"..."``, triple-quoted), bool, ``null``, lists ``[a, b]``;
  ``timestamp("2024-01-01T00:00:00Z")`` and ``duration("1h30m")`` with literal arguments;
- fact identifiers, and ``context.name`` for the request's free-form context map (type ``dyn``);
- operators ``! - * / % + < <= > >= == != && || ?: in``;
- ``size(x)``/``x.size()``; ``s.startsWith(t)``, ``s.endsWith(t)``, ``s.contains(t)``,
  ``s.matches("regex")`` (literal pattern, searched anywhere in ``s``; RE2 syntax and semantics,
  as CEL specifies: linear time, no backreferences or lookaround — a pattern RE2 cannot compile is
  rejected when the condition is compiled);
- ``has(fact)`` (is an optional fact present?) and ``has(context.name)``;
- list macros ``list.exists(x, pred)`` and ``list.all(x, pred)``.

Semantics worth knowing:

- **Absent facts.** Reading an absent optional fact or context field is an error, as in CEL; a
  condition whose value depends on one is not true, so its rule does not match. Neither
  ``x == "a"`` nor ``x != "a"`` is true for an absent ``x``; test presence with ``has(x)`` (e.g.
  ``has(reason_code) && reason_code == "fraud"``). ``||`` and ``&&`` are commutative, as CEL
  specifies: ``a || b`` is true if either side is true, even when the other is absent or faults;
  false if both are false; otherwise the error. ``a && b`` is false if either side is false,
  whatever the other; true if both are true; otherwise the error. So ``reason_code == "fraud" ||
  amount > 400`` and ``amount > 400 || reason_code == "fraud"`` both hold for amount 450 without a
  reason code. ``list.exists(x, p)`` and ``list.all(x, p)`` are ``||`` and ``&&`` over the elements
  and absorb errors the same way. When neither side decides and one is a fault, the fault is
  reported (an ``error`` decision), whichever side it is on; ``?:`` and ``!`` pass errors on.
- **Decimals are exact.** Decimal facts are ``Decimal``; numeric literals compared or combined with
  a decimal become ``Decimal`` of their source text, so ``amount < 500`` with amount ``500.00`` is
  false and ``amount == 0.1`` means exactly one tenth. Decimal arithmetic uses a fixed context
  (34 significant digits), never the thread's ambient one.
- **Integers** are CEL's 64-bit ints: an operand or result of arithmetic outside that range, or an
  int outside it compared with a decimal, is a fault (integer overflow). They divide and take
  remainders truncating toward zero, as CEL does.
- **Bools are not numbers**, though Python's are: a ``dyn`` bool (a context value, a grant
  condition's fact) ordered with a number, or in arithmetic, is a fault (``no such overload:
  bool < double``), and it equals no number (``true == 1`` is false, as ``1 == "1"`` is).
- **Run-time faults** (division by zero, overflow, a ``dyn`` context value of the wrong type)
  raise :class:`ConditionFault` with a reason in plain words (``decimal division by zero``); the
  evaluator records an ``error`` decision rather than guessing. A decisive other side of ``||``
  or ``&&`` absorbs a fault as it absorbs absence; nothing absorbs :class:`BudgetExceeded`.

Cost (STYLE §16). Facts are bounded, and so is a condition's text, but a condition can still
multiply them: list macros nest, and whatever a macro's predicate does repeats per element. So
every operation whose work grows with the *data* is metered: the compiled function takes a
:class:`Meter` (one per request, or per policy version a request runs) and charges it *before*
the work, raising :class:`BudgetExceeded` when the budget (``Limits.evaluation_cost``) is spent.
Like Kubernetes' CEL runtime cost, the charge is deterministic — counted from sizes and the
condition's static shape, never timed — so a replay reaches the same decision. A unit is at most
~0.1 µs of evaluator time (5-100 ns measured, whatever the predicate), so the default budget of
1,000,000 stops a request after ~0.1 s at most (a few tenths on a slow machine). A comparison
of two decimals counts as one operation: decimals are held to ``Limits.fact_decimal_digits``
where they arrive (:mod:`ledger.core.facts`), which keeps it near the cost of short ones:

- a list macro: its list's length times its predicate's *weight*, at least one, charged before it
  iterates (a nested macro is charged again on every iteration of the outer one). The weight is
  the predicate's operations counted when it is compiled: one for a comparison, ``!``, a step of
  ``||``/``&&``, a fact or context lookup, ``has``, ``size``, double arithmetic, membership in a
  literal list (eight for an int or ``dyn``, which hashes; one more per 8 elements of a list
  that cannot be hashed); three for a helper call (range-checked integer arithmetic, time
  arithmetic, a ``dyn`` as a bool); twelve for decimal arithmetic (fifteen on a ``dyn``);
  nothing for a nested macro or a metered operation below, which charge when they run. In the
  commutative form a side of ``||``/``&&``, and the element of a macro whose predicate can
  raise, weigh ten more (a thunk; an error raised and absorbed).
  ``l.exists(x, l.exists(y, y == "q0" || … || y == "q194"))`` weighs 389 per inner element: over
  990 elements it stops after three inner lists, where it used to run ~4 s within budget;
- ``contains``: one plus one per 16 characters of the receiver; ``startsWith``/``endsWith``: one
  plus one per 16 characters of the argument;
- ``matches``: 16 per call (the binding's overhead), plus one per 16 UTF-8 bytes of text times
  the pattern's weight (1 + RE2 program size / 8, fixed when compiled);
- ``x in list`` (a list that is not a literal), ``==``/``<``… between two values that are not
  literals, and ``+`` of strings or lists: one plus one per 16 characters or 8 list elements
  (plus one per element when a decimal is looked for in a ``dyn`` list). Texts of equal length
  compare character by character, so a text looked for in a list costs one more per 2,048 of
  its characters per element, and two lists of equal length compared one more per 2,048
  characters of the shorter one's texts;
- a decimal compared with a double: forty (the double is converted exactly, up to ~1,075
  digits, ~4 µs).

Outside macros everything else (fact lookups, arithmetic on numbers, comparisons with a literal,
membership in a literal list, ``size``) costs nothing: each is bounded by the condition's text
and the bounded facts (arithmetic on 34-digit decimals and 64-bit ints), and a condition without
macros or metered operations never touches the meter, which is what keeps the ordinary hot path
at a plain function call.

The package, one concept per module, each importing only those above it (a test enforces it):

- :mod:`.runtime` — faults, the :class:`Meter` and its cost rates, and the helpers the compiled
  functions call by name (the namespace they run in);
- :mod:`.lexical` — reserved names and the decoding of string, duration and timestamp literals;
- :mod:`.syntax` — parsing with celpy's grammar, syntax-error hints, and for the policy linter
  :func:`alternatives` (a condition's ``||``/``&&`` shape) and :func:`unguarded_reads` (what it
  reads that may be absent, outside a ``has()`` guard);
- :mod:`.compiler` — type checking and translation to Python: :func:`compile_condition` and
  its :class:`CompiledCondition`.

This package's public API is :data:`__all__`; the modules' other names are its internals.
"""

from ledger.core.cel.compiler import CompiledCondition, compile_condition
from ledger.core.cel.lexical import RESERVED_NAMES
from ledger.core.cel.lexical import parse_duration as parse_duration
from ledger.core.cel.lexical import parse_timestamp as parse_timestamp
from ledger.core.cel.runtime import (
    DECIMAL_DIGITS_REASON,
    DECIMAL_EXPONENT_REASON,
    INT64_MAX,
    INT64_MIN,
    RULE_CHANGES,
    TYPE_NAMES_OF_PYTHON,
    BudgetExceeded,
    ConditionFault,
    ConditionFn,
    Meter,
    rules_before,
)
from ledger.core.cel.syntax import alternatives, layout_free, unguarded_reads

__all__ = [
    "BudgetExceeded",
    "CompiledCondition",
    "ConditionFault",
    "ConditionFn",
    "Meter",
    "alternatives",
    "layout_free",
    "unguarded_reads",
    "compile_condition",
    "RESERVED_NAMES",
    "TYPE_NAMES_OF_PYTHON",
    "DECIMAL_DIGITS_REASON",
    "DECIMAL_EXPONENT_REASON",
    "INT64_MIN",
    "INT64_MAX",
    "RULE_CHANGES",
    "rules_before",
]
