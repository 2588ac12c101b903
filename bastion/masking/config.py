"""The `[masking]` table: built-in packs, an operator's own patterns, the client's release delays; one-line errors."""

from __future__ import annotations

import re

from pydantic import field_validator, model_validator

from bastion.config_types import Duration, Section
from bastion.masking.packs import PACKS, Detector, label
from bastion.masking.regex import RegexShape, UnsupportedPattern, analyse

__all__ = ["MaskPattern", "MaskingSettings", "compile_pattern"]

PATTERN_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")


def compile_pattern(regex: str) -> RegexShape:
    """An operator's regex, matched on the UTF-8 bytes of output, line by line (`^` and `$`)."""
    try:
        pattern = re.compile(regex.encode("utf-8"), re.MULTILINE)
    except re.error as error:
        raise ValueError(f"invalid regex: {error.msg} at position {error.pos}") from None
    try:
        shape = analyse(pattern, cap_repeats=True)
    except UnsupportedPattern as error:
        raise ValueError(f"regex cannot be used on a stream: {error}") from None
    if shape.shortest == 0:
        raise ValueError("regex matches an empty string; it must match at least one byte")
    return shape


class MaskPattern(Section):
    """One `[[masking.patterns]]` entry: an operator's own kind of secret."""

    name: str
    regex: str
    replacement: str | None = None  # default: [masked:NAME]; a named group `secret` limits what is replaced

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not PATTERN_NAME.fullmatch(value):
            raise ValueError(f"expected lowercase letters, digits, - and _ such as 'ticket-id', got {value!r}")
        return value

    @field_validator("regex")
    @classmethod
    def _regex(cls, value: str) -> str:
        compile_pattern(value)
        return value

    def detector(self) -> Detector:
        shape = compile_pattern(self.regex)
        replacement = self.replacement.encode("utf-8") if self.replacement is not None else label(self.name)
        groups = ("secret",) if "secret" in shape.pattern.groupindex else ()
        return Detector(name=self.name, shape=shape, replacement=replacement, secret_groups=groups)


class MaskingSettings(Section):
    """The `[masking]` table."""

    packs: tuple[str, ...] = ("secrets", "pii")
    patterns: tuple[MaskPattern, ...] = ()
    transfers: bool = False  # mask sftp/scp file contents too (off: files are often binary)
    # the client's early release of held bytes (the recording waits until they are decided): bytes that
    # start no strong prefix are shown once output has been quiet this long (unset: at once) ...
    idle_release: Duration | None = None
    strong_hold: Duration = 1.0  # ... and a strong prefix (`-----BEGIN`, `AKIA`, `password=`) at most this long

    @field_validator("idle_release")
    @classmethod
    def _idle_release(cls, value: float | None) -> float | None:
        if value is not None and value > 1.0:
            raise ValueError(f"expected at most 1s (typed echo waits this long), got {value:g}s")
        return value

    @field_validator("strong_hold")
    @classmethod
    def _strong_hold(cls, value: float) -> float:
        if value > 10.0:
            raise ValueError(f"expected at most 10s (output that starts a secret waits this long), got {value:g}s")
        return value

    @field_validator("packs")
    @classmethod
    def _known_packs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if name not in PACKS:
                raise ValueError(f"unknown pack {name!r}; valid packs: {', '.join(PACKS)}")
        return value

    @model_validator(mode="after")
    def _unique_names(self) -> MaskingSettings:
        names = [pattern.name for pattern in self.patterns]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"two patterns are named {name!r}; give each pattern its own name")
        return self
