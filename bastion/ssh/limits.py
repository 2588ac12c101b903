"""Limits on what one client can make the bastion hold: a terminal's size, channels per connection, live
sessions per user. Nothing the bastion allocates grows with a number the client chose beyond these."""

from __future__ import annotations

from collections.abc import Callable

# A terminal larger than this is clamped to it (the target and the shell-line screen get the clamped size).
# The screen model costs memory and time per cell drawn: a full 512 x 256 screen is about 23 MB and 0.2 s
# of pyte, 300 x 100 about 4 MB (measured on the 2-core test machine); a 4K display with an 8-pixel font
# shows about 480 x 135 cells.
MAX_COLUMNS = 512
MAX_ROWS = 256


def terminal_size(cols: int, rows: int) -> tuple[int, int]:
    """The size the bastion uses for a requested one: at most MAX_COLUMNS x MAX_ROWS (0 stays "not given")."""
    return min(max(cols, 0), MAX_COLUMNS), min(max(rows, 0), MAX_ROWS)


class ChannelCount:
    """The channels open on one connection, against `[server] max_channels_per_connection`."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0

    def take(self) -> bool:
        """Count one more channel; False (and nothing counted) when the connection already has `limit`."""
        if self.open >= self.limit:
            return False
        self.open += 1
        return True

    def give_back(self) -> None:
        self.open = max(0, self.open - 1)


def once(callback: Callable[[], None] | None) -> Callable[[], None]:
    """`callback`, to be told when a channel is gone; however often that is reported, it runs once."""
    pending = [callback] if callback is not None else []

    def run() -> None:
        while pending:
            pending.pop()()

    return run
