"""The MCP inspection core, pure: messages in, what goes where out; each decision, masking and refusal."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.control.actions import Decision, McpMethod, McpTool, Subject
from bastion.control.config import Rule
from bastion.control.policy import Policy
from bastion.masking.config import MaskingSettings
from bastion.masking.masker import Masker
from bastion.masking.values import mask_json
from bastion.mcp.inspector import DENIED, LATEST, MAX_IN_FLIGHT, McpInspector, Out
from bastion.mcp.jsonrpc import INVALID_PARAMS, INVALID_REQUEST, PARSE_ERROR
from bastion.mcp.stdio import _Lines

MASKER = Masker.from_settings(MaskingSettings())
ALICE = Subject("alice", ("devs",), "mcp-host", {}, "mcp")
RULES = [
    Rule(name="files", effect="allow", mcp_servers=("files",)),
    Rule(name="no-delete", effect="deny", mcp_servers=("files",), mcp_tools=("delete_*",), message="never"),
    Rule(
        name="etc-waits",
        effect="approve",
        mcp_servers=("files",),
        mcp_tools=("read_note",),
        mcp_arguments={"path": "/etc/*"},
        approvers=("leads",),
    ),
    Rule(name="nested", effect="deny", mcp_arguments={"/options/mode": "re:7[0-9]{2}"}),
]
POLICY = Policy(RULES)


def inspector(server: str = "files") -> McpInspector:
    clock = iter(float(n) for n in range(10_000))
    return McpInspector(
        server,
        lambda method: POLICY.decide(ALICE, McpMethod(server, method)),
        lambda tool: POLICY.hides_tool(ALICE, server, tool),
        lambda value: mask_json(MASKER, value),
        lambda: next(clock),
        max_message=64 * 1024,
    )


def line(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode()


def request(message_id: int, method: str, **params: Any) -> bytes:
    return line({"jsonrpc": "2.0", "id": message_id, "method": method, "params": params})


def sent(out: Out) -> list[dict[str, Any]]:
    return [json.loads(data) for data in out.to_client]


def decide(mcp: McpInspector, out: Out) -> Out:
    """What the session does with each call: policy alone (allow, deny); approve stays held."""
    result = Out()
    for call in out.calls:
        decision = POLICY.decide(ALICE, call.action)
        if decision.effect == "allow":
            step = mcp.forward_call(call)
        elif decision.effect == "deny":
            step = mcp.refuse_call(call, f"denied by rule {decision.rule}: {decision.message}")
        else:
            continue
        result.to_server += step.to_server
        result.to_client += step.to_client
        result.events += step.events
    return result


def test_an_allowed_call_is_forwarded_and_its_result_masked_with_types_kept() -> None:
    mcp = inspector()
    out = mcp.from_client(request(1, "tools/call", name="read_note", arguments={"path": "/tmp/x"}))
    assert out.to_server == [] and [c.action for c in out.calls] == [McpTool("read_note", {"path": "/tmp/x"}, "files")]
    assert json.loads(decide(mcp, out).to_server[0])["params"]["name"] == "read_note"
    result = {
        "content": [{"type": "text", "text": "key AKIAIOSFODNN7EXAMPLE"}],
        "structuredContent": {"note": "mail jane.doe@example.org", "size": 42, "ok": True},
        "isError": False,
    }
    back = mcp.from_server(line({"jsonrpc": "2.0", "id": 1, "result": result}))
    shown = sent(back)[0]["result"]
    assert shown["content"][0]["text"] == "key [masked:aws-key]"
    assert shown["structuredContent"] == {"note": "mail [masked:email]", "size": 42, "ok": True}
    assert back.events[0]["latency_ms"] > 0 and back.events[0]["tool"] == "read_note"
    assert "AKIAIOSFODNN7EXAMPLE" not in json.dumps(back.events)


def test_a_denied_call_never_reaches_the_server_and_the_client_gets_an_error_result() -> None:
    mcp = inspector()
    out = decide(mcp, mcp.from_client(request(7, "tools/call", name="delete_file", arguments={"path": "/x"})))
    assert out.to_server == []
    assert sent(out) == [
        {
            "jsonrpc": "2.0",
            "id": 7,
            "result": {
                "content": [{"type": "text", "text": "bastion: denied by rule no-delete: never"}],
                "isError": True,
            },
        }
    ]


def test_under_2026_07_28_a_refusal_says_its_result_type() -> None:
    mcp = inspector()
    meta = {"io.modelcontextprotocol/protocolVersion": LATEST}
    out = mcp.from_client(request(2, "tools/call", name="delete_file", arguments={}, _meta=meta))
    assert mcp.revision == LATEST
    assert sent(decide(mcp, out))[0]["result"]["resultType"] == "complete"


def test_argument_rules_by_name_and_by_json_pointer() -> None:
    assert POLICY.decide(ALICE, McpTool("read_note", {"path": "/etc/passwd"}, "files")).effect == "approve"
    assert POLICY.decide(ALICE, McpTool("read_note", {"path": "/tmp/x"}, "files")).effect == "allow"
    assert POLICY.decide(ALICE, McpTool("chmod", {"options": {"mode": "755"}}, "files")).effect == "deny"
    assert POLICY.decide(ALICE, McpTool("chmod", {"options": {"mode": "644"}}, "files")).effect == "allow"
    assert POLICY.decide(ALICE, McpTool("read_note", {}, "other")).effect == "deny"  # no rule names "other"


def test_other_methods_pass_only_where_a_rule_names_the_server() -> None:
    allowed = inspector("files").from_client(request(1, "initialize", protocolVersion="2025-11-25"))
    assert allowed.to_server and not allowed.to_client
    refused = inspector("other").from_client(request(1, "tools/list"))
    assert refused.to_server == [] and sent(refused)[0]["error"]["code"] == DENIED
    assert "mcp_servers" in sent(refused)[0]["error"]["message"]


def test_tools_list_leaves_out_tools_denied_for_all_arguments() -> None:
    mcp = inspector()
    mcp.from_client(request(3, "tools/list"))
    tools = [{"name": name, "inputSchema": {"type": "object"}} for name in ("read_note", "delete_file", "touch")]
    back = sent(mcp.from_server(line({"jsonrpc": "2.0", "id": 3, "result": {"tools": tools}})))
    assert [tool["name"] for tool in back[0]["result"]["tools"]] == ["read_note", "touch"]


def test_a_held_call_is_withdrawn_by_notifications_cancelled() -> None:
    mcp = inspector()
    out = mcp.from_client(request(5, "tools/call", name="read_note", arguments={"path": "/etc/shadow"}))
    (call,) = out.calls
    assert POLICY.decide(ALICE, call.action).effect == "approve"
    waiting = mcp.waiting(call, "waiting for approval (request 9)", 1)
    assert waiting.to_client == []  # no progress token: nothing to say
    cancel = line({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 5}})
    withdrawn = mcp.from_client(cancel)
    assert withdrawn.cancelled == [5] and withdrawn.to_server == []
    assert mcp.forward_call(call).to_server == []  # approved too late: never forwarded


def test_a_held_call_with_a_progress_token_hears_that_it_waits() -> None:
    mcp = inspector()
    out = mcp.from_client(
        request(6, "tools/call", name="read_note", arguments={"path": "/etc/x"}, _meta={"progressToken": "p1"})
    )
    (note,) = sent(mcp.waiting(out.calls[0], "waiting for approval (request 4, rule etc-waits)...", 1))
    assert note["method"] == "notifications/progress"
    assert note["params"] == {
        "progressToken": "p1",
        "progress": 1,
        "message": "bastion: waiting for approval (request 4, rule etc-waits)...",
    }


def test_requests_from_the_server_are_correlated_with_the_clients_responses() -> None:
    mcp = inspector()
    ask = mcp.from_server(request(90, "sampling/createMessage", messages=[{"content": "token: abc123def456ghi"}]))
    assert "[masked:secret]" in ask.to_client[0].decode()
    answer = mcp.from_client(line({"jsonrpc": "2.0", "id": 90, "result": {"content": "ok"}}))
    assert answer.to_server and answer.events[0]["method"] == "sampling/createMessage"
    stray = mcp.from_client(line({"jsonrpc": "2.0", "id": 91, "result": {}}))
    assert stray.to_server == [] and "no request" in stray.events[0]["note"]
    assert mcp.from_server(line({"jsonrpc": "2.0", "id": 77, "result": {}})).to_client == []  # nobody asked


def test_malformed_messages_get_the_matching_error_and_are_recorded() -> None:
    mcp = inspector()
    cases = [
        (b"{not json", PARSE_ERROR),
        (b"\xff\xfe", PARSE_ERROR),
        (b'[{"jsonrpc":"2.0","id":1,"method":"ping"}]', INVALID_REQUEST),
        (b'{"jsonrpc":"1.0","id":1,"method":"ping"}', INVALID_REQUEST),
        (b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":3}}', INVALID_PARAMS),
        (b"x" * 70_000, INVALID_REQUEST),
    ]
    for data, code in cases:
        out = mcp.from_client(data)
        assert out.to_server == [] and out.calls == []
        assert sent(out)[0]["error"]["code"] == code and out.events[0]["effect"] == "refused"


def test_lines_over_the_limit_are_dropped_whole() -> None:
    lines = _Lines(16)
    found = lines.feed(b'{"a":1}\n' + b"y" * 40) + lines.feed(b"z" * 10 + b'\n{"b":2}\n')
    assert found[0] == b'{"a":1}' and found[2] == b'{"b":2}'
    assert not isinstance(found[1], bytes) and "50 bytes" in found[1].reason


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=200).map(str.encode))
def test_any_bytes_from_either_side_never_crash_and_only_json_goes_out(data: bytes) -> None:
    mcp = inspector()
    for out in (mcp.from_client(data), mcp.from_server(data)):
        for message in out.to_client + out.to_server:
            assert isinstance(json.loads(message), dict)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.text(max_size=8),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=30),
            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
            max_leaves=10,
        ),
        max_size=4,
    )
)
def test_a_call_is_forwarded_exactly_as_sent_or_not_at_all(arguments: dict[str, Any]) -> None:
    mcp = inspector()
    body = {"jsonrpc": "2.0", "id": 11, "method": "tools/call", "params": {"name": "touch", "arguments": arguments}}
    out = mcp.from_client(line(body))
    decision: Decision = POLICY.decide(ALICE, out.calls[0].action)
    forwarded = decide(mcp, out).to_server
    if decision.effect == "allow":
        assert [json.loads(data) for data in forwarded] == [body]
    else:
        assert forwarded == []


def test_requests_in_flight_are_bounded() -> None:
    mcp = inspector()
    for message_id in range(MAX_IN_FLIGHT):
        assert mcp.from_client(request(message_id, "ping")).to_server
    refused = mcp.from_client(request(MAX_IN_FLIGHT, "ping"))
    assert refused.to_server == [] and "unanswered" in sent(refused)[0]["error"]["message"]
    mcp.from_server(line({"jsonrpc": "2.0", "id": 0, "result": {}}))  # one answered: room again
    assert mcp.from_client(request(MAX_IN_FLIGHT + 1, "ping")).to_server
