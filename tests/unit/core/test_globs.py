"""Globs match as :func:`fnmatch.fnmatchcase` does, at a cost their author cannot choose."""

from __future__ import annotations

import fnmatch
import itertools
import pickle
import random
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.core.globs import (
    GlobPlace,
    Globs,
    _meet,
    _tokens,
    compile_globs,
    glob_matches,
    glob_problems,
    globs_share,
    wildcards,
)


def test_every_short_glob_matches_as_fnmatch_does() -> None:
    # Star-only globs are matched with string searches now, the rest by fnmatch's regex: the
    # same answers, over every glob of up to five characters from an alphabet of the tricky
    # ones and every name of up to four from a smaller one.
    alphabet = "ab*?[]!-"
    names = ["".join(t) for n in range(5) for t in itertools.product("ab-]", repeat=n)]
    rng = random.Random(5)
    for n in range(1, 6):
        for pattern in map("".join, itertools.product(alphabet, repeat=n)):
            if n == 5 and rng.random() > 0.05:  # a sample of the 32,768 longest
                continue
            compiled = compile_globs((pattern,))
            for name in names:
                assert compiled.matches(name) == fnmatch.fnmatchcase(name, pattern), (
                    pattern,
                    name,
                )


def test_several_globs_match_a_name_any_of_them_matches() -> None:
    rng = random.Random(7)
    for _ in range(2_000):
        patterns = tuple(
            "".join(rng.choice("ab.*?") for _ in range(rng.randint(0, 6)))
            for _ in range(rng.randint(0, 4))
        )
        name = "".join(rng.choice("ab.") for _ in range(rng.randint(0, 8)))
        expected = any(fnmatch.fnmatchcase(name, p) for p in patterns)
        assert compile_globs(patterns).matches(name) == expected, (patterns, name)


def test_long_star_globs_cost_what_the_name_does_not_what_the_pattern_chooses() -> None:
    # A red team: `refund.*` + 480 `a` + `b*` against 1,000 `a` cost ~0.5 ms a match with
    # fnmatch's regex (its lazy search compares the long part at every position). String
    # searches find each part once: no regex is built for such a glob at all.
    pattern = "refund.*" + "a" * 480 + "b*"
    compiled = Globs((pattern,))
    assert compiled._regex is None and len(compiled._stars) == 1
    assert not compiled.matches("refund." + "a" * 1_000)
    assert compiled.matches("refund.x" + "a" * 480 + "b")
    many = Globs(tuple("x." + "*a" * 509 + f"{i:03d}" for i in range(4)))
    assert many._regex is None  # 509 stars: no regex to compile either
    assert not many.matches("x." + "a" * 1_020) and many.matches("x." + "a" * 600 + "002")


def test_globs_pickle_as_their_patterns() -> None:
    compiled = compile_globs(("refund.*", "db.t?", "exact"))
    again = pickle.loads(pickle.dumps(compiled))
    assert again.patterns == compiled.patterns and again.matches("db.t1")
    assert glob_matches("refund.*", "refund.issue") and not glob_matches("refund.*", "refund")


def test_wildcards_count_each_star_question_mark_and_class() -> None:
    assert [wildcards(p) for p in ("refund.issue", "refund.*", "a?[bc]*", "**")] == [0, 1, 3, 2]


def _problems(pattern: str, place: GlobPlace) -> tuple[str, ...]:
    return glob_problems(
        pattern, place=place, most_wildcards=16, longest_glob=256, longest_class_glob=64
    )


def test_a_class_read_the_shells_or_a_regexs_way_is_refused() -> None:
    # A policy owner's walkthrough: a grant of `refund.[^0-9]*`, meant as "not a digit", was
    # accepted and granted the inverse (fnmatch's class of ^ and the digits).
    assert fnmatch.fnmatchcase("refund.2fa", "refund.[^0-9]*")  # what it would grant
    (said,) = _problems("refund.[^0-9]*", "grant action")
    assert said == "[^…] matches ^ itself here; write [!…] to match any character but those"
    assert _problems("account:[^a]", "grant resource") == (said,)
    for fine in ("refund.[!0-9]*", "a.[!^]", "a[]^]x", "a[!]^]", "a[^b", "a^b", "a[b][^"):
        assert _problems(fine, "grant action") == (), fine  # no class starts with ^ there


