"""HTTP requests and responses as plain values, and the views of a request that authlib's server expects."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from authlib.oauth2.rfc6749 import JsonPayload, JsonRequest, OAuth2Payload, OAuth2Request

FORM = "application/x-www-form-urlencoded"


@dataclass(frozen=True)
class HttpRequest:
    """One request: method, absolute URL (issuer + path), headers with Title-Case names, raw body."""

    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    @property
    def path(self) -> str:
        return urlsplit(self.url).path.rstrip("/") or "/"

    @property
    def query(self) -> list[tuple[str, str]]:
        return parse_qsl(urlsplit(self.url).query, keep_blank_values=True)

    @property
    def form(self) -> list[tuple[str, str]]:
        if self.headers.get("Content-Type", "").split(";")[0].strip().lower() != FORM:
            return []
        return parse_qsl(self.body.decode("utf-8", "replace"), keep_blank_values=True)

    def params(self) -> dict[str, str]:
        """Query and form parameters together; the form wins."""
        return dict(self.query + self.form)


@dataclass(frozen=True)
class HttpResponse:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def json(cls, status: int, document: Any, cache: bool = False) -> HttpResponse:
        headers = [("Content-Type", "application/json")]
        if not cache:
            headers += [("Cache-Control", "no-store"), ("Pragma", "no-cache")]
        return cls(status, json.dumps(document, indent=1).encode(), headers)

    @classmethod
    def html(cls, status: int, text: str) -> HttpResponse:
        headers = [("Content-Type", "text/html; charset=utf-8"), ("Cache-Control", "no-store")]
        return cls(status, text.encode("utf-8"), headers)

    @classmethod
    def redirect(cls, location: str) -> HttpResponse:
        return cls(302, b"", [("Location", location), ("Cache-Control", "no-store")])


class _Payload(OAuth2Payload):
    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._pairs = pairs

    @cached_property
    def data(self) -> dict[str, str]:
        return dict(self._pairs)

    @cached_property
    def datalist(self) -> defaultdict[str, list[str]]:
        values: defaultdict[str, list[str]] = defaultdict(list)
        for key, value in self._pairs:
            values[key].append(value)
        return values


class FormRequest(OAuth2Request):
    """authlib's view of an HttpRequest: query and form parameters, headers for client_secret_basic."""

    def __init__(self, request: HttpRequest) -> None:
        super().__init__(request.method, request.url, headers=dict(request.headers))
        self._args = dict(request.query)
        self._form = dict(request.form)
        self.payload = _Payload(request.query + request.form)

    @property
    def args(self) -> dict[str, str]:
        return self._args

    @property
    def form(self) -> dict[str, str]:
        return self._form


class _JsonPayload(JsonPayload):
    def __init__(self, body: bytes) -> None:
        self._body = body

    @cached_property
    def data(self) -> Any:
        return json.loads(self._body or b"{}")


def json_request(request: HttpRequest) -> JsonRequest:
    view = JsonRequest(request.method, request.url, dict(request.headers))
    view.payload = _JsonPayload(request.body)
    return view
