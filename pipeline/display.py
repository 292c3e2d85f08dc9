"""Data shown to people in a terminal: printed, never obeyed.

Event ids, feature names and values, attributes, reasons: anything that came from a record or
from Redis may hold terminal escapes (an OSC title change, a screen clear, an 8-bit CSI),
right-to-left overrides that make ``x5<RLO>gnp.exe`` read as "x5exe.png", or Rich markup
(``[/]`` raises MarkupError, ``[link=...]`` becomes a link). Every command prints such data
through :func:`shown` (plain text) or :func:`literal` (a Rich renderable that is never parsed
for markup or emoji codes), so the rule lives here only.
"""

from __future__ import annotations

import re

from rich.text import Text

# Control characters (C0 but none spared, DEL, C1), bidi embeddings, overrides, isolates and
# marks, and the Unicode line and paragraph separators (a fake new line in a log or a table).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]")


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def shown(value: object, newlines: bool = False) -> str:
    """``value`` as text a terminal prints as it reads: unsafe characters as visible escapes.

    ``newlines`` keeps line ends, for a message of several lines (a config error's fields).

    >>> shown("evil\\x1b]0;pwned\\x07\\x1b[2J")
    'evil\\\\x1b]0;pwned\\\\x07\\\\x1b[2J'
    >>> print(shown("x5\\u202egnp.exe\\u202c"), shown(7), shown("line\\nbreak"))
    x5\\u202egnp.exe\\u202c 7 line\\x0abreak
    >>> print(shown("two\\nlines\\r", newlines=True))
    two
    lines\\x0d
    """
    text = value if isinstance(value, str) else str(value)
    if newlines:
        return "\n".join(_UNSAFE.sub(_escaped, line) for line in text.split("\n"))
    return _UNSAFE.sub(_escaped, text)


def literal(value: object, style: str = "", newlines: bool = False) -> Text:
    """:func:`shown` for Rich: a Text is printed as is, so ``[/]`` or ``:warning:`` stay text.

    >>> from rich.console import Console
    >>> Console(width=40).print(literal("[/] [link=https://x.example]a[/link] :warning:"))
    [/] [link=https://x.example]a[/link] :warning:
    """
    return Text(shown(value, newlines), style=style)
