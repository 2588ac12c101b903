"""The `bastion` command: its group, init, serve and demo; every other command group has a module of its own here."""

from __future__ import annotations

import json
from pathlib import Path

import click

from bastion import config as config_mod
from bastion.cli.approvals import approvals
from bastion.cli.audit import audit
from bastion.cli.cert import cert
from bastion.cli.dev_idp import dev_idp
from bastion.cli.login import login, ssh_config
from bastion.cli.policy import policy
from bastion.cli.sessions import sessions
from bastion.cli.support import config_option, config_path_option, fail, open_store
from bastion.control.approvals import ApprovalError
from bastion.control.grant_key import load_grant_secret
from bastion.identity.ca import Authorities


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mcp-bastion")
def main() -> None:
    """SSH bastion for MCP hosts: ssh -J bastion mcp-host, recorded."""


@main.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def init(settings: config_mod.Settings, as_json: bool) -> None:
    """Create the state directory and the CA and audit keys (idempotent)."""
    state_dir = settings.server.state_dir
    created = Authorities.init(state_dir)
    authorities = Authorities(state_dir)
    store = open_store(settings)
    if created:
        store.log("ca.init", state_dir=str(state_dir), created=created)
    store.close()
    lines = {
        "state_dir": str(state_dir),
        "created": created,
        "known_hosts": authorities.known_hosts_line(),
        "trusted_user_ca_keys": authorities.trusted_user_ca_line(),
    }
    if as_json:
        click.echo(json.dumps(lines, indent=2))
        return
    click.echo(
        f"state directory: {state_dir} ({'created ' + ', '.join(created) if created else 'already initialised'})"
    )
    click.echo("\nClients: add this line to ~/.ssh/known_hosts so that the bastion and every host behind it verify:")
    click.echo(f"  {lines['known_hosts']}")
    click.echo(f"\nTargets: save {state_dir / 'upstream_ca.pub'} on each target and add to its sshd_config:")
    click.echo("  TrustedUserCAKeys /etc/ssh/bastion_upstream_ca.pub")
    click.echo(f"  (the key: {lines['trusted_user_ca_keys']})")


@main.command()
@config_option
def serve(settings: config_mod.Settings) -> None:
    """Run the bastion on [server] listen until SIGINT or SIGTERM."""
    from bastion.service import run

    if not Authorities.is_initialised(settings.server.state_dir):
        Authorities.init(settings.server.state_dir)
    try:
        load_grant_secret(settings.server.state_dir)  # made now, so that a problem with it is one line here
    except (ApprovalError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    run(settings)


@main.command()
@config_path_option()
def demo(config_path: str | None) -> None:
    """Run the bastion on its defaults with local demo targets (needs root and sshd)."""
    from bastion.demo.run import run_demo
    from bastion.demo.targets import TargetError

    path = Path(config_path) if config_path else config_mod.default_path()
    if not path.is_file():
        fail(f"{path}: no such configuration file; pass -c FILE")
    try:
        run_demo(path)
    except (TargetError, config_mod.ConfigError) as exc:
        fail(str(exc))


main.add_command(cert)
main.add_command(sessions)
main.add_command(audit)
main.add_command(login)
main.add_command(ssh_config)
main.add_command(dev_idp)
main.add_command(policy)
main.add_command(approvals)
