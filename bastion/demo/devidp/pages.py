"""The development IdP's HTML: the device code page, the consent pages and the index. Plain forms, no script."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from html import escape

from bastion.demo.devidp.directory import Client, User
from bastion.demo.devidp.provider import DeviceAuthorization

WARNING = "Development identity provider — NOT FOR PRODUCTION. Anyone who can open this page can log in as any user."

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 40rem; margin: 2rem auto; padding: 0 1rem; }
.warning { background: #fde68a; border: 1px solid #b45309; padding: .5rem .75rem; }
.error { background: #fecaca; border: 1px solid #b91c1c; padding: .5rem .75rem; }
code, .code { font-family: ui-monospace, monospace; font-size: 1.2em; }
button { font-size: 1rem; padding: .4rem 1.2rem; margin-right: .5rem; }
"""


def page(title: str, body: str) -> str:
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{escape(title)} · bastion dev-idp</title><style>{_STYLE}</style></head>"
        f"<body><p class='warning'>{escape(WARNING)}</p><h1>{escape(title)}</h1>{body}</body></html>"
    )


def _error(message: str) -> str:
    return f"<p class='error'>{escape(message)}</p>" if message else ""


def _user_choice(users: Iterable[User]) -> str:
    options = "".join(
        f"<option value='{escape(u.name)}'>{escape(u.name)} ({escape(', '.join(u.groups) or 'no groups')})</option>"
        for u in users
    )
    return f"<p><label>Log in as <select name='user'>{options}</select></label></p>"


_BUTTONS = (
    "<p><button name='action' value='approve'>Approve</button><button name='action' value='deny'>Deny</button></p>"
)


def device_entry(error: str = "") -> str:
    return page(
        "Device login",
        _error(error) + "<form method='get' action='/device'><p><label>Code shown in your terminal "
        "<input name='user_code' class='code' autofocus autocomplete='off' placeholder='BCDF-GHJK'></label> "
        "<button>Continue</button></p></form>",
    )


def device_consent(device: DeviceAuthorization, users: Iterable[User], error: str = "") -> str:
    return page(
        "Device login",
        _error(error)
        + f"<p>Client <code>{escape(device.client_id)}</code> asks for scope <code>{escape(device.scope or '-')}</code>"
        f" with code <span class='code'>{escape(device.user_code)}</span>.</p>"
        "<form method='post' action='/device'>"
        f"<input type='hidden' name='user_code' value='{escape(device.user_code)}'>"
        + _user_choice(users)
        + _BUTTONS
        + "</form>",
    )


def device_done(device: DeviceAuthorization) -> str:
    if device.approved and device.user:
        text = f"Approved as {device.user.name}. You can close this page and return to your terminal."
    else:
        text = "Denied. The device gets access_denied."
    return page("Device login", f"<p>{escape(text)}</p>")


def authorize_consent(params: Mapping[str, str], client_id: str, scope: str, users: Iterable[User]) -> str:
    hidden = "".join(
        f"<input type='hidden' name='{escape(k)}' value='{escape(v)}'>"
        for k, v in params.items()
        if k not in ("user", "action")
    )
    return page(
        "Log in",
        f"<p>Client <code>{escape(client_id)}</code> asks for scope <code>{escape(scope or '-')}</code>.</p>"
        f"<form method='post' action='/authorize'>{hidden}" + _user_choice(users) + _BUTTONS + "</form>",
    )


def error_page(title: str, message: str) -> str:
    return page(title, _error(message))


def index(issuer: str, users: Iterable[User], clients: Iterable[Client]) -> str:
    user_rows = "".join(f"<li><code>{escape(u.name)}</code>: {escape(', '.join(u.groups))}</li>" for u in users)
    client_rows = "".join(
        f"<li><code>{escape(c.client_id)}</code>: {'public' if c.is_public else 'confidential'}, "
        f"{escape(', '.join(sorted(g.rsplit(':', 1)[-1] for g in c.grant_types)))}</li>"
        for c in clients
    )
    return page(
        "bastion dev-idp",
        f"<p>Issuer <code>{escape(issuer)}</code> · <a href='/.well-known/openid-configuration'>discovery</a>"
        " · <a href='/jwks'>JWKS</a> · <a href='/device'>device login</a></p>"
        f"<h2>Users</h2><ul>{user_rows}</ul><h2>Clients</h2><ul>{client_rows}</ul>",
    )
