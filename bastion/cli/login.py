"""`bastion login` and `bastion ssh-config`: the user's side of getting and using a certificate."""

from __future__ import annotations

import json
import sys
import time
import webbrowser
from pathlib import Path
from typing import Any

import click

from bastion import config as config_mod
from bastion.cli.support import config_path_option, fail
from bastion.identity import login as client
from bastion.identity.config import IdentitySettings, IssuerSettings
from bastion.identity.oauth import (
    LoginFailed,
    client_credentials,
    poll_device_token,
    start_browser_login,
    start_device_authorization,
)
from bastion.identity.oidc import TokenRejected, TokenVerifier, http_get_json


def _settings(config_path: str | None) -> config_mod.Settings | None:
    """The bastion's configuration when it is at hand (same machine); login works without it."""
    path = Path(config_path) if config_path else config_mod.default_path()
    if not path.is_file():
        if config_path:
            fail(f"{path}: no such configuration file")
        return None
    try:
        return config_mod.load(path)
    except config_mod.ConfigError as exc:
        fail(str(exc))


def _issuer(
    settings: config_mod.Settings | None,
    state: client.LoginState | None,
    name: str | None,
    url: str | None,
    client_id: str | None,
    workload: bool,
) -> client.IssuerInfo | None:
    if url:
        if not client_id:
            fail("--issuer-url needs --client-id")
        return client.IssuerInfo(name or "custom", url, client_id, "workload" if workload else "human")
    configured = settings.identity.issuers if settings else ()
    if name:
        found = next((i for i in configured if i.name == name), None)
        if found is None and state and state.issuer and state.issuer.name == name:
            return state.issuer
        if found is None:
            fail(f"--issuer: no issuer named {name!r} (known: {', '.join(i.name for i in configured) or 'none'})")
        return _info(found)
    kind = "workload" if workload else "human"
    if state and state.issuer and state.issuer.kind == kind:
        return state.issuer
    found = next((i for i in configured if i.kind == kind), None)
    return _info(found) if found else None


def _info(issuer: IssuerSettings) -> client.IssuerInfo:
    return client.IssuerInfo(issuer.name, issuer.issuer, issuer.client_id, issuer.kind, issuer.scopes, issuer.audience)


def _discovery(issuer: client.IssuerInfo) -> dict[str, Any]:
    return http_get_json(issuer.issuer.rstrip("/") + "/.well-known/openid-configuration")


def _say(text: str) -> None:
    click.echo(text, err=True)


def _device_token(issuer: client.IssuerInfo) -> str:
    discovery = _discovery(issuer)
    device = start_device_authorization(discovery, issuer.client_id, issuer.scopes)
    _say(f"To log in, open  {device.link}")
    _say(f"and confirm the code  {device.user_code}  (it expires in {int(device.expires_in // 60)} min)")
    tokens = poll_device_token(discovery, issuer.client_id, device)
    return _id_token(tokens)


def _browser_token(issuer: client.IssuerInfo, open_browser: bool) -> str:
    discovery = _discovery(issuer)
    login = start_browser_login(discovery, issuer.client_id, issuer.scopes)
    _say(f"To log in, open  {login.url}")
    if open_browser:
        webbrowser.open(login.url)
    token = _id_token(login.wait())
    settings = IssuerSettings(
        name=issuer.name, issuer=issuer.issuer, client_id=issuer.client_id, audience=issuer.audience
    )
    try:  # the relying party checks the nonce it sent (the bastion checks everything else again)
        TokenVerifier(IdentitySettings(issuers=(settings,))).verify(token, nonce=login.nonce)
    except TokenRejected as exc:
        raise LoginFailed(f"the identity provider's token failed its check: {exc}") from None
    return token


def _id_token(tokens: dict[str, Any]) -> str:
    token = tokens.get("id_token")
    if not isinstance(token, str):
        raise LoginFailed("the identity provider returned no ID token; is 'openid' among the scopes?")
    return token


