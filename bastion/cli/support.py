"""What every `bastion` command shares: loading the configuration, failing in one line, the store."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import asyncssh
import click

from bastion import config as config_mod
from bastion import storage
from bastion.display import sanitize_for_display
from bastion.identity.ca import Authorities
from bastion.storage import Store

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str) -> NoReturn:
    """One line on stderr and exit 1; what the message quotes (a path, a stored id, a bundle's text) is shown
    through the sanitiser, so it can neither break the line nor drive the terminal."""
    click.echo(f"bastion: {sanitize_for_display(message)}", err=True)
    sys.exit(1)


def shown(value: object) -> str:
    """Stored or user-chosen text as one line that is safe on a person's terminal: control characters,
    escape sequences and bidirectional overrides made visible, nothing deleted (docs/architecture.md,
    "Text people see"). For tables and plain-text output."""
    return sanitize_for_display(value if isinstance(value, str) else str(value))


def to_json(value: Any, **kwargs: Any) -> str:
    """JSON for `--json` outputs: ASCII only, so every control character is escaped by JSON itself (no raw
    ESC or BEL reaches a terminal); bytes (hashes) as hex."""
    return json.dumps(value, ensure_ascii=True, default=_json_default, **kwargs)


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def config_path_option(
    help_text: str = f"Configuration file (default: ./{config_mod.DEFAULT_PATH} or ${config_mod.ENV_VAR}).",
) -> Any:
    return click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False), default=None, help=help_text)


def config_option(func: F) -> F:
    """-c/--config on every command; loads the settings and hands them over as `settings`."""

    @config_path_option()
    @functools.wraps(func)
    def wrapper(*args: Any, config_path: str | None, **kwargs: Any) -> Any:
        try:
            settings = config_mod.load(config_path)
        except config_mod.ConfigError as exc:
            fail(str(exc))
        return func(*args, settings=settings, **kwargs)

    return wrapper  # type: ignore[return-value]


def open_store(settings: config_mod.Settings) -> Store:
    return storage.open_store(settings.server.database_path, settings.recording.flush_interval)


def ensure_authorities(settings: config_mod.Settings) -> Authorities:
    state_dir = settings.server.state_dir
    if not Authorities.is_initialised(state_dir):
        fail(f"{state_dir} has no keys yet; run: bastion init -c {settings.path}")
    try:
        return Authorities(state_dir)
    except (OSError, asyncssh.KeyImportError) as exc:
        fail(str(exc))
        raise
