"""An MCP stdio server (the official SDK's MCPServer) whose tools the MCP-over-SSH tests call.

Run it by path, from any directory and by any account that can read the repository:

    python3 /path/to/repo/tests/mcp_fixtures/files_server.py --marker-dir DIR

It imports nothing from the repository, so it needs neither the repository as cwd nor PYTHONPATH:
when started by an interpreter other than the repository's virtualenv (the target's login cannot
always execute the virtualenv's python, which may live under a private home directory), it puts the
virtualenv's site-packages for its own Python version first on sys.path, found from this file's place.

Tools:
- read_note(path): text with secrets (an AWS key id, an e-mail address), and the same text in
  structuredContent (`text`) beside an int (`size`) and the path (`path`).
- touch_marker(name): creates NAME in the marker directory; returns "touched NAME".
- delete_file(path): deletes nothing; creates "deleted-BASENAME" in the marker directory.
- slow_count(n): reports progress n times, then returns "counted N".
- whoami(): the account the server runs as.

The marker directory is `--marker-dir DIR`, else $MCP_MARKER_DIR, else /tmp/mcp-markers. A test
that expects a call to be refused checks that its marker was never created.
"""

from __future__ import annotations

import argparse
import os
import site
import sys
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[2]
DEFAULT_MARKER_DIR = "/tmp/mcp-markers"
AWS_KEY = "AKIAIOSFODNN7EXAMPLE"
EMAIL = "jane.doe@example.org"


def _use_repository_venv() -> None:
    """Put the repository virtualenv's site-packages (with its .pth files) first on sys.path, once."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    packages = REPOSITORY / ".venv" / "lib" / version / "site-packages"
    if not packages.is_dir() or str(packages) in sys.path:
        return
    before = list(sys.path)
    site.addsitedir(str(packages))
    sys.path[:] = [entry for entry in sys.path if entry not in before] + before


_use_repository_venv()

from typing import Annotated  # noqa: E402

from mcp.server import MCPServer  # noqa: E402
from mcp.server.mcpserver import Context  # noqa: E402
from mcp.types import CallToolResult, TextContent  # noqa: E402
from pydantic import BaseModel  # noqa: E402

mcp = MCPServer("files-server")
marker_dir = Path(os.environ.get("MCP_MARKER_DIR") or DEFAULT_MARKER_DIR)


class Note(BaseModel):
    """read_note's structured output: the note's text (with its secrets), its length and its path."""

    path: str
    text: str
    size: int


def note_text(path: str) -> str:
    return f"note for {path}: aws key {AWS_KEY}, mail {EMAIL}"


def _marker(name: str) -> Path:
    marker_dir.mkdir(parents=True, exist_ok=True)
    marker = marker_dir / Path(name).name  # never outside the marker directory
    marker.touch()
    return marker


@mcp.tool()
def read_note(path: str) -> Annotated[CallToolResult, Note]:
    """Read a note (its text holds an AWS key id and an e-mail address)."""
    text = note_text(path)
    note = Note(path=path, text=text, size=len(text))
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=note.model_dump())


@mcp.tool()
def touch_marker(name: str) -> str:
    """Create the file NAME in the marker directory."""
    _marker(name)
    return f"touched {name}"


@mcp.tool()
def delete_file(path: str) -> str:
    """Pretend to delete PATH: creates deleted-BASENAME in the marker directory instead."""
    _marker(f"deleted-{Path(path).name}")
    return f"deleted {path}"


@mcp.tool()
async def slow_count(n: int, ctx: Context) -> str:
    """Count to N, reporting progress at each step."""
    for i in range(1, n + 1):
        await ctx.report_progress(i, n, f"step {i} of {n}")
    return f"counted {n}"


@mcp.tool()
def whoami() -> str:
    """The account this server runs as."""
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


def main(argv: list[str] | None = None) -> None:
    global marker_dir
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--marker-dir", help=f"where markers are created (default $MCP_MARKER_DIR or {DEFAULT_MARKER_DIR})"
    )
    args = parser.parse_args(argv)
    if args.marker_dir:
        marker_dir = Path(args.marker_dir)
    mcp.run()


if __name__ == "__main__":
    main()
