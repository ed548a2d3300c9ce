"""Globs match as :func:`fnmatch.fnmatchcase` does, at a cost their author cannot choose."""

from __future__ import annotations

import fnmatch
import itertools
import pickle
import random

from ledger.core.globs import (
    GlobPlace,
    Globs,
    compile_globs,
    glob_matches,
    glob_problems,
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
