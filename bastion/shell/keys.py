"""Keys in client input that matter to shell-line gating: Enter, quoted and pasted keys, Ctrl-C; pure."""

from __future__ import annotations

__all__ = ["CLEAR_LINE", "ENTER_KEYS", "INTERRUPT", "PASTE_END", "PASTE_START", "QUOTED_INSERT", "KeyScanner"]

# Ctrl-C: readline drops the whole command, continuation lines included, and draws a fresh
# primary prompt; Ctrl-U would only erase left of the cursor on the current physical line.
CLEAR_LINE = b"\x03"
# Keys that make readline accept the line: Enter (C-m), C-j and C-o (operate-and-get-next).
ENTER_KEYS = frozenset(b"\r\n\x0f")
QUOTED_INSERT = 0x16  # C-v: the next key is inserted literally, even an Enter
PASTE_START = b"\x1b[200~"
PASTE_END = b"\x1b[201~"
INTERRUPT = 0x03


class KeyScanner:
    """Finds Enter keys in client input, skipping pasted text and C-v quoted keys."""

    def __init__(self) -> None:
        self.in_paste = False
        self.quoted = False
        self.escape = b""  # a possible start of a paste marker, split across reads
        self.interrupted = False  # a C-c was typed (not quoted, not pasted)

    def find_enter(self, data: bytes, paste_mode: bool) -> int:
        """The index of the first Enter in data, or -1; state advances over bytes up to it.

        Paste markers count only while the target asked for them: a shell that did not would
        take the Enter keys between them as Enter keys.
        """
        if not paste_mode:
            self.in_paste, self.escape = False, b""
        for index, byte in enumerate(data):
            if self._is_enter(byte, paste_mode):
                return index
        return -1

    def _is_enter(self, byte: int, paste_mode: bool) -> bool:
        if self.quoted:
            self.quoted = False
            return False
        if self.escape and paste_mode:
            self.escape += bytes([byte])
            if self.escape in (PASTE_START, PASTE_END):
                self.in_paste = self.escape == PASTE_START
                self.escape = b""
                return False
            if PASTE_START.startswith(self.escape) or PASTE_END.startswith(self.escape):
                return False
            self.escape = b""  # not a marker: judge this byte on its own
        if byte == 0x1B and paste_mode:
            self.escape = b"\x1b"
            return False
        if self.in_paste:
            return False
        self.quoted = byte == QUOTED_INSERT
        self.interrupted = self.interrupted or byte == INTERRUPT
        return byte in ENTER_KEYS


