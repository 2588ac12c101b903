"""Masking values rather than streams: strings inside JSON (MCP tool arguments and results) and
environment variables as they are stored; pure."""

from __future__ import annotations

import re
from typing import Any

from bastion.masking.masker import Masker

# environment variables whose values are stored as MASKED_ENV_VALUE, whatever the value looks like
SECRET_NAME = re.compile(r"pass|pwd|secret|token|key|credential|auth|cookie|session", re.IGNORECASE)
MASKED_ENV_VALUE = "[masked:env]"


def mask_json(masker: Masker, value: Any) -> Any:
    """A JSON value with every string in it masked; keys, numbers and structure unchanged."""
    if isinstance(value, str):
        return masker.mask_text(value)
    if isinstance(value, dict):
        return {k: mask_json(masker, v) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_json(masker, v) for v in value]
    return value


def mask_env(masker: Masker, name: str, value: str) -> tuple[str, str]:
    """A variable as stored: a value is masked whole when its name says it is secret (`LC_DB_PASSWORD`)
    or when masking `NAME=value` finds anything in it; the masker alone would mask only a first word."""
    assignment = f"{name}={value}"
    if SECRET_NAME.search(name) or masker.mask_text(assignment) != assignment:
        return masker.mask_text(name), MASKED_ENV_VALUE
    return name, value
