"""Value types shared by every configuration section: durations, addresses, names, paths.

Sections defined next to the code that uses them (policy rules, masking, identity issuers)
subclass `Section` so that every table in bastion.toml behaves the same way.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationInfo

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """'90s', '15m', '1h30m', '100ms', '2d' -> seconds. Raises ValueError with what is expected."""
    expected = 'expected a duration such as "30s", "15m", "8h", "1h30m" or "100ms"'
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{expected}, got {text!r}")
    compact = text.strip().replace(" ", "")
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(compact):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if pos != len(compact) or pos == 0:
        raise ValueError(f"{expected}, got {text!r}")
    if total <= 0:
        raise ValueError(f"expected a positive duration, got {text!r}")
    return total


def parse_address(text: str) -> tuple[str, int]:
    """'10.0.0.5:22', 'host.example:2222', '[::1]:22' -> (host, port)."""
    expected = 'expected "host:port" such as "10.0.0.5:22" or "[::1]:22"'
    if not isinstance(text, str):
        raise ValueError(f"{expected}, got {text!r}")
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)|([^:\[\]\s]+):(\d+)", text.strip())
    if not match:
        raise ValueError(f"{expected}, got {text!r}")
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    if not 0 < port < 65536:
        raise ValueError(f"expected a port from 1 to 65535, got {port}")
    return host, port


def _duration(value: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        raise ValueError(f'expected a duration as a string such as "{value}s", got {value!r}')
    return parse_duration(value)


def _address(value: Any) -> tuple[str, int]:
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return str(value[0]), int(value[1])
    return parse_address(value)


Duration = Annotated[float, BeforeValidator(_duration)]
Address = Annotated[tuple[str, int], BeforeValidator(_address)]
LOGIN_NAME = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}\Z")
HOST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,252}\Z")


def resolve_path(value: str, info: ValidationInfo) -> Path:
    base = Path((info.context or {}).get("base_dir", "."))
    path = Path(os.path.expanduser(value))
    return path if path.is_absolute() else (base / path)


class Section(BaseModel):
    """A configuration table: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)
