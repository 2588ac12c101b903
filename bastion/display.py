"""Text from users (commands, tool arguments, reasons) made safe to put on another person's terminal.

An attacker who controls a command line controls what an approver's screen shows unless escape
sequences, control characters and bidirectional overrides are removed first (DESIGN §5).
"""

from __future__ import annotations

import re
import unicodedata

# ESC-introduced sequences: CSI (ESC [ ... final), OSC/DCS/SOS/PM/APC (ESC ] P X ^ _ ... BEL or ST),
# and the two- or three-byte escapes (ESC ( B, ESC 7, ...). The 8-bit C1 forms (0x9B CSI, 0x9D OSC, ...)
# are matched the same way; an unterminated string sequence is removed up to the end of the text.
_ESCAPE = re.compile(
    r"""
    (?:\x1b\[|\x9b)[\x30-\x3f]*[\x20-\x2f]*[\x40-\x7e]?       # CSI
    | (?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f]).*?(?:\x07|\x1b\\|\x9c|$)  # OSC, DCS, SOS, PM, APC
    | \x1b[\x20-\x2f]*[\x30-\x7e]?                              # other escapes
    """,
    re.VERBOSE | re.DOTALL,
)
NEWLINE_MARK = "\u23ce"  # ⏎: a newline in a one-line display


def sanitize_for_display(text: str, keep_newlines: bool = False) -> str:
    """Strip escape sequences and control/format characters; tabs become spaces, newlines ⏎."""
    text = _ESCAPE.sub("", text).replace("\r\n", "\n")
    out: list[str] = []
    for char in text:
        if char == "\t":
            out.append(" ")
        elif char in "\n\r\u2028\u2029":
            out.append("\n" if keep_newlines else NEWLINE_MARK)
        elif unicodedata.category(char) not in ("Cc", "Cf", "Cs", "Co", "Cn"):
            out.append(char)
    return "".join(out)