@click.command("login")
@config_path_option()
@click.option("--bastion", "bastion_address", help="The bastion's HOST:PORT (default: last login, or [server] listen).")
@click.option("--ca", "ca_file", type=click.Path(dir_okay=False), help="The bastion's host CA public key file.")
@click.option("--issuer", "issuer_name", help="Issuer name from [[identity.issuers]] (default: last login).")
@click.option("--issuer-url", help="Issuer URL, when there is no configuration at hand.")
@click.option("--client-id", help="OAuth client id (with --issuer-url, or for --client-credentials).")
@click.option("--browser", is_flag=True, help="Authorization code with PKCE on a loopback redirect.")
@click.option("--no-open", is_flag=True, help="With --browser: print the link, do not start a browser.")
@click.option("--id-token-file", type=click.Path(dir_okay=False), help="A workload's token (CI, Kubernetes).")
@click.option("--client-credentials", is_flag=True, help="A service account: client id and --client-secret-file.")
@click.option("--client-secret-file", type=click.Path(dir_okay=False, exists=True))
@click.option("--resource", help="With --client-credentials: the resource (audience) to ask a JWT access token for.")
@click.option("--home", default=str(client.DEFAULT_HOME), show_default=True, help="Where keys and config go.")
@click.option("--alias", default="bastion", show_default=True, help="The bastion's Host name in the ssh config.")
@click.option("--status", "show_status", is_flag=True, help="Show who is logged in and for how long.")
@click.option("--json", "as_json", is_flag=True)
def login(
    config_path: str | None,
    bastion_address: str | None,
    ca_file: str | None,
    issuer_name: str | None,
    issuer_url: str | None,
    client_id: str | None,
    browser: bool,
    no_open: bool,
    id_token_file: str | None,
    client_credentials: bool,
    client_secret_file: str | None,
    resource: str | None,
    home: str,
    alias: str,
    show_status: bool,
    as_json: bool,
) -> None:
    """Log in with OIDC and get a short-lived certificate; then `ssh -J bastion HOST` just works."""
    home_dir = Path(home).expanduser()
    if show_status:
        _status(home_dir, as_json)
        return
    if sum([browser, bool(id_token_file), client_credentials]) > 1:
        fail("choose one of --browser, --id-token-file and --client-credentials")
    try:
        state = client.LoginState.load(home_dir)
        settings = _settings(config_path)
        target = _target(settings, state, bastion_address, ca_file, alias)
        workload = bool(id_token_file or client_credentials)
        issuer = _issuer(settings, state, issuer_name, issuer_url, client_id, workload)
        token = _token(
            issuer, id_token_file, client_credentials, client_id, client_secret_file, resource, browser, no_open
        )
        target.issuer = issuer
        key = client.new_key()
        public_key = key.export_public_key().decode().strip()
        answer = client.run_exchange(target.bastion, target.host_ca, token, public_key)
        client.save_login(home_dir, target, key, answer)
        include = client.install_include(home_dir) if home_dir == client.DEFAULT_HOME.expanduser() else None
    except (client.LoginError, LoginFailed, TokenRejected, OSError) as exc:
        fail(str(exc))
    except ValueError as exc:  # an issuer URL or client id that does not validate
        fail(str(exc).splitlines()[-1].strip())
    until = time.strftime("%H:%M", time.localtime(target.valid_before))
    if as_json:
        click.echo(
            json.dumps(
                {
                    "user": target.user,
                    "groups": target.groups,
                    "serial": target.serial,
                    "valid_before": target.valid_before,
                    "home": str(home_dir),
                }
            )
        )
        return
    first = target.hosts[0] if target.hosts else {"name": "HOST", "logins": ["LOGIN"]}
    ssh = "ssh" if include else f"ssh -F {home_dir / 'ssh_config'}"
    click.echo(f"logged in as {target.user} (groups: {', '.join(target.groups) or 'none'}) until {until}")
    click.echo(f"try: {ssh} -J {target.alias} {first['logins'][0]}@{first['name']}")


