"""Masking of secrets and personal data in output, before the client or the recording sees it.

A `Masker` is compiled once from the `[masking]` settings and shared; each output stream gets its
own `MaskingStream`: bytes in, masked bytes out, holding back only the bytes that could still be the
start of a secret. Masking a whole buffer and feeding it in any pieces give the same bytes.

    masker = Masker.from_settings(settings.masking)
    stdout = masker.stream()
    client.write(stdout.feed(chunk))      # on every chunk
    client.write(stdout.flush())          # when idle for `idle_release`, and at EOF

See docs/design/0006-masking.md for the replacement format, the delays and what is caught.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from bastion.masking.packs import BLOCK_STEP, PACKS, Detector
from bastion.masking.scan import Prefilter, Scan, best_prefilter
from bastion.masking.terminal import LONGEST_SEQUENCE, Replacement, TerminalView

if TYPE_CHECKING:
    from bastion.masking.config import MaskingSettings

__all__ = ["PACKS", "Masker", "MaskingStream"]

STEP = 64 * 1024  # larger pieces are masked in steps of this size (measured fastest: bench/masking)
HELD_LIMIT = 262144  # held bytes past this are released at once (only escape sequences can pile up so)


class Masker:
    """The compiled detectors; immutable, so one is shared by every session and thread."""

    def __init__(self, detectors: Sequence[Detector], prefilter: Prefilter | None = None) -> None:
        self.detectors = tuple(detectors)
        self.families = tuple(sorted({detector.family for detector in self.detectors if detector.family is not None}))
        self.prefilter = prefilter if prefilter is not None else best_prefilter(self.families)
        self.context = max((detector.shape.lookbehind for detector in self.detectors), default=1) + 1
        # the most text a stream holds back (an unfinished match, or a step of a private key block) and an
        # unfinished escape sequence after it; escape sequences inside held text come on top, up to HELD_LIMIT
        reaches = [detector.shape.reach for detector in self.detectors]
        reaches += [BLOCK_STEP.reach for detector in self.detectors if detector.opens_block]
        self.longest_hold = max(reaches, default=0) + LONGEST_SEQUENCE

    @classmethod
    def from_settings(cls, settings: MaskingSettings) -> Masker:
        custom = [pattern.detector() for pattern in settings.patterns]
        return cls(custom + [detector for pack in settings.packs for detector in PACKS[pack]])

    def mask(self, data: bytes) -> tuple[bytes, dict[str, int]]:
        """A whole buffer, masked, with the number of maskings of each kind."""
        stream = self.stream()
        masked = stream.feed(data) + stream.flush()
        return masked, stream.counts

    def mask_text(self, text: str) -> str:
        """For text shown to approvers and strings inside JSON (MCP results)."""
        masked, _ = self.mask(text.encode("utf-8", "surrogatepass"))  # JSON strings may hold lone surrogates
        try:
            return masked.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:  # a replacement cut a character that a bounded match ended inside
            return masked.decode("utf-8", "replace")

    def stream(self) -> MaskingStream:
        return MaskingStream(self)


class MaskingStream:
    """One output stream (the stdout or the stderr of one channel): feed chunks, flush when idle."""

    def __init__(self, masker: Masker) -> None:
        self._masker = masker
        self._held = b""  # raw bytes not released yet
        self._context = b""  # visible text just before them, for lookbehinds
        self._in_block = False  # inside a private key block
        self.counts: dict[str, int] = {}  # maskings by detector name so far (never the secret itself)

    @property
    def held(self) -> int:
        """Bytes currently held back."""
        return len(self._held)

    def feed(self, data: bytes) -> bytes:
        """Masked bytes that are safe to release now (possibly b"")."""
        if not data:
            return b""
        # in steps that stay in the CPU's cache: what is released and held is the same as in one step
        out = b"".join([self._step(data[at : at + STEP]) for at in range(0, len(data), STEP)])
        if len(self._held) > HELD_LIMIT:  # a possible secret padded with escape sequences: give up holding
            out += self.flush()
        return out

    def _step(self, data: bytes) -> bytes:
        return self._release(self._held + data if self._held else data, final=False)

    def flush(self) -> bytes:
        """Everything held, masked as if the output ended here (on idle and at EOF)."""
        if not self._held:
            return b""
        return self._release(self._held, final=True)

    def _release(self, raw: bytes, final: bool) -> bytes:
        masker = self._masker
        view = TerminalView(raw, final)
        start = len(self._context)
        text = self._context + view.text
        scan = Scan(masker.detectors, masker.prefilter, text, start, final)
        result = scan.run(self._in_block)
        for name in result.masked:
            self.counts[name] = self.counts.get(name, 0) + 1
        release = result.release - start
        replacements = [Replacement(r.start - start, r.end - start, r.text) for r in result.replacements]
        out = view.render(replacements, release)
        self._held = raw[view.release_offset(release) :]
        self._context = text[max(0, result.release - masker.context) : result.release]
        self._in_block = result.in_block
        return out
