"""`bastion cert issue` and `bastion cert revoke`: an operator's offline issuance and revocation."""

from __future__ import annotations

import getpass
import json
from pathlib import Path

import asyncssh
import click

from bastion import config as config_mod
from bastion.cli.support import config_option, ensure_authorities, fail, open_store


@click.group()
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
