"""Masking of secrets and personal data in output, before the client or the recording sees it.

A `Masker` is compiled once from the `[masking]` settings and shared; each output stream gets its
own `MaskingStream`: bytes in, masked bytes out, holding back only the bytes that could still be the
start of a secret. Masking a whole buffer and feeding it in any pieces give the same bytes.

    masker = Masker.from_settings(settings.masking)
    stdout = masker.stream()
    recording.write(stdout.feed(chunk))   # on every chunk: what is decided
    recording.write(stdout.flush())       # at EOF: everything, masked as if the output ended there

A session uses `release()` and `release_all()` instead, which also say what the client sees, and
`show_early()` for the client (output.py decides when).

See docs/design/0006-masking.md for the replacement format, the delays and what is caught.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

from bastion.masking.hold import strong_prefix_ends_after
from bastion.masking.packs import BLOCK_STEP, PACKS, Detector, label
from bastion.masking.scan import Prefilter, Scan, ScanResult, best_prefilter
from bastion.masking.terminal import LONGEST_SEQUENCE, Replacement, TerminalView

if TYPE_CHECKING:
    from bastion.masking.config import MaskingSettings

__all__ = ["PACKS", "Masker", "MaskingStream", "Released"]

STEP = 64 * 1024  # larger pieces are masked in steps of this size (measured fastest: bench/masking)
HELD_LIMIT = 262144  # held bytes past this are masked whole at once (only escape sequences can pile up so)
OVERFLOW = label("overflow")


class Masker:
    """The compiled detectors; immutable, so one is shared by every session and thread."""

    def __init__(self, detectors: Sequence[Detector], prefilter: Prefilter | None = None) -> None:
        self.detectors = tuple(detectors)
        self.families = tuple(sorted({detector.family for detector in self.detectors if detector.family is not None}))
        self.prefilter = prefilter if prefilter is not None else best_prefilter(self.families)
        self._anchored = all(detector.family is not None for detector in self.detectors)  # prefilter sees all
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
        if not self.detectors:
            return text
        data = text.encode("utf-8", "surrogatepass")  # JSON strings may hold lone surrogates
        if self._anchored and b"\x1b" not in data and not self.prefilter.hits(data, 0):
            return text  # every match starts at (or a bounded lead before) an anchor inside it: none here
        masked, _ = self.mask(data)
        try:
            return masked.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:  # a replacement cut a character that a bounded match ended inside
            return masked.decode("utf-8", "replace")

    def stream(self) -> MaskingStream:
        return MaskingStream(self)


class Released(NamedTuple):
    """What one step lets out: for the recording, and for the client (who may have seen some of it early)."""

    recorded: bytes
    shown: bytes


NOTHING = Released(b"", b"")


class MaskingStream:
    """One output stream (the stdout or the stderr of one channel): feed chunks, flush at the end.

    The recording gets only what is decided: held bytes leave when later output decides them, or at
    `flush()` (EOF), never because of a pause, so no timing of a secret's pieces lets one through. The
    client may be shown held bytes early (`show_early`, masked as if the output ended there); what it
    was shown is not shown again, and a secret that later output completes is masked from there on.
    """

    def __init__(self, masker: Masker) -> None:
        self._masker = masker
        self._held = b""  # raw bytes not released to the recording yet
        self._shown = 0  # ... of which the client has been shown this many, early
        self._shown_masked = False  # ... and what it was shown of them ended inside a replacement
        self._context = b""  # visible text just before them, for lookbehinds
        self._in_block = False  # inside a private key block
        self.counts: dict[str, int] = {}  # maskings by detector name so far (never the secret itself)

    @property
    def held(self) -> int:
        """Bytes currently held back from the recording."""
        return len(self._held)

    @property
    def unshown(self) -> int:
        """Held bytes the client has not been shown either."""
        return len(self._held) - self._shown

    def strong(self) -> bool:
        """Whether what the client has not been shown completes a strong prefix (see `hold`)."""
        return strong_prefix_ends_after(self._held, self._shown)

    def feed(self, data: bytes) -> bytes:
        """Masked bytes that are safe to record now (possibly b"")."""
        return self.release(data).recorded

    def flush(self) -> bytes:
        """Everything held, masked as if the output ended here (at EOF and at the end of the session)."""
        return self.release_all().recorded

    def release(self, data: bytes) -> Released:
        """What `data` lets out, for the recording and for the client (possibly nothing)."""
        if not data:
            return NOTHING
        # in steps that stay in the CPU's cache: what is released and held is the same as in one step
        steps = [self._step(data[at : at + STEP]) for at in range(0, len(data), STEP)]
        if len(self._held) > HELD_LIMIT:  # a possible secret padded with escape sequences: mask it all
            steps.append(self._release(self._held, final=True, overflow=True))
        if len(steps) == 1:
            return steps[0]
        return Released(b"".join(step.recorded for step in steps), b"".join(step.shown for step in steps))

    def _step(self, data: bytes) -> Released:
        return self._release(self._held + data if self._held else data, final=False)

    def release_all(self) -> Released:
        """Everything held, masked as if the output ended here, for the recording and the client."""
        if not self._held:
            return NOTHING
        return self._release(self._held, final=True)

    def show_early(self) -> bytes:
        """For the client only: the held bytes it has not been shown, masked as if the output ended here.
        The recording still holds them, and masks them with whatever comes next."""
        if self._shown >= len(self._held):
            return b""
        view, replacements, _, _ = self._scan(self._held, final=True)
        end = len(view.text)
        shown = view.render(replacements, end, self._shown, self._shown_masked)
        self._shown = len(self._held)
        self._shown_masked = bool(replacements) and replacements[-1].end == end and bool(replacements[-1].text)
        return shown

    def _scan(self, raw: bytes, final: bool) -> tuple[TerminalView, list[Replacement], ScanResult, bytes]:
        masker = self._masker
        view = TerminalView(raw, final)
        start = len(self._context)
        text = self._context + view.text
        result = Scan(masker.detectors, masker.prefilter, text, start, final).run(self._in_block)
        replacements = [Replacement(r.start - start, r.end - start, r.text) for r in result.replacements]
        return view, replacements, result, text

    def _release(self, raw: bytes, final: bool, overflow: bool = False) -> Released:
        if overflow:  # everything visible that is held becomes one replacement; the escape sequences stay
            view = TerminalView(raw, final)
            release = len(view.text)
            replacements = [Replacement(0, release, OVERFLOW)] if release else []
            masked = ["overflow"] if release else []
            context, in_block = b"", self._in_block
        else:
            view, replacements, result, text = self._scan(raw, final)
            release = result.release - len(self._context)
            masked = result.masked
            context = text[max(0, result.release - self._masker.context) : result.release]
            in_block = result.in_block
        for name in masked:
            self.counts[name] = self.counts.get(name, 0) + 1
        recorded = view.render(replacements, release)
        if not self._shown:
            shown = recorded
        elif not replacements or view.raw_start(replacements[0].start) >= self._shown:
            shown = recorded[self._shown :]  # the bytes the client was shown come first, as they were
        else:
            shown = view.render(replacements, release, self._shown, self._shown_masked)
        consumed = view.release_offset(release)
        self._held = raw[consumed:]
        self._shown = max(0, self._shown - consumed)
        self._shown_masked = self._shown_masked and self._shown > 0
        self._context, self._in_block = context, in_block
        return Released(recorded, shown)
