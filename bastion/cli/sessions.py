"""`bastion sessions list`: recorded sessions, newest first."""

from __future__ import annotations

import dataclasses
import json
import time

import click

from bastion import config as config_mod
from bastion.cli.support import config_option, open_store


@click.group()
def sessions() -> None:
    """Recorded sessions."""


@sessions.command("list")
@config_option
@click.option("--live", is_flag=True, help="Only sessions still running.")
@click.option("--json", "as_json", is_flag=True)
def sessions_list(settings: config_mod.Settings, live: bool, as_json: bool) -> None:
    """List recorded sessions, newest first."""
    store = open_store(settings)
    found = store.sessions(live=True if live else None)
    store.close()
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(s) for s in found], indent=2))
        return
    if not found:
        click.echo("no sessions" + (" running" if live else " recorded yet"))
        return
    click.echo(f"{'SESSION':<20} {'STARTED':<19} {'USER':<12} {'TARGET':<20} {'WHAT':<30} {'STATUS'}")
    for s in found:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(s.started_at))
        what = (s.kind + (": " + s.command if s.command else "")) or "-"
        status = (
            s.status
            if s.status != "closed"
            else (
                f"exit {s.exit_status}"
                if s.exit_status is not None
                else (f"signal {s.exit_signal}" if s.exit_signal else s.end_reason)
            )
        )
        click.echo(f"{s.id:<20} {started:<19} {s.user:<12} {s.login + '@' + s.target:<20} {what[:30]:<30} {status}")
