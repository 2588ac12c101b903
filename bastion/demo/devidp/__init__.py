"""A local OpenID provider for the demo and for development, on authlib's server components. NOT FOR PRODUCTION.

Loopback only, no passwords: whoever reaches its pages picks a configured user. It serves discovery, JWKS,
the device authorization grant (with an approval page), authorization code with PKCE (S256) on loopback
redirects, and client credentials with RFC 9068 JWT access tokens::

    idp = DevIdp(users=[User("alice", ("dev",))], auto_approve="alice")
    with serve_dev_idp(idp, host="127.0.0.1", port=0) as running:
        running.url  # the issuer, e.g. http://127.0.0.1:40123
"""

from bastion.demo.devidp.directory import (
    Client,
    DevIdpError,
    User,
    default_clients,
    default_users,
    load_directory,
    parse_user_spec,
    read_secret_file,
)
from bastion.demo.devidp.keys import SigningKey
from bastion.demo.devidp.provider import DevIdp
from bastion.demo.devidp.server import (
    DEFAULT_LISTEN,
    RunningIdp,
    issuer_url,
    parse_listen,
    serve_dev_idp,
    start_dev_idp,
)

__all__ = [
    "DEFAULT_LISTEN",
    "Client",
    "DevIdp",
    "DevIdpError",
    "RunningIdp",
    "SigningKey",
    "User",
    "default_clients",
    "default_users",
    "issuer_url",
    "load_directory",
    "parse_listen",
    "parse_user_spec",
    "read_secret_file",
    "serve_dev_idp",
    "start_dev_idp",
]
