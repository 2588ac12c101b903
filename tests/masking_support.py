"""What the masker's tests share: the default masker, one per prefilter, one without prefilter, and a
stream fed in pieces."""

from __future__ import annotations

import dataclasses

from bastion.masking.config import MaskingSettings
from bastion.masking.masker import Masker
from bastion.masking.scan import CombinedPrefilter, LiteralPrefilter, Prefilter

MASKER = Masker.from_settings(MaskingSettings())
# every detector scanned on its own, without anchors: what the prefilters must agree with
BRUTE_FORCE = Masker([dataclasses.replace(detector, family=None) for detector in MASKER.detectors])


def prefilters() -> list[Prefilter]:
    """The standard library's, and google-re2's when it is installed: both must give the same output."""
    found: list[Prefilter] = [LiteralPrefilter(MASKER.families)]
    try:
        import re2  # type: ignore[import-not-found]
    except ImportError:
        return found
    return [*found, CombinedPrefilter(MASKER.families, re2)]


MASKERS = [Masker(MASKER.detectors, prefilter) for prefilter in prefilters()]


def feed_in_pieces(masker: Masker, data: bytes, cuts: list[int]) -> tuple[bytes, dict[str, int], int]:
    """`data` fed to one stream in pieces cut at `cuts`, then flushed: the output, the counts, and the
    most bytes the stream held."""
    stream = masker.stream()
    out, last, most_held = [], 0, 0
    for cut in [*sorted({min(cut, len(data)) for cut in cuts}), len(data)]:
        out.append(stream.feed(data[last:cut]))
        most_held = max(most_held, stream.held)
        last = cut
    out.append(stream.flush())
    return b"".join(out), stream.counts, most_held
