"""A real, certified OpenID provider on loopback for interop tests: the npm package oidc-provider.

`start_oidc_provider()` installs the pinned package from tests/oidc_provider/package-lock.json with
`npm ci` (skipped when node_modules already matches the lock), starts tests/oidc_provider/server.mjs
on 127.0.0.1, and returns an `OidcProvider` that also acts as the person at the browser: it
approves device-flow codes and completes authorization-code logins over HTTP, unattended.

    with start_oidc_provider() as idp:
        tokens = idp.device_flow_token("alice")          # token response with id_token
        workload = idp.client_credentials_token()        # JWT access token (typ at+jwt)

Not for production: development interactions accept any password for a known account.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import fcntl
import html.parser
import http.cookiejar
import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROVIDER_DIR = Path(__file__).resolve().parent / "oidc_provider"
NODE_MODULES = PROVIDER_DIR / "node_modules"
INSTALL_LOCK = PROVIDER_DIR / ".npm-ci.lock"

# The command the setup script runs from the repository's root (the harness runs the same, in PROVIDER_DIR).
NPM_CI_ARGS = ("ci", "--no-audit", "--no-fund")
SETUP_COMMAND = "npm ci --prefix tests/oidc_provider --no-audit --no-fund"

DEVICE_CLIENT_ID = "bastion-cli"
WORKLOAD_CLIENT_ID = "ci-agent"
AUDIENCE = "https://bastion.test"
# Scopes that put preferred_username, email and groups into the ID token.
DEFAULT_SCOPE = "openid profile email groups"
# Accounts built into server.mjs: alice (groups dev, approvers), bob (dev), and mallory, whose
# preferred_username "Mallory; rm -rf /" is not a valid login name.
ACCOUNTS = ("alice", "bob", "mallory")

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
NPM_CI_TIMEOUT = 300.0
READY_TIMEOUT = 30.0
HTTP_TIMEOUT = 10.0
MAX_BROWSER_STEPS = 20


class OidcProviderError(RuntimeError):
    """The provider could not be installed, started or driven; the message says why."""


def _node_and_npm() -> tuple[str, str]:
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        missing = " and ".join(name for name, path in (("node", node), ("npm", npm)) if not path)
        raise OidcProviderError(
            f"{missing} not found on PATH: the oidc-provider interop tests need Node.js 20 or later with npm "
            "(Debian: apt-get install nodejs npm)"
        )
    version = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    match = re.match(r"v(\d+)\.(\d+)", version)
    if not match or (int(match[1]), int(match[2])) < (20, 12):
        raise OidcProviderError(
            f"Node.js {version or '(unknown version)'} is too old: oidc-provider needs 20.12 or later"
        )
    return node, npm


def _locked_packages(lock_file: Path) -> dict[str, tuple[str, str]]:
    packages = json.loads(lock_file.read_text())["packages"]
    return {
        path: (str(meta.get("version")), str(meta.get("integrity")))
        for path, meta in packages.items()
        if path and not meta.get("link")
    }


def npm_install_is_current() -> bool:
    """True when node_modules holds exactly what package-lock.json locks.

    Compares the lock with the hidden lockfile npm writes into node_modules on every install
    (node_modules/.package-lock.json), so an install by the setup script counts as well, and
    checks that each locked package's folder is there.
    """
    try:
        wanted = _locked_packages(PROVIDER_DIR / "package-lock.json")
        installed = _locked_packages(NODE_MODULES / ".package-lock.json")
    except (OSError, ValueError, KeyError):
        return False
    return wanted == installed and all((PROVIDER_DIR / path / "package.json").is_file() for path in wanted)


def ensure_npm_install(timeout: float = NPM_CI_TIMEOUT) -> None:
    """Run `npm ci` in tests/oidc_provider unless node_modules already matches package-lock.json.

    Serialized with a file lock, so parallel test processes install once. Works offline when
    node_modules is current (nothing is run) or when npm's cache holds the locked packages.
    """
    _, npm = _node_and_npm()
    with open(INSTALL_LOCK, "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        if npm_install_is_current():
            return
        env = {
            **os.environ,
            "npm_config_update_notifier": "false",
            "npm_config_audit": "false",
            "npm_config_fund": "false",
        }
        try:
            result = subprocess.run(
                [npm, *NPM_CI_ARGS],
                cwd=PROVIDER_DIR,
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            raise OidcProviderError(f"npm ci in {PROVIDER_DIR} did not finish within {timeout:.0f} s") from exc
        if result.returncode != 0:
            tail = (result.stdout + result.stderr).strip()[-2000:]
            raise OidcProviderError(f"npm ci in {PROVIDER_DIR} failed ({result.returncode}):\n{tail}")
        if not npm_install_is_current():
            raise OidcProviderError(f"npm ci in {PROVIDER_DIR} succeeded but node_modules does not match the lock file")


def decode_jwt(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and payload of a compact JWS, base64-decoded only: no signature check."""
    parts = token.split(".")
    if len(parts) != 3:
        raise ValueError("not a compact JWS")

    def part(text: str) -> dict[str, Any]:
        value = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        if not isinstance(value, dict):
            raise ValueError("JWS part is not a JSON object")
        return value

    return part(parts[0]), part(parts[1])


