"""Text for messages: :func:`clipped`, the one way a message cuts what a sender wrote."""

from __future__ import annotations

import unicodedata
from typing import Final

__all__ = ["clipped", "quoted", "hidden_at", "INVISIBLE"]


def clipped(text: str, limit: int = 200) -> str:
    """``text`` for a message, shortened when a sender made it huge (the one way a rejection,
    a processor's answer, or a reader's report cuts what the sender wrote)."""
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


def quoted(text: str, limit: int = 200) -> str:
    """``text`` quoted (``repr``) and clipped as :func:`clipped` does, the count being of the
    text's own characters, not of its quotes (a README check: a 129-character id was said to
    be 131). Between the quotes it shows at most ``limit`` characters, escapes included: a
    run of control characters, each written as four, is cut sooner (a review's find: 80 of them
    were quoted as 320)."""
    cut = min(len(text), limit)
    if len(repr(text[:cut])) > limit + 2:  # escapes: the longest prefix that fits, by halving
        low, high = 0, cut  # repr(text[:low]) fits; repr(text[:high]) does not
        while high - low > 1:
            middle = (low + high) // 2
            if len(repr(text[:middle])) <= limit + 2:
                low = middle
            else:
                high = middle
        cut = low
    shown = repr(text[:cut])
    return shown if cut == len(text) else f"{shown}… ({len(text)} characters)"


INVISIBLE: Final = (
    (0x00AD, 0x00AD),  # soft hyphen
    (0x034F, 0x034F),  # combining grapheme joiner
    (0x061C, 0x061C),  # Arabic letter mark
    (0x115F, 0x1160),  # Hangul fillers
    (0x17B4, 0x17B5),  # Khmer inherent vowels
    (0x180B, 0x180F),  # Mongolian variation selectors, vowel separator
    (0x200B, 0x200F),  # zero-width space, joiners, bidi marks
    (0x2028, 0x202E),  # line and paragraph separators, bidi embeddings and overrides
    (0x2060, 0x206F),  # word joiner, invisible operators, bidi isolates
    (0x2800, 0x2800),  # braille blank
    (0x3164, 0x3164),  # Hangul filler
    (0xFE00, 0xFE0F),  # variation selectors
    (0xFEFF, 0xFEFF),  # zero-width no-break space
    (0xFFA0, 0xFFA0),  # halfwidth Hangul filler
    (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3),  # shorthand format controls
    (0x1D173, 0x1D17A),  # musical format controls
    (0xE0000, 0xE0FFF),  # tags, variation selectors supplement
)
"""Characters that show as nothing, or as a blank, beyond the C and Z categories: Unicode's
default-ignorable code points, the Hangul fillers and the braille blank (a review got a deny
rule comparing with a Hangul filler approved as easily as with a zero-width space)."""

_JOINERS: Final = frozenset("\u200c\u200d")

_JOINING_SCRIPTS: Final = (
    (0x0600, 0x08FF),  # Arabic (Persian, Urdu …), Syriac, Thaana, NKo and their supplements
    (0x0900, 0x0DFF),  # Indic scripts (Devanagari … Sinhala)
    (0x0F00, 0x109F),  # Tibetan, Myanmar
    (0x1780, 0x17FF),  # Khmer
)
"""Scripts in which a zero-width joiner or non-joiner is part of spelling, between two of
their letters."""


def _in(code: int, ranges: tuple[tuple[int, int], ...]) -> bool:
    return any(low <= code <= high for low, high in ranges)


def _script_of(code: int) -> tuple[int, int] | None:
    return next((r for r in _JOINING_SCRIPTS if r[0] <= code <= r[1]), None)


def _emoji(code: int) -> bool:
    """A pictograph that joins into emoji sequences or takes a presentation selector."""
    return code >= 0x1F000 or 0x2100 <= code <= 0x2BFF or code in (0xA9, 0xAE, 0x3030, 0x303D)


def _cjk(code: int) -> bool:
    return (
        0x3040 <= code <= 0x30FF  # kana
        or 0x3400 <= code <= 0x4DBF
        or 0x4E00 <= code <= 0x9FFF
        or 0xAC00 <= code <= 0xD7AF  # Hangul syllables
        or 0xF900 <= code <= 0xFAFF
        or 0xFF00 <= code <= 0xFFEF  # full- and halfwidth forms
        or 0x20000 <= code <= 0x3134F
    )


def _invisible(code: int) -> bool:
    return _in(code, INVISIBLE)


def _writing(text: str, at: int) -> bool:
    """Is the invisible ``text[at]`` part of writing a script or an emoji, by what is on
    either side of it (never by another such character: a review chained them to hide one
    after any non-ASCII letter)? A joiner between two letters of one joining script, or
    between two emoji (the first perhaps with its selector or skin tone); a presentation
    selector after an emoji or in a keycap (``1`` FE0F U+20E3); a tag in a flag's sequence
    (after U+1F3F4, up to its U+E007F); an ideographic variation selector after a CJK
    ideograph; the ideographic space beside CJK text."""
    code = ord(text[at])
    prev = ord(text[at - 1]) if at > 0 else None
    follow = ord(text[at + 1]) if at + 1 < len(text) else None
    if text[at] in _JOINERS:
        if prev is None or follow is None:
            return False
        script = _script_of(prev)
        if script is not None and _script_of(follow) == script:
            return True
        base = prev
        if (prev == 0xFE0F or 0x1F3FB <= prev <= 0x1F3FF) and at > 1:
            base = ord(text[at - 2])  # an emoji's selector or skin tone before the joiner
        return _emoji(base) and _emoji(follow)
    if code in (0xFE0E, 0xFE0F):
        keycap = prev is not None and chr(prev) in "0123456789#*" and follow == 0x20E3
        return keycap or (prev is not None and _emoji(prev))
    if 0xE0020 <= code <= 0xE007F:
        start = at
        while start > 0 and 0xE0020 <= ord(text[start - 1]) <= 0xE007F:
            start -= 1
        end = at
        while end + 1 < len(text) and 0xE0020 <= ord(text[end + 1]) <= 0xE007E:
            end += 1
        closed = ord(text[end]) == 0xE007F or (
            end + 1 < len(text) and ord(text[end + 1]) == 0xE007F
        )
        return start > 0 and ord(text[start - 1]) == 0x1F3F4 and closed
    if 0xE0100 <= code <= 0xE01EF:
        return prev is not None and _cjk(prev)
    if code == 0x3000:
        return (prev is not None and _cjk(prev)) or (follow is not None and _cjk(follow))
    return False


def hidden_at(text: str, at: int) -> bool:
    """Is ``text[at]`` a character a reader does not see as what it is: a control or format
    character, a space other than the plain one, a default-ignorable one (:data:`INVISIBLE`)?
    Tab and line breaks are layout, not hidden; joiners, selectors and tags that are part of
    writing a script or an emoji (:func:`_writing`) are not hidden."""
    char = text[at]
    if char in " \t\n\r":
        return False
    code = ord(char)
    if not (unicodedata.category(char)[0] in "CZ" or _invisible(code)):
        return False
    return not _writing(text, at)
