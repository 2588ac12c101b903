"""Device-flow polling rules (RFC 8628 §3.4-3.5), with the token endpoint's answers scripted."""

from __future__ import annotations

from typing import Any

import pytest

from bastion.identity.oauth import DeviceAuthorization, LoginFailed, bounded_seconds, poll_device_token

DISCOVERY = {"token_endpoint": "https://idp.example/token"}
DEVICE = DeviceAuthorization("dc", "ABCD-EFGH", "https://idp.example/device", None, expires_in=60, interval=5)


class Endpoint:
    """The token endpoint's answers in order; records when (on the fake clock) each poll came."""

    def __init__(self, *answers: tuple[int, dict[str, Any]]) -> None:
        self.answers = list(answers)
        self.now = 0.0
        self.polls: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def post(self, url: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        assert form["grant_type"] == "urn:ietf:params:oauth:grant-type:device_code" and form["device_code"] == "dc"
        self.polls.append(self.now)
        return self.answers.pop(0)


def poll(endpoint: Endpoint, device: DeviceAuthorization = DEVICE) -> dict[str, Any]:
    return poll_device_token(
        DISCOVERY, "bastion", device, sleep=endpoint.sleep, clock=lambda: endpoint.now, post=endpoint.post
    )


PENDING = (400, {"error": "authorization_pending"})
SLOW = (400, {"error": "slow_down"})
TOKENS = (200, {"access_token": "at", "id_token": "it"})


def test_pending_then_tokens_at_the_given_interval() -> None:
    endpoint = Endpoint(PENDING, PENDING, TOKENS)
    assert poll(endpoint)["id_token"] == "it"
    assert endpoint.polls == [5, 10, 15]


def test_slow_down_adds_five_seconds_for_good() -> None:
    endpoint = Endpoint(PENDING, SLOW, PENDING, SLOW, TOKENS)
    poll(endpoint)
    assert endpoint.polls == [5, 10, 20, 30, 45]


def test_expired_token_says_to_log_in_again() -> None:
    with pytest.raises(LoginFailed, match=r"expired .* log in again"):
        poll(Endpoint(PENDING, (400, {"error": "expired_token"})))


def test_access_denied() -> None:
    with pytest.raises(LoginFailed, match="denied at the identity provider"):
        poll(Endpoint(PENDING, (400, {"error": "access_denied"})))


def test_the_code_lifetime_bounds_the_wait_even_if_the_provider_keeps_saying_pending() -> None:
    device = DeviceAuthorization("dc", "X", "u", None, expires_in=12, interval=5)
    endpoint = Endpoint(PENDING, PENDING, PENDING, PENDING)
    with pytest.raises(LoginFailed, match="expired"):
        poll(endpoint, device)
    assert endpoint.polls == [5, 10, 15]


def test_other_errors_are_reported_in_one_line() -> None:
    answer = (400, {"error": "invalid_client", "error_description": "unknown\nclient\x1b[2J"})
    with pytest.raises(LoginFailed) as info:
        poll(Endpoint(answer))
    assert "invalid_client" in str(info.value) and "\n" not in str(info.value) and "\x1b" not in str(info.value)


def test_a_zero_or_garbage_poll_interval_from_the_provider_is_bounded() -> None:
    assert bounded_seconds(0, 5, 1, 60) == 1 and bounded_seconds("soon", 5, 1, 60) == 5
    assert bounded_seconds(float("nan"), 5, 1, 60) == 5 and bounded_seconds(10_000, 600, 30, 3600) == 3600
    slept: list[float] = []
    device = DeviceAuthorization("d", "U", "u", None, expires_in=30, interval=1)
    answers = iter([(400, {"error": "slow_down"}), (200, {"access_token": "a"})])
    poll_device_token({"token_endpoint": "t"}, "c", device, sleep=slept.append, clock=lambda: 0.0,
                      post=lambda url, form: next(answers))  # fmt: skip
    assert slept == [1, 6]
