"""`bastion approvals list | approve ID | deny ID --reason R`: the operator's approvals on the bastion host,
recorded as operator:<unix user>. Approvers use the same commands over SSH (control/approver_commands.py)."""

from __future__ import annotations

import getpass
import sys

import click

from bastion import config as config_mod
from bastion.cli.support import config_option, open_store
from bastion.control.approval_queue import Approvals
from bastion.control.approvals import OPERATOR_PREFIX
from bastion.control.approver_commands import LIST_LIMIT, approvals_command


def operator_identity() -> str:
    """How a decision taken on the bastion host is recorded."""
    return OPERATOR_PREFIX + getpass.getuser()


@click.group()
def approvals() -> None:
    """Approval requests: list, approve, deny (as operator:<you> on the bastion host)."""


def _run(settings: config_mod.Settings, argv: list[str]) -> None:
    store = open_store(settings)
    try:
        queue = Approvals(store, settings.approvals)
        status, text = approvals_command(argv, operator_identity(), (), queue, operator=True)
    finally:
        store.close()
    if status == 0:
        click.echo(text)
    else:
        click.echo(text.splitlines()[0], err=True)
    sys.exit(status)


@approvals.command("list")
@config_option
@click.option("--all", "show_all", is_flag=True, help=f"Also decided and expired requests (the last {LIST_LIMIT}).")
@click.option("--json", "as_json", is_flag=True, help="Print the requests as JSON.")
def approvals_list(settings: config_mod.Settings, show_all: bool, as_json: bool) -> None:
    """Pending requests, oldest first; then: bastion approvals approve ID."""
    _run(settings, ["list", *(["--all"] if show_all else []), *(["--json"] if as_json else [])])


@approvals.command("approve")
@config_option
@click.argument("request_id", type=int)
@click.option("--reason", default="", help="Why (recorded with the decision).")
def approvals_approve(settings: config_mod.Settings, request_id: int, reason: str) -> None:
    """Approve a request (one of the approvals it needs)."""
    _run(settings, ["approve", str(request_id), "--reason", reason])


@approvals.command("deny")
@config_option
@click.argument("request_id", type=int)
@click.option("--reason", required=True, help="Why (required; the requester sees it).")
def approvals_deny(settings: config_mod.Settings, request_id: int, reason: str) -> None:
    """Deny a request; one denial is enough."""
    _run(settings, ["deny", str(request_id), "--reason", reason])
