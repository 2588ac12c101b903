"""What every `bastion` command shares: loading the configuration, failing in one line, the store."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import asyncssh
import click

from bastion import config as config_mod
from bastion import storage
from bastion.identity.ca import Authorities
from bastion.storage import Store

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str) -> NoReturn:
    click.echo(f"bastion: {message}", err=True)
    sys.exit(1)


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