def test_every_problem_of_a_pattern_is_told_at_once() -> None:
    # A policy owner's walkthrough: the first limit broken hid the next, two signed round trips.
    wide = "tool." + "?" * 17 + "a" * 60
    assert _problems(wide, "grant action") == (
        "17 wildcards in one pattern; at most 16 (glob_wildcards): use fewer * ? [ ]",
        "82 characters with ? or [...]; at most 64 (glob_class_chars): shorten the fixed part, "
        "or list exact actions",
    )
    long = "x." + "*a" * 17 + "b" * 300
    assert [p.split(" (")[1].split(")")[0] for p in _problems(long, "grant action")] == [
        "glob_wildcards",
        "glob_chars",
    ]


def test_a_limits_advice_fits_where_the_pattern_is_written() -> None:
    # A policy owner's walkthrough: governs was told to use fewer `[ ]` (refused there) and to
    # "name the action or resource"; a grant's resource to "use * there", which widens the
    # authority handed on.
    governs = "\n".join(_problems("x." + "?" * 17 + "a" * 300, "governs"))
    assert "use fewer * ?\n" in governs and "[" not in governs and "resource" not in governs
    assert "characters with ?; at most 64 (glob_class_chars)" in governs
    resource = "\n".join(_problems("account:" + "t" * 70 + "[0-9]*", "grant resource"))
    assert "use * " not in resource
    assert resource.endswith("(glob_class_chars): shorten the fixed part, or list exact resources")


@pytest.mark.parametrize(
    ("a", "b", "shared"),
    [
        ("crm.*.read", "crm.*.write", None),  # their fixed beginnings agree; nothing else does
        ("*.read", "*.write", None),
        ("*.read", "crm.*", "crm.x.read"),
        ("a?c", "*b*", "abc"),
        ("a?", "ab*c", None),  # two characters, and at least three
        ("a*", "*b", "ab"),
        ("refund.*", "refund.issue", "refund.issue"),  # a glob and a name
        ("refund.issue", "refund.issue", "refund.issue"),
        ("refund.issue", "refund.void", None),
        ("*", "", ""),
        ("?*", "", None),
        ("pay.[a-c]*", "pay.[!b]x", "pay.ax"),  # classes, as grants write them
        ("[a-c]", "[!a-c]", None),
        ("[!a]", "[!b]", "c"),
        ("[b-a]*", "*", None),  # a class of no character: the glob matches nothing
        ("x[!]", "x[", None),  # an unclosed [ is a literal
    ],
)
def test_two_globs_share_a_name_exactly_when_one_matches_both(
    a: str, b: str, shared: str | None
) -> None:
    assert globs_share(a, b) == globs_share(b, a) == (shared is not None)
    if shared is not None:
        assert fnmatch.fnmatchcase(shared, a) and fnmatch.fnmatchcase(shared, b)


def _witness_bound(a: str, b: str) -> int:
    """How long the shortest name two globs of literals, ``?`` and ``*`` share (when they share
    one) may be. Each character of a shortest one is taken by a one-character token of at least
    one glob (where both are at a ``*``, the character could be left out), so it has at most
    as many characters as both globs have other than ``*``; and a glob with no ``*`` matches
    names of exactly its length only."""
    if "*" not in a:
        return len(a)
    if "*" not in b:
        return len(b)
    return len(a.replace("*", "")) + len(b.replace("*", ""))


def _names(alphabet: str, longest: int) -> list[str]:
    return ["".join(t) for n in range(longest + 1) for t in itertools.product(alphabet, repeat=n)]