# --- a minimal browser: forms, cookies and redirects over urllib -------------------------------


@dataclass
class _Form:
    id: str | None
    action: str
    method: str
    fields: dict[str, str] = field(default_factory=dict)


class _PageParser(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[_Form] = []
        self.title = ""
        self.text: list[str] = []
        self._in_title = False
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = {name: value or "" for name, value in attrs}
        if tag == "form":
            self.forms.append(_Form(attr.get("id"), attr.get("action", ""), attr.get("method", "get").lower()))
        elif tag == "input" and self.forms and attr.get("name"):
            self.forms[-1].fields[attr["name"]] = attr.get("value", "")
        elif tag == "title":
            self._in_title = True
        elif tag in ("style", "script"):
            self._skip += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif tag in ("style", "script") and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        elif not self._skip and data.strip():
            self.text.append(data.strip())


@dataclass
class _Page:
    url: str
    status: int
    body: str
    forms: list[_Form]
    title: str
    text: str

    def form(self, *, form_id: str | None = None, prompt: str | None = None) -> _Form | None:
        for form in self.forms:
            if form_id is not None and form.id == form_id:
                return form
            if prompt is not None and form.fields.get("prompt") == prompt:
                return form
        return None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class _Browser:
    """One user agent with its own cookie jar; follows redirects itself so it can stop at the client."""

    def __init__(self, issuer: str, timeout: float = HTTP_TIMEOUT) -> None:
        self.origin = _origin(issuer)
        self.timeout = timeout
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()), _NoRedirect()
        )

    def request(
        self, url: str, data: Mapping[str, str] | None = None, *, stop_outside: bool = True
    ) -> tuple[_Page | None, str | None]:
        """Fetch url (POST when data is given) and follow redirects within the issuer.

        Returns (page, None), or (None, location) when a redirect leaves the issuer's origin and
        stop_outside is set.
        """
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        for _ in range(MAX_BROWSER_STEPS):
            req = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
            try:
                with self.opener.open(req, timeout=self.timeout) as response:
                    status, text, final = response.status, response.read().decode("utf-8", "replace"), response.url
            except urllib.error.HTTPError as exc:
                location = exc.headers.get("Location")
                if exc.code in (301, 302, 303, 307, 308) and location:
                    url = urllib.parse.urljoin(url, location)
                    if exc.code in (301, 302, 303):
                        body = None
                    exc.close()
                    if stop_outside and _origin(url) != self.origin:
                        return None, url
                    continue
                status, text, final = exc.code, exc.read().decode("utf-8", "replace"), url
                exc.close()
            parser = _PageParser()
            parser.feed(text)
            return _Page(final, status, text, parser.forms, parser.title.strip(), " ".join(parser.text)), None
        raise OidcProviderError(f"more than {MAX_BROWSER_STEPS} redirects from {url}")

    def submit(self, page: _Page, form: _Form, **values: str) -> tuple[_Page | None, str | None]:
        if form.method != "post":
            raise OidcProviderError(f"unexpected {form.method.upper()} form on {page.url}")
        return self.request(urllib.parse.urljoin(page.url, form.action), {**form.fields, **values})


