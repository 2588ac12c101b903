"""MCP over SSH exec, end to end: the official SDK's client runs the SDK's stdio server on the sshd target
through `ssh -J bastion`, in both protocol eras; every message is inspected, each tool call allowed, denied or
held for people, results masked, and the timeline recorded."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BastionEnv, running_env, wait_until
from tests.mcp_fixtures.client import (
    MODES,
    Mode,
    ProgressLog,
    RawSession,
    call,
    list_tools,
    marker_dir,
    run,
    ssh_params,
)

pytestmark = pytest.mark.e2e

HOST = """
[[hosts.mcp]]
name = "files"
command = "* */tests/mcp_fixtures/files_server.py --marker-dir *"
"""
RULES = """
[approvals]
approver_groups = ["leads"]

[[rules]]
name = "commands"
effect = "allow"

[[rules]]
name = "files"
effect = "allow"
mcp_servers = ["files"]

[[rules]]
name = "no-delete"
effect = "deny"
mcp_servers = ["files"]
mcp_tools = ["delete_file"]
message = "deleting is not allowed"

[[rules]]
name = "held-markers"
effect = "approve"
mcp_servers = ["files"]
mcp_tools = ["touch_marker"]
mcp_arguments = { name = "held-*" }
"""
SECRET = "AKIAIOSFODNN7EXAMPLE"


@pytest.fixture(scope="module")
def menv() -> Iterator[BastionEnv]:
    with running_env(RULES, host=HOST) as environment:
        yield environment


@pytest.fixture(scope="module")
def markers() -> Path:
    return marker_dir()


def params(menv: BastionEnv, markers: Path) -> Any:
    return ssh_params(menv, ["--marker-dir", str(markers)])


def mcp_events(menv: BastionEnv, session: str) -> list[dict[str, Any]]:
    return [e.fields() for e in menv.store().events(session) if e.type == "mcp"]


def text_of(result: Any) -> str:
    return "".join(getattr(item, "text", "") for item in result.content)


@pytest.mark.parametrize("mode", MODES)
def test_an_allowed_call_returns_its_result_masked_and_the_database_holds_no_secret(
    menv: BastionEnv, markers: Path, mode: Mode
) -> None:
    result = run(call, params(menv, markers), "read_note", {"path": f"notes-{mode}"}, mode)
    assert not result.is_error
    assert SECRET not in text_of(result) and "[masked:aws-key]" in text_of(result)
    structured = result.structured_content
    assert structured is not None and SECRET not in json.dumps(structured)
    assert any(isinstance(value, int) for value in structured.values())  # types kept: the schema validates
    session = menv.latest_session("files_server.py")
    events = mcp_events(menv, session)
    calls = [e for e in events if e.get("method") == "tools/call" and e["dir"] == "server"]
    assert calls and calls[-1]["tool"] == "read_note" and calls[-1]["latency_ms"] >= 0
    stored = b"".join(p.read_bytes() for p in (menv.root / "state").iterdir() if p.name.startswith("bastion.db"))
    assert SECRET.encode() not in stored


@pytest.mark.parametrize("mode", MODES)
def test_a_denied_call_never_reaches_the_server(menv: BastionEnv, markers: Path, mode: Mode) -> None:
    result = run(call, params(menv, markers), "delete_file", {"path": f"/srv/{mode}.txt"}, mode)
    assert result.is_error
    assert text_of(result) == "bastion: denied by rule no-delete: deleting is not allowed"
    assert not (markers / f"deleted-{mode}.txt").exists()
    denied = menv.logged("policy.deny", lambda f: f.get("action") == "mcp_tool" and "delete_file" in f["text"])
    assert denied and denied[-1]["rule"] == "no-delete"


@pytest.mark.parametrize("mode", MODES)
def test_tools_list_leaves_out_denied_tools(menv: BastionEnv, markers: Path, mode: Mode) -> None:
    names = run(list_tools, params(menv, markers), mode)
    assert "delete_file" not in names and {"read_note", "touch_marker", "slow_count"} <= set(names)


def pending(menv: BastionEnv, name: str) -> int:
    def found() -> int | None:
        rows: list[dict[str, Any]] = json.loads(menv.bastion("approvals", "list", "--json").stdout)
        return next((int(row["id"]) for row in rows if name in row["action"]), None)

    return wait_until(found, f"an approval request for {name}")


@pytest.mark.parametrize("mode", MODES)
def test_a_held_call_runs_once_approved_from_another_process(menv: BastionEnv, markers: Path, mode: Mode) -> None:
    name = f"held-approved-{mode}"
    with ThreadPoolExecutor(1) as pool:
        waiting: Future[Any] = pool.submit(run, call, params(menv, markers), "touch_marker", {"name": name}, mode)
        request = pending(menv, name)
        assert not (markers / name).exists()  # not before people decide
        assert menv.bastion("approvals", "approve", str(request), "--reason", "fine").returncode == 0
        result = waiting.result(timeout=60)
    assert not result.is_error and text_of(result) == f"touched {name}"
    assert (markers / name).exists()


@pytest.mark.parametrize("mode", MODES)
def test_a_held_call_denied_by_an_approver_gets_an_error_naming_the_request(
    menv: BastionEnv, markers: Path, mode: Mode
) -> None:
    name = f"held-denied-{mode}"
    with ThreadPoolExecutor(1) as pool:
        waiting: Future[Any] = pool.submit(run, call, params(menv, markers), "touch_marker", {"name": name}, mode)
        request = pending(menv, name)
        assert menv.bastion("approvals", "deny", str(request), "--reason", "not now").returncode == 0
        result = waiting.result(timeout=60)
    assert result.is_error and f"request {request} denied" in text_of(result) and "not now" in text_of(result)
    assert not (markers / name).exists()


def test_a_held_call_is_withdrawn_when_the_client_cancels_it(menv: BastionEnv, markers: Path) -> None:
    name = "held-cancelled"
    with RawSession(params(menv, markers)) as raw:
        raw.initialize()
        raw.send(
            {
                "jsonrpc": "2.0",
                "id": 41,
                "method": "tools/call",
                "params": {"name": "touch_marker", "arguments": {"name": name}},
            }
        )
        request = pending(menv, name)
        raw.send(
            {
                "jsonrpc": "2.0",
                "method": "notifications/cancelled",
                "params": {"requestId": 41, "reason": "changed my mind"},
            }
        )

        def withdrawn() -> bool:
            rows = json.loads(menv.bastion("approvals", "list", "--all", "--json").stdout)
            return any(int(row["id"]) == request and row["status"] == "withdrawn" for row in rows)

        wait_until(withdrawn, "the request withdrawn")
        response, _ = raw.request("tools/call", {"name": "whoami", "arguments": {}})
        assert "result" in response  # the session goes on
    assert not (markers / name).exists()


def test_malformed_lines_get_json_rpc_errors_and_the_session_goes_on(menv: BastionEnv, markers: Path) -> None:
    with RawSession(params(menv, markers)) as raw:
        raw.initialize()
        for line, code in [
            (b"{not json", -32700),
            (b"\xff\xfe garbage", -32700),
            (b'[{"jsonrpc":"2.0","id":5,"method":"tools/list"}]', -32600),
            (b'{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":7}}', -32602),
        ]:
            raw.send(line)
            error = json.loads(raw.read_line())
            assert error["error"]["code"] == code and error["error"]["message"].startswith("bastion: ")
        response, _ = raw.request("tools/call", {"name": "whoami", "arguments": {}})
        assert "result" in response
    session = menv.latest_session("files_server.py")
    refused = [e for e in mcp_events(menv, session) if e.get("effect") == "refused"]
    assert len(refused) == 4


def test_the_recorded_timeline_exports_and_verifies(menv: BastionEnv, markers: Path) -> None:
    run(call, params(menv, markers), "read_note", {"path": "timeline"}, "legacy")
    session = menv.latest_session("files_server.py")
    menv.sealed(session)
    exported = menv.bastion("audit", "export", session, "--format", "jsonl").stdout
    lines = [json.loads(line) for line in exported.splitlines() if line.strip()]
    methods = [line["fields"].get("method") for line in lines if line.get("type") == "mcp"]
    assert "initialize" in methods and "tools/list" in methods and "tools/call" in methods
    assert SECRET not in exported
    listed = json.loads(menv.bastion("sessions", "list", "--json").stdout)
    row = next(row for row in listed if row["id"] == session)
    assert row["extra"]["mcp_server"] == "files" and row["extra"]["mcp_calls"] == 1
    table = menv.bastion("sessions", "list").stdout
    assert any(line.startswith(session) and "mcp files (1 calls)" in line for line in table.splitlines())
    assert menv.bastion("audit", "verify").returncode == 0


def test_a_hold_binds_to_the_call_not_to_its_id(menv: BastionEnv, markers: Path) -> None:
    """A retry while the call waits joins its request; once approved, a re-send with a new id (as a
    2026-07-28 multi-round-trip call does) goes through in the session without a second request."""
    name = "held-resent"
    arguments = {"name": "touch_marker", "arguments": {"name": name}}
    with RawSession(params(menv, markers)) as raw:
        raw.initialize()
        raw.send({"jsonrpc": "2.0", "id": 61, "method": "tools/call", "params": arguments})
        request = pending(menv, name)
        raw.send({"jsonrpc": "2.0", "id": 62, "method": "tools/call", "params": arguments})
        assert menv.bastion("approvals", "approve", str(request)).returncode == 0
        answered = {json.loads(raw.read_line())["id"] for _ in range(2)}
        assert answered == {61, 62}
        again, _ = raw.request("tools/call", {**arguments, "inputResponses": {}})
        assert again["result"]["content"][0]["text"] == f"touched {name}"
    rows = json.loads(menv.bastion("approvals", "list", "--all", "--json").stdout)
    assert [int(row["id"]) for row in rows if name in row["action"]] == [request]


@pytest.mark.parametrize("mode", MODES)
def test_progress_notifications_reach_the_client_with_their_token(menv: BastionEnv, markers: Path, mode: Mode) -> None:
    """Values are masked one by one, so a notification keeps its numeric token and stays valid JSON
    (masking the byte stream made `"progressToken":1` into `[masked:secret]`)."""
    progress = ProgressLog()
    result = run(call, params(menv, markers), "slow_count", {"n": 3}, mode, progress)
    assert text_of(result) == "counted 3"
    assert [update[0] for update in progress.updates] == [1, 2, 3]


def test_a_held_call_with_a_progress_token_hears_that_it_waits(menv: BastionEnv, markers: Path) -> None:
    name = "held-progress"
    with RawSession(params(menv, markers)) as raw:
        raw.initialize()
        meta = {"progressToken": "wait-1"}
        raw.send({"jsonrpc": "2.0", "id": 71, "method": "tools/call",
                  "params": {"name": "touch_marker", "arguments": {"name": name}, "_meta": meta}})  # fmt: skip
        note = json.loads(raw.read_line())
        request = pending(menv, name)
        assert note["method"] == "notifications/progress" and note["params"]["progressToken"] == "wait-1"
        assert f"waiting for approval (request {request}" in note["params"]["message"]
        assert menv.bastion("approvals", "approve", str(request)).returncode == 0
        assert json.loads(raw.read_line())["id"] == 71


def test_policy_test_decides_a_tool_on_a_server(menv: BastionEnv) -> None:
    common = ("policy", "test", "--user", "alice", "--host", "mcp-host", "--login", menv.login, "--json")
    denied = json.loads(menv.bastion(*common, "--mcp-server", "files", "--mcp-tool", "delete_file").stdout)
    assert denied["effect"] == "deny" and denied["rule"] == "no-delete"
    held = menv.bastion(
        *common, "--mcp-server", "files", "--mcp-tool", "touch_marker", "--arguments", '{"name": "held-x"}'
    )
    assert json.loads(held.stdout)["effect"] == "approve"
    elsewhere = json.loads(menv.bastion(*common, "--mcp-server", "other", "--mcp-tool", "touch_marker").stdout)
    assert elsewhere["effect"] == "deny" and elsewhere["rule"] is None
