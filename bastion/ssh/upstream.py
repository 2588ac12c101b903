"""Connections from the bastion to targets, with the bastion's own credential.

The target's host key is always verified against the configuration (no trust on first use). The
credential is either a certificate signed by the upstream CA for this one connection (about a
minute, principal = the login, key id naming the real user and the connection) or a key file.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncssh

from bastion.config import HostSettings
from bastion.identity.ca import Authorities
from bastion.ssh.context import CIPHERS

CONNECT_TIMEOUT = 10.0


class UpstreamError(Exception):
    """The target could not be reached; the message is one line for the user."""


def trusted_host_keys(host: HostSettings) -> Any:
    if host.host_key is not None:
        return ([asyncssh.import_public_key(host.host_key)], [], [])
    assert host.known_hosts is not None
    return asyncssh.read_known_hosts(str(host.known_hosts))


async def connect(
    authorities: Authorities, host: HostSettings, login: str, user: str, connection_id: str, ttl: float
) -> asyncssh.SSHClientConnection:
    if host.key_path is not None:
        client_keys: Any = [asyncssh.read_private_key(str(host.key_path))]
    else:
        client_keys = [authorities.upstream_credential(login, user, connection_id, ttl)]
    address, port = host.address
    try:
        return await asyncio.wait_for(
            asyncssh.connect(
                address,
                port,
                username=login,
                client_keys=client_keys,
                known_hosts=trusted_host_keys(host),
                config=None,
                agent_path=None,
                preferred_auth="publickey",
                password=None,
                kbdint_auth=False,
                gss_auth=False,
                host_based_auth=False,
                x509_trusted_certs=None,
                keepalive_interval=30,
                encoding=None,
                encryption_algs=CIPHERS,
            ),
            timeout=CONNECT_TIMEOUT,
        )
    except asyncssh.HostKeyNotVerifiable:
        raise UpstreamError(f"host key of {host.name} does not match the bastion's configuration; refusing") from None
    except asyncssh.PermissionDenied:
        raise UpstreamError(f"{host.name} refused the bastion's credential for login {login!r}") from None
    except TimeoutError:
        raise UpstreamError(f"{host.name} did not answer within {CONNECT_TIMEOUT:.0f}s") from None
    except (OSError, asyncssh.Error) as exc:
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
        raise UpstreamError(f"cannot reach {host.name}: {reason}") from None
