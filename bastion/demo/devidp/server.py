"""Serving the development IdP on loopback with the standard library's threading HTTP server."""

from __future__ import annotations

import contextlib
import ipaddress
import re
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from bastion.demo.devidp.directory import DevIdpError
from bastion.demo.devidp.messages import HttpRequest, HttpResponse
from bastion.demo.devidp.provider import DevIdp
from bastion.demo.devidp.web import IdpApp
from bastion.logs import log

MAX_BODY = 64 * 1024
DEFAULT_LISTEN = "127.0.0.1:9400"


def loopback_host(host: str) -> str:
    """The IP literal to bind for a loopback host ('localhost' -> '127.0.0.1'); anything else is refused."""
    if host == "localhost":
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        address = None
    if address is None or not address.is_loopback:
        raise DevIdpError(
            f"{host} is not a loopback address: the development IdP listens on 127.0.0.1, [::1] or localhost only"
        )
    return str(address)


def parse_listen(text: str) -> tuple[str, int]:
    """'127.0.0.1:9400', '[::1]:9400', 'localhost:0' or '9400' -> (loopback IP, port); port 0 picks a free one."""
    match = re.fullmatch(r"(?:\[([0-9A-Fa-f:.]+)\]|([^:\[\]\s]+)):(\d+)|(\d+)", text.strip())
    if not match:
        raise DevIdpError(f"--listen {text!r}: expected HOST:PORT such as {DEFAULT_LISTEN}")
    port = int(match.group(3) or match.group(4))
    if port > 65535:
        raise DevIdpError(f"--listen {text!r}: expected a port from 0 to 65535")
    try:
        return loopback_host(match.group(1) or match.group(2) or "127.0.0.1"), port
    except DevIdpError as exc:
        raise DevIdpError(f"--listen {text}: {exc}") from None


def issuer_url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    app: IdpApp


class _HttpServer6(_HttpServer):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _HttpServer
    server_version = "bastion-dev-idp"

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY or not self.path.startswith("/"):
            self._send(HttpResponse.json(400, {"error": "invalid_request", "error_description": "bad request"}))
            return
        body = self.rfile.read(length)
        headers = {name.title(): value for name, value in self.headers.items()}
        request = HttpRequest(self.command, self.server.app.issuer + self.path, headers, body)
        try:
            response = self.server.app.handle(request)
        except Exception as exc:  # one broken request must not take the provider down
            log("devidp.error", method=self.command, path=self.path, error=repr(exc))
            response = HttpResponse.json(500, {"error": "server_error", "error_description": str(exc)})
        self._send(response)

    def _send(self, response: HttpResponse) -> None:
        self.send_response(response.status)
        for name, value in response.headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        self.wfile.write(response.body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the decisions and tokens that matter are logged as events."""


class RunningIdp:
    """A DevIdp served from a background thread; `url` is its issuer. Stop it with close() or a with-block."""

    def __init__(self, idp: DevIdp, httpd: _HttpServer) -> None:
        self.idp = idp
        self.host, self.port = str(httpd.server_address[0]), int(httpd.server_address[1])
        self.url = issuer_url(self.host, self.port)
        self.app = IdpApp(idp, self.url)
        self._httpd = httpd
        httpd.app = self.app
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, name="dev-idp", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def __enter__(self) -> RunningIdp:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def start_dev_idp(idp: DevIdp, host: str = "127.0.0.1", port: int = 0) -> RunningIdp:
    """Bind HOST:PORT (loopback only; port 0 picks a free port) and serve in a background thread."""
    address = loopback_host(host)
    server_class = type(
        "_Server", (_HttpServer,), {"address_family": socket.AF_INET6 if ":" in address else socket.AF_INET}
    )
    try:
        httpd = server_class((address, port), _Handler)
    except OSError as exc:
        raise DevIdpError(f"cannot listen on {issuer_url(address, port)}: {exc.strerror}") from None
    return RunningIdp(idp, httpd)


@contextlib.contextmanager
def serve_dev_idp(idp: DevIdp, host: str = "127.0.0.1", port: int = 0) -> Iterator[RunningIdp]:
    """`with serve_dev_idp(idp) as running: running.url` — served until the block ends."""
    running = start_dev_idp(idp, host, port)
    try:
        yield running
    finally:
        running.close()
