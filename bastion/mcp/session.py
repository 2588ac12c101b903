"""Starting MCP inspection for a session: which declared server an exec runs, and the inspector for it."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from bastion.audit import events as ev
from bastion.audit.recording import SessionRecording
from bastion.control.actions import Decision, McpMethod
from bastion.control.gate import Gate
from bastion.masking.config import MaskingSettings
from bastion.masking.masker import Masker
from bastion.masking.values import mask_json
from bastion.mcp.config import McpServer, McpSettings
from bastion.mcp.inspector import McpInspector
from bastion.mcp.stdio import McpStdio

__all__ = ["inspector_for", "open_stdio"]


def inspector_for(server: McpServer, settings: McpSettings, gate: Gate | None, masker: Masker | None) -> McpInspector:
    """The inspector of one session with `server`, deciding for the gate's subject."""

    def method_decision(method: str) -> Decision:
        if gate is None:
            return Decision("allow", None, "")
        action = McpMethod(server.name, method)
        decision = gate.ctx.policy.decide(gate.subject, action)
        if not decision.allowed:
            gate.record(action, decision, "deny")  # every refused message is in the audit log
        return decision

    def hides_tool(tool: str) -> bool:
        return (
            gate is not None
            and settings.hide_denied_tools
            and gate.ctx.policy.hides_tool(gate.subject, server.name, tool)
        )

    def mask(value: Any) -> Any:
        return mask_json(masker, value) if masker is not None else value

    return McpInspector(server.name, method_decision, hides_tool, mask, time.monotonic, settings.max_message)


def open_stdio(
    command: str,
    servers: tuple[McpServer, ...],
    settings: McpSettings,
    gate: Gate | None,
    masking: tuple[Masker, MaskingSettings] | None,
    recording: SessionRecording,
    to_server: Callable[[bytes], None],
    to_client: Callable[[bytes], None],
) -> McpStdio | None:
    """An `McpStdio` when the exec command is a declared stdio server of the host, else None."""
    server = next((candidate for candidate in servers if candidate.runs(command)), None)
    if server is None:
        return None
    inspector = inspector_for(server, settings, gate, masking[0] if masking is not None else None)
    recording.describe(extra={**recording.info.extra, "mcp_server": server.name})
    recording.closing_extra.append(lambda: {"mcp_server": server.name, "mcp_calls": inspector.calls})

    def record(event: dict[str, Any]) -> None:
        if not recording.closed:
            recording.note(ev.MCP, **event)

    return McpStdio(inspector, gate, to_server, to_client, record, settings.max_message)
