"""Text from users (commands, tool arguments, reasons) made safe to put on another person's terminal.

An attacker who controls a command line controls what an approver's screen shows unless control
characters, escape sequences and bidirectional overrides are neutralised first (docs/architecture.md,
"Text people see"). Nothing is deleted: what was hidden inside an escape sequence is exactly what an
approver must see, so every control or format character is shown as a visible mark instead (ESC as ␛,
others as \\xNN or \\uNNNN), and the rest of the sequence stays readable text.
"""

from __future__ import annotations

import unicodedata

NEWLINE_MARK = "\u23ce"  # ⏎: a newline in a one-line display
ESCAPE_MARK = "\u241b"  # ␛
_HIDDEN = ("Cc", "Cf", "Cs", "Co", "Cn")


def sanitize_for_display(text: str, keep_newlines: bool = False) -> str:
    """Control and format characters made visible; tabs become spaces, newlines ⏎ (or kept)."""
    out: list[str] = []
    for char in text.replace("\r\n", "\n"):
        if char == "\t":
            out.append(" ")
        elif char in "\n\r\u2028\u2029":
            out.append("\n" if keep_newlines else NEWLINE_MARK)
        elif char == "\x1b":
            out.append(ESCAPE_MARK)
        elif unicodedata.category(char) in _HIDDEN:
            code = ord(char)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
        else:
            out.append(char)
    return "".join(out)
