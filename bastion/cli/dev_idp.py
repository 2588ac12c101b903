"""`bastion dev-idp`: a local OpenID provider for the demo and for development. NOT FOR PRODUCTION."""

from __future__ import annotations

import json
import secrets
import signal
import threading
from pathlib import Path
from typing import Any

import click

from bastion.cli.support import fail
from bastion.config import parse_duration
from bastion.demo.devidp import (
    DEFAULT_LISTEN,
    Client,
    DevIdp,
    DevIdpError,
    RunningIdp,
    SigningKey,
    User,
    default_clients,
    load_directory,
    parse_listen,
    parse_user_spec,
    read_secret_file,
    start_dev_idp,
)

BANNER = (
    "bastion dev-idp: development identity provider — NOT FOR PRODUCTION "
    "(no passwords: anyone on this machine can log in as any user)"
)


@click.command("dev-idp", context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--listen",
    default=DEFAULT_LISTEN,
    show_default=True,
    metavar="HOST:PORT",
    help="HOST:PORT on loopback only; port 0 picks a free port (the issuer printed says which).",
)
@click.option(
    "--users",
    "users_file",
    type=click.Path(dir_okay=False),
    help="TOML or JSON file with [users.NAME] groups = [...] (and optionally [clients.ID]).",
)
@click.option(
    "--user", "user_specs", multiple=True, metavar="NAME:GROUP,...", help="A user (repeatable): alice:dev,ops."
)
@click.option("--auto-approve", metavar="USER", help="Approve every device code and login as USER at once (scripts).")
@click.option(
    "--key",
    "key_file",
    type=click.Path(dir_okay=False),
    help="PEM RSA signing key, made (0600) if missing [default: new].",
)
@click.option(
    "--client-id", metavar="ID", default="bastion", show_default=True, help="Public client: device flow, code + PKCE."
)
@click.option(
    "--workload-client-id",
    metavar="ID",
    default="ci-runner",
    show_default=True,
    help="Confidential client: client credentials.",
)
@click.option(
    "--client-secret-file",
    type=click.Path(dir_okay=False),
    help="The workload client's secret [default: new, printed].",
)
@click.option(
    "--workload-group",
    "workload_groups",
    metavar="GROUP",
    multiple=True,
    help="Group in workload tokens (repeatable) [ci].",
)
@click.option("--audience", default="bastion", show_default=True, help="The aud claim of access tokens.")
@click.option(
    "--token-ttl", metavar="DURATION", default="1h", show_default=True, help="Lifetime of access and ID tokens."
)
@click.option(
    "--device-expires-in", metavar="DURATION", default="10m", show_default=True, help="Lifetime of a device code."
)
@click.option(
    "--device-interval", default=5, show_default=True, type=click.IntRange(1, 60), help="Polling interval, s."
)
@click.option("--json", "as_json", is_flag=True, help="Print issuer, users and clients as one JSON line on stdout.")
def dev_idp(
    listen: str,
    users_file: str | None,
    user_specs: tuple[str, ...],
    auto_approve: str | None,
    key_file: str | None,
    client_id: str,
    workload_client_id: str,
    client_secret_file: str | None,
    workload_groups: tuple[str, ...],
    audience: str,
    token_ttl: str,
    device_expires_in: str,
    device_interval: int,
    as_json: bool,
) -> None:
    """Run a local OpenID provider on loopback for the demo and development. NOT FOR PRODUCTION.

    \b
    Then, in another terminal:
      curl -s http://127.0.0.1:9400/.well-known/openid-configuration
      open http://127.0.0.1:9400/device   (approve device logins: pick a user)
    """
    try:
        host, port = parse_listen(listen)
        users, file_clients = _users(users_file, user_specs)
        generated = None if client_secret_file or file_clients is not None else secrets.token_urlsafe(24)
        clients = file_clients
        if clients is None:
            secret = read_secret_file(Path(client_secret_file)) if client_secret_file else generated
            clients = default_clients(client_id, workload_client_id, secret, workload_groups or ("ci",))
        idp = DevIdp(
            users,
            clients,
            auto_approve,
            key=SigningKey.from_file(Path(key_file)) if key_file else None,
            audience=audience,
            token_ttl=_seconds("--token-ttl", token_ttl),
            device_expires_in=_seconds("--device-expires-in", device_expires_in),
            device_interval=device_interval,
        )
        running = start_dev_idp(idp, host, port)
    except DevIdpError as exc:
        fail(str(exc))
    _announce(running, generated, as_json)
    _serve_until_stopped(running)


def _users(users_file: str | None, user_specs: tuple[str, ...]) -> tuple[list[User] | None, list[Client] | None]:
    users: list[User] = []
    clients = None
    if users_file:
        users, clients = load_directory(Path(users_file))
    users += [parse_user_spec(spec) for spec in user_specs]
    return users or None, clients


def _seconds(option: str, text: str) -> int:
    try:
        return max(1, round(parse_duration(text)))
    except ValueError as exc:
        raise DevIdpError(f"{option}: {exc}") from None


def _summary(running: RunningIdp, generated_secret: str | None) -> dict[str, Any]:
    idp = running.idp
    return {
        "issuer": running.url,
        "device_verification_uri": f"{running.url}/device",
        "users": {u.name: list(u.groups) for u in idp.users.values()},
        "clients": [
            {
                "client_id": c.client_id,
                "public": c.is_public,
                "grant_types": sorted(c.grant_types),
                **({"secret": c.secret} if generated_secret and c.secret == generated_secret else {}),
            }
            for c in idp.clients.values()
        ],
        "auto_approve": idp.auto_approve,
        "kid": idp.key.kid,
    }


def _announce(running: RunningIdp, generated_secret: str | None, as_json: bool) -> None:
    summary = _summary(running, generated_secret)
    click.echo(BANNER, err=as_json)
    if as_json:
        click.echo(json.dumps(summary))
        return
    click.echo(f"  issuer        {summary['issuer']}")
    click.echo(f"  device login  {summary['device_verification_uri']}")
    users = ", ".join(f"{name} ({', '.join(groups) or 'no groups'})" for name, groups in summary["users"].items())
    click.echo(f"  users         {users}")
    for client in running.idp.clients.values():
        click.echo(f"  client        {_describe(client, generated_secret)}")
    if summary["auto_approve"]:
        click.echo(f"  auto-approve  every login is approved as {summary['auto_approve']}")
    click.echo("Ctrl-C stops it.")


def _describe(client: Client, generated_secret: str | None) -> str:
    flows = {"authorization_code": "code + PKCE", "client_credentials": "client credentials"}
    names = ", ".join(flows.get(g, "device flow") for g in sorted(client.grant_types))
    if client.is_public:
        return f"{client.client_id} (public: {names}; redirects to http://127.0.0.1:ANY-PORT/)"
    secret = f"secret {client.secret}" if client.secret == generated_secret else "secret from file"
    return f"{client.client_id} (confidential: {names}; {secret}; groups {', '.join(client.groups) or '-'})"


def _serve_until_stopped(running: RunningIdp) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        running.close()
