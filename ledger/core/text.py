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
"""Zero-width non-joiner and joiner: part of spelling in Persian, Indic scripts and emoji
sequences (between two characters outside ASCII), never between ASCII letters."""


def _invisible(code: int) -> bool:
    return any(low <= code <= high for low, high in INVISIBLE)


def hidden_at(text: str, at: int) -> bool:
    """Is ``text[at]`` a character a reader does not see as what it is: a control or format
    character, a space other than the plain one, a default-ignorable one (:data:`INVISIBLE`)?
    Tab and line breaks are layout, not hidden. A joiner (ZWJ, ZWNJ) between two characters
    outside ASCII, a variation selector or tag after one (an emoji's), and the ideographic
    space beside one, are part of writing those scripts, and not hidden."""
    char = text[at]
    if char in " \t\n\r":
        return False
    code = ord(char)
    before = at > 0 and ord(text[at - 1]) > 0x7F
    after = at + 1 < len(text) and ord(text[at + 1]) > 0x7F
    if char in _JOINERS and before and after:
        return False
    if (
        0xFE00 <= code <= 0xFE0F or 0xE0020 <= code <= 0xE007F or 0xE0100 <= code <= 0xE01EF
    ) and before:
        return False  # an emoji's presentation selector, a flag's tag sequence
    if code == 0x3000 and (before or after):
        return False
    return unicodedata.category(char)[0] in "CZ" or _invisible(code)
