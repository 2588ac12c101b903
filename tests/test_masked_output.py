"""A session's masked output over time: held bytes wait for a pause in the output, not for a clock."""

from __future__ import annotations

import asyncio

import pytest

from bastion.masking.masker import Masker, MaskingSettings
from bastion.masking.output import MaskedOutput

MASKER = Masker.from_settings(MaskingSettings())
LINE = b"2024-05-01 12:00:00 worker started job id="


async def stream(pieces: list[bytes], gap: float, most_held: float = 1.0) -> list[tuple[float, bytes]]:
    """Feeds the pieces `gap` seconds apart, then waits; returns (seconds since the start, bytes) sent."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    sent: list[tuple[float, bytes]] = []
    output = MaskedOutput(MASKER, 0.02, lambda data, _: sent.append((loop.time() - start, data)), {}, most_held)
    for piece in pieces:
        output.feed(piece, False)
        await asyncio.sleep(gap)
    await asyncio.sleep(0.1)
    output.flush()
    return sent


@pytest.mark.parametrize("packets_before", range(5, 25))
def test_a_secret_split_between_packets_of_a_steady_stream_is_masked(packets_before: int) -> None:
    """Packets 2 ms apart, each ending mid-word: every 20 ms something is held, and no flush may cut the
    key that the next packet completes, whichever packet it falls on."""
    pieces = [LINE + b"%d user" % i for i in range(packets_before)]
    pieces[-1] += b" key AKIAIOSF"
    pieces.append(b"ODNN7EXAMPLE ok\n")
    shown = b"".join(data for _, data in asyncio.run(stream(pieces, 0.002)))
    assert b"IOSF" not in shown and shown.endswith(b" key [masked:aws-key] ok\n")


def test_what_is_held_is_released_once_the_output_pauses() -> None:
    sent = asyncio.run(stream([b"$ echo AKIA"], 0.0))
    assert sent[0][1] == b"$ echo "  # at once: it cannot start a secret
    assert sent[1][1] == b"AKIA" and 0.015 <= sent[1][0] < 0.09  # after idle_release (20 ms) of quiet


def test_a_hold_kept_open_by_a_trickle_is_released_after_most_held() -> None:
    """A secret-like run that keeps coming, a byte every 5 ms, never pauses: it is released after
    `most_held`, not held until it ends."""
    pieces = [b"token eyJhbGciOiJIUzI1NiJ9.eyJ"] + [b"a"] * 80
    sent = asyncio.run(stream(pieces, 0.005, most_held=0.15))
    first_held_release = next(when for when, data in sent if b"eyJ" in data)
    assert 0.14 <= first_held_release < 0.35


@pytest.mark.parametrize("run", range(4))
def test_steady_output_longer_than_most_held_is_not_flushed_mid_secret(run: int) -> None:
    """Most packets end in a few held bytes, each time new ones: only a byte held `most_held` long is
    forced out, so a key split between two packets 15 ms apart in a steady stream is masked, also when
    it comes `most_held` after the stream began."""

    async def steady() -> bytes:
        sent: list[bytes] = []
        output = MaskedOutput(MASKER, 0.02, lambda data, _: sent.append(data), {}, most_held=0.2)
        for i in range(36 + run):  # 0.18-0.2 s at 5 ms: the split falls where a clock started at the first
            # hold would force a flush (most_held, 0.2 s)
            output.feed(LINE + b"%d user" % i, False)
            await asyncio.sleep(0.005)
        output.feed(b" key AKIAIOSF", False)
        await asyncio.sleep(0.015)
        output.feed(b"ODNN7EXAMPLE ok\n", False)
        await asyncio.sleep(0.05)
        output.flush()
        return b"".join(sent)

    shown = asyncio.run(steady())
    assert b"IOSF" not in shown and shown.endswith(b" key [masked:aws-key] ok\n")
