"""The `bastion` command: init, serve, cert, login, ssh-config, sessions, audit, demo, dev-idp."""

from __future__ import annotations

import dataclasses
import getpass
import json
import time
from pathlib import Path

import asyncssh
import click

from bastion import config as config_mod
from bastion.cli.audit import audit
from bastion.cli.dev_idp import dev_idp
from bastion.cli.login import login, ssh_config
from bastion.cli.policy import approvals, policy
from bastion.cli.support import config_option, config_path_option, ensure_authorities, fail, open_store
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


@main.group()
def cert() -> None:
    """Issue user certificates (bootstrap and break-glass)."""


@cert.command("issue")
@config_option
@click.option("--user", required=True, help="User name: the certificate's principal.")
@click.option("--group", "groups", multiple=True, help="Group of the user (repeatable).")
@click.option("--ttl", default=None, help="Validity, e.g. 1h (default: [certificates] user_ttl).")
@click.option("--pubkey", required=True, type=click.Path(exists=True, dir_okay=False), help="The user's public key.")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    default=None,
    help="Where to write the certificate (default: KEY-cert.pub beside the public key).",
)
@click.option("--json", "as_json", is_flag=True)
def cert_issue(
    settings: config_mod.Settings,
    user: str,
    groups: tuple[str, ...],
    ttl: str | None,
    pubkey: str,
    output: str | None,
    as_json: bool,
) -> None:
    """Sign a user certificate for PUBKEY, recorded and audited."""
    from bastion.identity.issuance import IssuanceError, issue_certificate

    if not config_mod.LOGIN_NAME.match(user):
        fail(f"--user: expected a login name such as 'alice', got {user!r}")
    try:
        seconds = config_mod.parse_duration(ttl) if ttl else settings.certificates.user_ttl
    except ValueError as exc:
        fail(f"--ttl: {exc}")
    try:
        key = asyncssh.read_public_key(pubkey)
    except (OSError, asyncssh.KeyImportError, ValueError) as exc:
        fail(f"--pubkey: {pubkey} is not an OpenSSH public key: {exc}")
    authorities = ensure_authorities(settings)
    stem = Path(pubkey).name.removesuffix(".pub")
    target = Path(output) if output else Path(pubkey).with_name(f"{stem}-cert.pub")
    store = open_store(settings)
    try:
        record, _ = issue_certificate(settings, store, authorities, user, groups, seconds, key, target, source="cli")
    except IssuanceError as exc:
        fail(str(exc))
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps({**record, "certificate": str(target)}))
    else:
        click.echo(f"{target}: certificate for {user} (serial {record['serial']}, valid {seconds / 3600:g}h)")


@cert.command("revoke")
@config_option
@click.option("--serial", type=int, default=None, help="The certificate's serial number.")
@click.option("--user", default=None, help="Revoke every unexpired certificate of this user.")
@click.option("--reason", default="", help="Why (recorded).")
@click.option("--json", "as_json", is_flag=True)
def cert_revoke(
    settings: config_mod.Settings, serial: int | None, user: str | None, reason: str, as_json: bool
) -> None:
    """Revoke certificates: refused at the next authentication; live sessions end within a second."""
    if (serial is None) == (user is None):
        fail("pass exactly one of --serial N and --user U")
    if user is not None and not config_mod.LOGIN_NAME.match(user):
        fail(f"--user: expected a login name as on the certificates, such as 'alice', got {user!r}")
    store = open_store(settings)
    try:
        if serial is not None and store.certificate(serial) is None:
            fail(f"no certificate with serial {serial} was issued by this bastion")
        revoked = store.revoke(serial=serial, user=user).result()
        if revoked or user is not None:  # a user is revoked even with no live certificate: older tokens stop
            store.log(
                "cert.revoked",
                serials=[r["serial"] for r in revoked],
                user=revoked[0]["user"] if revoked else user,
                reason=reason,
                by=f"operator:{getpass.getuser()}",
            ).result()
    finally:
        store.close()
    if not revoked and serial is not None:
        fail(f"nothing to revoke: serial {serial} has no unrevoked certificate")
    if as_json:
        click.echo(json.dumps(revoked))
        return
    for r in revoked:
        click.echo(f"revoked serial {r['serial']} of {r['user']}")
    if user is not None:
        live = "" if revoked else "no unexpired certificate; "
        click.echo(f"revoked {user}: {live}tokens issued before now will not get a new certificate")


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


@main.group()
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


main.add_command(audit)
main.add_command(login)
main.add_command(ssh_config)
main.add_command(dev_idp)
main.add_command(policy)
main.add_command(approvals)