def _target(
    settings: config_mod.Settings | None,
    state: client.LoginState | None,
    bastion_address: str | None,
    ca_file: str | None,
    alias: str,
) -> client.LoginState:
    address = bastion_address or (state.bastion if state else None)
    if address is None and settings is not None:
        host, port = settings.server.listen
        address = f"{host}:{port}"
    if address is None:
        fail("which bastion? pass --bastion HOST:PORT and --ca HOST_CA_FILE")
    client.split_address(address)
    if ca_file:
        host_ca = Path(ca_file).read_text().strip()
    elif state and state.bastion == address:
        host_ca = state.host_ca
    elif settings is not None and (settings.server.state_dir / "host_ca.pub").is_file():
        host_ca = (settings.server.state_dir / "host_ca.pub").read_text().strip()
    else:
        fail("pass --ca HOST_CA_FILE: the bastion's host CA public key, to verify the bastion before sending a token")
    if not host_ca.startswith(("ssh-", "ecdsa-")):
        fail("--ca: expected an OpenSSH public key line such as 'ssh-ed25519 AAAA...'")
    return client.LoginState(bastion=address, alias=alias, host_ca=host_ca)


def _token(
    issuer: client.IssuerInfo | None,
    id_token_file: str | None,
    use_client_credentials: bool,
    client_id: str | None,
    secret_file: str | None,
    resource: str | None,
    browser: bool,
    no_open: bool,
) -> str:
    if id_token_file:
        token = Path(id_token_file).read_text().strip()
        if not token:
            raise LoginFailed(f"{id_token_file} is empty")
        return token
    if issuer is None:
        raise LoginFailed(
            "no identity issuer: pass --issuer NAME with -c bastion.toml, or --issuer-url and --client-id"
        )
    if use_client_credentials:
        if not secret_file:
            raise LoginFailed("--client-credentials needs --client-secret-file")
        secret = Path(secret_file).read_text().strip()
        tokens = client_credentials(
            _discovery(issuer), client_id or issuer.client_id, secret, resource=resource or issuer.audience
        )
        return str(tokens["access_token"])
    return _browser_token(issuer, not no_open) if browser else _device_token(issuer)


def _status(home: Path, as_json: bool) -> None:
    valid, line = client.status(home)
    if as_json:
        state = client.LoginState.load(home)
        click.echo(
            json.dumps(
                {
                    "valid": valid,
                    "status": line,
                    "user": state.user if state else None,
                    "groups": state.groups if state else [],
                    "valid_before": state.valid_before if state else None,
                }
            )
        )
    else:
        click.echo(line)
    sys.exit(0 if valid else 1)


@click.command("ssh-config")
@click.option("--home", default=str(client.DEFAULT_HOME), show_default=True, help="The login home.")
@click.option("--write", is_flag=True, help="Install the files (and an Include line in ~/.ssh/config).")
def ssh_config(home: str, write: bool) -> None:
    """Print (or --write) the ssh config block and known_hosts line for the last login."""
    home_dir = Path(home).expanduser()
    try:
        state = client.LoginState.load(home_dir)
    except client.LoginError as exc:
        fail(str(exc))
    if state is None:
        fail(f"no login in {home_dir}; run: bastion login")
    if write:
        client.write_ssh_files(home_dir, state)
        written = [home_dir / "ssh_config", home_dir / "known_hosts"]
        if home_dir == client.DEFAULT_HOME.expanduser():
            written.append(client.install_include(home_dir))
        click.echo("wrote " + ", ".join(str(p) for p in written))
        return
    click.echo(client.render_ssh_config(home_dir, state), nl=False)
    click.echo(f"\n# known_hosts ({home_dir / 'known_hosts'}):\n# {state.known_hosts}")