def _origin(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _describe(page: _Page) -> str:
    return f"{page.status} {page.url} [{page.title}]: {page.text[:400]}"


# --- the provider ----------------------------------------------------------------------------


@dataclass
class OidcProvider:
    """A running oidc-provider; stop() (or leaving the `with` block) ends the node process."""

    issuer: str
    process: subprocess.Popen[bytes]
    log_path: Path
    workload_client_secret: str
    device_client_id: str = DEVICE_CLIENT_ID
    workload_client_id: str = WORKLOAD_CLIENT_ID
    audience: str = AUDIENCE
    scope: str = DEFAULT_SCOPE
    accounts: tuple[str, ...] = ACCOUNTS
    _discovery: dict[str, Any] | None = field(default=None, repr=False)
    _cleanup: list[Any] = field(default_factory=list, repr=False)

    # lifecycle

    def __enter__(self) -> OidcProvider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """End the node process (SIGTERM, then SIGKILL after 5 s) and close its pipes and log."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        if self.process.stdin:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        for step in self._cleanup:
            with contextlib.suppress(Exception):
                step()
        self._cleanup.clear()

    def log(self) -> str:
        """The provider's output so far (its notices, errors and one line per grant)."""
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")
        return ""

    # endpoints

    def discovery(self) -> dict[str, Any]:
        """The OpenID Provider metadata (fetched once)."""
        if self._discovery is None:
            url = f"{self.issuer}/.well-known/openid-configuration"
            with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT) as response:
                self._discovery = json.load(response)
        return self._discovery

    def endpoint(self, name: str) -> str:
        """An endpoint from discovery, e.g. endpoint("token") for token_endpoint."""
        return str(self.discovery()[f"{name}_endpoint"])

    @property
    def verification_uri(self) -> str:
        """The page where people enter a user code (oidc-provider's default route; not in discovery)."""
        return f"{self.issuer}/device"

    @property
    def jwks_uri(self) -> str:
        return str(self.discovery()["jwks_uri"])

    def _post(
        self, url: str, data: Mapping[str, str], auth: tuple[str, str] | None = None
    ) -> tuple[int, dict[str, Any]]:
        req = urllib.request.Request(url, data=urllib.parse.urlencode(data).encode(), method="POST")
        req.add_header("Accept", "application/json")
        if auth:
            pair = ":".join(urllib.parse.quote(part, safe="") for part in auth)
            req.add_header("Authorization", "Basic " + base64.b64encode(pair.encode()).decode())
        try:
            with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as exc:
            with exc:
                raw = exc.read()
            try:
                return exc.code, json.loads(raw)
            except ValueError:
                return exc.code, {
                    "error": "non_json_response",
                    "error_description": raw[:300].decode("utf-8", "replace"),
                }

    # flows

    def device_authorization(self, scope: str | None = None, **extra: str) -> dict[str, Any]:
        """Start a device authorization for bastion-cli: device_code, user_code, verification_uri, interval."""
        status, body = self._post(
            self.endpoint("device_authorization"),
            {"client_id": self.device_client_id, "scope": scope or self.scope, **extra},
        )
        if status != 200:
            raise OidcProviderError(f"device authorization failed ({status}): {body}")
        return body

    def approve_device(self, user_code: str, account: str = "alice") -> None:
        """Act as `account` at the verification page: enter the code, confirm, sign in, consent."""
        self._drive_device(user_code, account=account, approve=True)

    def deny_device(self, user_code: str) -> None:
        """Abort at the confirmation page, so that the client's next poll gets access_denied."""
        self._drive_device(user_code, account="", approve=False)

    def _drive_device(self, user_code: str, *, account: str, approve: bool) -> None:
        browser = _Browser(self.issuer)
        page, _ = browser.request(self.verification_uri)
        entered = False
        for _ in range(MAX_BROWSER_STEPS):
            if page is None:
                raise OidcProviderError("the device flow redirected away from the provider")
            if page.title == "Sign-in Success":
                return
            if (form := page.form(form_id="op.deviceInputForm")) is not None:
                if entered:
                    raise OidcProviderError(f"user code {user_code!r} refused: {_describe(page)}")
                entered = True
                page, _ = browser.submit(page, form, user_code=user_code)
            elif (form := page.form(form_id="op.deviceConfirmForm")) is not None:
                if not approve:
                    page, _ = browser.submit(page, form, abort="yes")
                    return
                page, _ = browser.submit(page, form)
            else:
                page, _ = self._interaction_step(browser, page, account)
        raise OidcProviderError(f"device flow for {user_code!r} did not finish in {MAX_BROWSER_STEPS} steps")

    def _interaction_step(self, browser: _Browser, page: _Page, account: str) -> tuple[_Page | None, str | None]:
        """Answer one interaction page (sign-in or consent); returns the next page or the client redirect."""
        if (form := page.form(prompt="login")) is not None:
            if account not in self.accounts:
                raise OidcProviderError(f"unknown account {account!r}: the provider knows {', '.join(self.accounts)}")
            return browser.submit(page, form, login=account, password="any-password")
        if (form := page.form(prompt="consent")) is not None:
            return browser.submit(page, form)
        raise OidcProviderError(f"unexpected page from the provider: {_describe(page)}")

    def complete_authorization(self, authorize_url: str, account: str = "alice", *, deliver: bool = True) -> str:
        """Act as the browser for an authorization request (e.g. one `bastion login --browser` opened).

        Signs in as `account`, consents, and returns the redirect to the client (with code and
        state). With deliver, also GETs that URL, as the browser would, so that the client's
        loopback listener receives the code; its response is not checked.
        """
        browser = _Browser(self.issuer)
        page, location = browser.request(authorize_url)
        for _ in range(MAX_BROWSER_STEPS):
            if location is not None:
                break
            if page is None:
                raise OidcProviderError("authorization ended without a page or a redirect")
            page, location = self._interaction_step(browser, page, account)
        else:
            raise OidcProviderError(f"authorization did not finish in {MAX_BROWSER_STEPS} steps")
        if deliver:
            with contextlib.suppress(OSError), urllib.request.urlopen(location, timeout=HTTP_TIMEOUT) as response:
                response.read()
        return location

    def poll_device_token(self, device_code: str, *, interval: float = 1.0, timeout: float = 30.0) -> dict[str, Any]:
        """Poll the token endpoint as RFC 8628 says, until tokens or an error other than pending."""
        deadline = time.monotonic() + timeout
        while True:
            status, body = self._post(
                self.endpoint("token"),
                {"grant_type": DEVICE_GRANT, "device_code": device_code, "client_id": self.device_client_id},
            )
            if status == 200:
                return body
            error = body.get("error")
            if error == "slow_down":
                interval += 5
            elif error != "authorization_pending":
                raise OidcProviderError(f"device token request failed ({status}): {body}")
            if time.monotonic() + interval > deadline:
                raise OidcProviderError(f"device flow not approved within {timeout:.0f} s")
            time.sleep(interval)

    def device_flow_token(
        self, account: str = "alice", scope: str | None = None, timeout: float = 30.0
    ) -> dict[str, Any]:
        """A whole device flow for bastion-cli, approved as `account`: the token response (with id_token)."""
        start = self.device_authorization(scope)
        self.approve_device(start["user_code"], account)
        return self.poll_device_token(start["device_code"], interval=float(start.get("interval", 5)), timeout=timeout)

    def client_credentials_token(self, scope: str | None = None) -> dict[str, Any]:
        """A client-credentials token response for ci-agent: access_token is a JWT (typ at+jwt, aud audience)."""
        data = {"grant_type": "client_credentials"}
        if scope:
            data["scope"] = scope
        status, body = self._post(
            self.endpoint("token"), data, auth=(self.workload_client_id, self.workload_client_secret)
        )
        if status != 200:
            raise OidcProviderError(f"client credentials request failed ({status}): {body}")
        return body


