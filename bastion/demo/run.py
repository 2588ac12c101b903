"""`bastion demo`: the product on its embedded defaults, with local demo targets.

Starts a real sshd for every loopback host in the configuration whose known_hosts file lies in
the state directory's demo folder, issues a certificate for the user "demo", writes an ssh config
that uses it, and serves until Ctrl-C.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import asyncssh
import click

from bastion import config as config_mod
from bastion.demo.devidp import DevIdp, RunningIdp, SigningKey, default_clients, start_dev_idp
from bastion.demo.targets import TargetSshd, ensure_login
from bastion.identity.ca import Authorities
from bastion.identity.issuance import issue_certificate
from bastion.storage import open_store

DEMO_USER = "demo"


def _demo_targets(path: Path, state_dir: Path) -> list[TargetSshd]:
    raw = tomllib.loads(path.read_text())
    demo_dir = state_dir / "demo"
    targets = []
    for host in raw.get("hosts", []):
        address = str(host.get("address", ""))
        known_hosts = host.get("known_hosts")
        if not address.startswith("127.") or not known_hosts:
            continue
        if (path.parent / known_hosts).resolve().parent != demo_dir.resolve():
            continue
        port = int(address.rsplit(":", 1)[1])
        targets.append(TargetSshd(host["name"], demo_dir / host["name"], state_dir / "upstream_ca.pub", port=port))
    return targets


def run_demo(path: Path) -> None:
    if os.geteuid() != 0:
        raise click.ClickException("bastion demo starts local sshd targets and must run as root")
    raw = tomllib.loads(path.read_text())
    state_dir = (path.parent / raw.get("server", {}).get("state_dir", "state")).resolve()
    Authorities.init(state_dir)
    demo_dir = state_dir / "demo"
    demo_dir.mkdir(mode=0o755, exist_ok=True)
    os.chmod(state_dir, 0o711)  # sshd reads the demo targets' files as the login; keys stay 0600
    login = ensure_login()
    targets = _demo_targets(path, state_dir)
    lines = []
    for target in targets:
        target.start()
        lines.append(target.known_hosts_line())
        click.echo(f"demo target {target.name}: sshd on 127.0.0.1:{target.port} (login {login})")
    (demo_dir / "known_hosts").write_text("".join(line + "\n" for line in lines))
    idps: list[RunningIdp] = []
    try:
        settings = config_mod.load(path)
        idps = _start_identity_providers(settings, demo_dir)
        _prepare_client(settings, demo_dir)
        from bastion.service import run

        run(settings)
    finally:
        for idp in idps:
            idp.close()
        for target in targets:
            target.stop()


def _start_identity_providers(settings: config_mod.Settings, demo_dir: Path) -> list[RunningIdp]:
    """A development IdP for every issuer on a loopback http URL (the default configuration's)."""
    running = []
    for url in dict.fromkeys(i.issuer for i in settings.identity.issuers):
        parts = urlsplit(url)
        if parts.scheme != "http" or parts.hostname != "127.0.0.1" or parts.port is None:
            continue
        secret_file = demo_dir / "ci-runner.secret"
        if not secret_file.exists():
            secret_file.write_text(secrets.token_urlsafe(24) + "\n")
            secret_file.chmod(0o600)
        key = SigningKey.from_file(demo_dir / "dev-idp.pem")
        clients = default_clients(workload_secret=secret_file.read_text().strip())
        running.append(start_dev_idp(DevIdp(clients=clients, key=key), "127.0.0.1", parts.port))
        click.echo(f"demo identity provider (NOT FOR PRODUCTION): {url}, users alice, bob, carol")
    return running


def _prepare_client(settings: config_mod.Settings, demo_dir: Path) -> None:
    authorities = Authorities(settings.server.state_dir)
    key = demo_dir / "id_ed25519"
    if not key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", DEMO_USER, "-f", str(key)], check=True)
    store = open_store(settings.server.database_path)
    try:
        issue_certificate(
            settings,
            store,
            authorities,
            DEMO_USER,
            ("dev",),
            settings.certificates.user_ttl,
            asyncssh.read_public_key(f"{key}.pub"),
            Path(f"{key}-cert.pub"),
            source="demo",
        )
    finally:
        store.close()
    (demo_dir / "client_known_hosts").write_text(authorities.known_hosts_line() + "\n")
    host, port = settings.server.listen
    ssh_config = demo_dir / "ssh_config"
    ssh_config.write_text(
        f"Host bastion\n  HostName {host}\n  Port {port}\n  User {DEMO_USER}\n"
        f"Host *\n  IdentityFile {key}\n  CertificateFile {key}-cert.pub\n  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {demo_dir / 'client_known_hosts'}\n  StrictHostKeyChecking yes\n"
    )
    first = settings.hosts[0].name if settings.hosts else "HOST"
    login = settings.hosts[0].logins[0] if settings.hosts else "LOGIN"
    rel = os.path.relpath(ssh_config)
    click.echo(f"""
The bastion is listening on {host}:{port}. In another terminal, try:

  ssh -F {rel} -J bastion {login}@{first}                 # a recorded shell
  ssh -F {rel} -J bastion {login}@{first} 'uname -a; exit 3'
  scp -F {rel} -J bastion README.md {login}@{first}:
  .venv/bin/bastion sessions list                          # what was recorded
  .venv/bin/bastion audit export SESSION --format text     # what the screen showed

Log in with OIDC (the demo IdP's approval page is in the link it prints):

  .venv/bin/bastion login --issuer dev --home state/demo/alice   # device flow; then:
  ssh -F state/demo/alice/ssh_config {login}@{first}
  ssh -p {port} login@{host}                                     # nothing but ssh

Started {time.strftime("%H:%M:%S")}; Ctrl-C stops the bastion and the demo targets.
""")
