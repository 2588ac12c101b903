"""Real MCP parts (the official `mcp` SDK) for the MCP-over-SSH tests: a stdio server and client helpers."""
