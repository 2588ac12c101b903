"""`bastion sessions list`: recorded sessions, newest first."""

from __future__ import annotations

import dataclasses
import time

import click

from bastion import config as config_mod
from bastion.cli.support import config_option, open_store, shown, to_json

WHAT_WIDTH = 30


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
        click.echo(to_json([dataclasses.asdict(s) for s in found], indent=2))
        return
    if not found:
        click.echo("no sessions" + (" running" if live else " recorded yet"))
        return
    click.echo(f"{'SESSION':<20} {'STARTED':<19} {'USER':<12} {'TARGET':<20} {'WHAT':<{WHAT_WIDTH}} {'STATUS'}")
    for s in found:
        # One row per session whatever the user chose to type: every stored field goes through the
        # sanitiser (a newline shows as ⏎, ESC as ␛) before it is padded, so the columns stay aligned.
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(s.started_at))
        what = shown(s.kind + (": " + s.command if s.command else "")) or "-"
        if "mcp_server" in s.extra:  # an MCP stdio server: which one, and how many tool calls
            calls = s.extra.get("mcp_calls")
            what = shown(f"mcp {s.extra['mcp_server']}" + (f" ({calls} calls)" if calls is not None else "")) or "-"
        if len(what) > WHAT_WIDTH:
            what = what[: WHAT_WIDTH - 1] + "…"  # cut, and shown to be cut
        status = (
            s.status
            if s.status != "closed"
            else (
                f"exit {s.exit_status}"
                if s.exit_status is not None
                else (f"signal {s.exit_signal}" if s.exit_signal else s.end_reason)
            )
        )
        click.echo(
            f"{shown(s.id):<20} {started:<19} {shown(s.user):<12} {shown(s.login + '@' + s.target):<20} "
            f"{what:<{WHAT_WIDTH}} {shown(status)}"
        )