def start_oidc_provider(
    workdir: Path | None = None,
    *,
    accounts: Mapping[str, Mapping[str, Any]] | None = None,
    redirect_uris: tuple[str, ...] = (),
    device_interval: int = 1,
    device_code_ttl: int = 600,
    slow_down: bool = False,
    ready_timeout: float = READY_TIMEOUT,
    npm_timeout: float = NPM_CI_TIMEOUT,
) -> OidcProvider:
    """Install (if needed) and start oidc-provider on 127.0.0.1 with a kernel-chosen port.

    workdir receives the provider's log (oidc-provider.log); a temporary folder when None.
    accounts replaces the built-in accounts ({"id": {"preferred_username": ..., "groups": [...]}}).
    redirect_uris adds redirect URIs for bastion-cli (loopback ones with any port are already allowed).
    device_interval is the `interval` the device authorization response carries; with slow_down the
    provider answers slow_down to a poll sooner than that after the previous one (oidc-provider
    alone never does). device_code_ttl (seconds) is how soon device codes expire (expired_token).
    """
    ensure_npm_install(timeout=npm_timeout)
    node, _ = _node_and_npm()
    cleanup: list[Any] = []
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="oidc-provider-")
        cleanup.append(tmp.cleanup)
        workdir = Path(tmp.name)
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "oidc-provider.log"
    secret = secrets.token_urlsafe(24)
    env = {
        **os.environ,
        "OIDC_AUDIENCE": AUDIENCE,
        "OIDC_WORKLOAD_SECRET": secret,
        "OIDC_DEVICE_INTERVAL": str(device_interval),
        "OIDC_DEVICE_CODE_TTL": str(device_code_ttl),
        "OIDC_DEVICE_SLOW_DOWN": "1" if slow_down else "0",
        "OIDC_REDIRECT_URIS": ",".join(redirect_uris),
        "NODE_ENV": "development",
    }
    env.pop("OIDC_ACCOUNTS_JSON", None)
    account_names: tuple[str, ...] = ACCOUNTS
    if accounts is not None:
        env["OIDC_ACCOUNTS_JSON"] = json.dumps(accounts)
        account_names = tuple(accounts)
    log = open(log_path, "wb")  # noqa: SIM115 (closed by stop)
    cleanup.insert(0, log.close)  # before the temporary folder goes
    process = subprocess.Popen(
        [node, "server.mjs", "--port", "0", "--exit-on-stdin-eof"],
        cwd=PROVIDER_DIR,
        env=env,
        stdin=subprocess.PIPE,  # the provider exits when this closes, e.g. when the test process dies
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    issuer = None
    deadline = time.monotonic() + ready_timeout
    while issuer is None:
        match = re.search(rb"^READY (http://127\.0\.0\.1:\d+)$", log_path.read_bytes(), re.MULTILINE)
        if match:
            issuer = match[1].decode()
        elif process.poll() is not None or time.monotonic() > deadline:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=5)
            output = log_path.read_text(errors="replace")[-2000:]
            for step in cleanup:
                step()
            why = f"exited with {process.returncode}" if process.returncode not in (None, -9) else "not ready in time"
            raise OidcProviderError(f"oidc-provider {why} ({ready_timeout:.0f} s bound):\n{output}")
        else:
            time.sleep(0.05)
    provider = OidcProvider(
        issuer=issuer,
        process=process,
        log_path=log_path,
        workload_client_secret=secret,
        accounts=account_names,
        _cleanup=cleanup,
    )
    atexit.register(provider.stop)
    return provider


@contextlib.contextmanager
def oidc_provider(workdir: Path | None = None, **kwargs: Any) -> Iterator[OidcProvider]:
    """start_oidc_provider as a context manager (an OidcProvider is one too)."""
    provider = start_oidc_provider(workdir, **kwargs)
    try:
        yield provider
    finally:
        provider.stop()