def test_every_pair_of_short_globs_shares_as_trying_every_name_says() -> None:
    # Every glob of up to three characters of `ab*?[]` (classes of one character, `[]]`, an
    # unclosed `[`), against every name of up to four of the same characters. That is a proof
    # for them: a shared name needs no other character (each class is of one character of
    # these), and by _witness_bound none longer than four (three without a `*`, two
    # one-character tokens beside a `*`).
    globs = _names("ab*?[]", 3)
    names = _names("ab*?[]", 4)
    matched = {
        g: sum(1 << k for k, n in enumerate(names) if fnmatch.fnmatchcase(n, g)) for g in globs
    }
    for a in globs:
        for b in globs:
            assert globs_share(a, b) == bool(matched[a] & matched[b]), (a, b)


_GLOB = st.text(alphabet="ab.*?", max_size=5)


@settings(max_examples=400, deadline=None)
@given(_GLOB, _GLOB)
def test_globs_share_as_trying_every_name_up_to_the_bound_says(a: str, b: str) -> None:
    # Names of a, b and `.` suffice (each character is a literal of a glob or taken by `?` or
    # `*`), and none longer than _witness_bound: so trying them all is a proof.
    expected = any(
        fnmatch.fnmatchcase(n, a) and fnmatch.fnmatchcase(n, b)
        for n in _names("ab.", _witness_bound(a, b))
    )
    assert globs_share(a, b) == expected


def test_two_one_character_tokens_meet_as_trying_every_character_says() -> None:
    # Every class of up to three characters of `ab-!]^` (ranges, negation, `]` first), against
    # each other, `?` and each literal, tried on every character up to `c`: those after it lie
    # outside every range written, so `c` stands for them all.
    classes = [t for body in _names("ab-!]^", 3) for t in _tokens(f"[{body}]") if len(t) > 1]
    tokens = [*sorted(set(classes)), "?", "a", "b", "-", "]", "^", "c"]
    chars = [chr(c) for c in range(ord("c") + 1)]

    def chars_of(token: str) -> frozenset[str]:
        return frozenset(c for c in chars if fnmatch.fnmatchcase(c, token))

    matched = {t: chars_of(t) for t in tokens}
    assert len(classes) > 150
    for x in tokens:
        for y in tokens:
            assert _meet(x, y) == bool(matched[x] & matched[y]), (x, y)


def test_globs_of_classes_share_as_trying_every_name_says() -> None:
    # The walk's masks with classes in either glob: globs of up to three tokens (so, by
    # _witness_bound's argument, a shared name of up to four characters), names of `abcd`
    # (`d` outside every class here).
    rng = random.Random(11)
    parts = ["a", "b", "c", "?", "*", "[ab]", "[!a]", "[a-b]", "[!ab]", "[b-c]"]
    globs = sorted(
        {"".join(rng.choice(parts) for _ in range(rng.randint(0, 3))) for _ in range(400)}
    )
    names = _names("abcd", 4)
    matched = {
        g: sum(1 << k for k, n in enumerate(names) if fnmatch.fnmatchcase(n, g)) for g in globs
    }
    for a in globs:
        for b in globs:
            assert globs_share(a, b) == bool(matched[a] & matched[b]), (a, b)


def test_two_globs_at_the_length_limit_share_in_bounded_time() -> None:
    # Two `governs` globs of 256 characters (glob_chars; one with `?` holds at most 64,
    # glob_class_chars) and up to 16 wildcards (glob_wildcards), which share names: ~0.1 ms,
    # far inside the ~0.1 s an overlap note or a takeover check may spend.
    from ledger.core.globwork import GlobWork

    a = ("*" + "ab" * 8) * 15 + "a" * (256 - 15 * 17)
    b = "b" * 100 + "*" + "ab" * 77 + "a"
    assert len(a) == len(b) == 256 and wildcards(a) <= 16 and wildcards(b) <= 16
    assert globs_share(a, b)
    start = time.perf_counter()
    for _ in range(10):
        globs_share(a, b)
    assert (time.perf_counter() - start) / 10 < 0.01  # measured ~0.1 ms
    work = GlobWork(100_000_000)
    assert work.overlap(a, b)
    charged = 100_000_000 - work.left
    assert charged < 1_000_000, charged  # ~0.65 ms charged, tokens read included
    assert GlobWork(charged - 1).overlap(a, b) is False  # what it cannot pay for is not begun
