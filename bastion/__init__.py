"""SSH bastion for hosts that run MCP servers: terminates, gates, masks and records SSH."""

__version__ = "0.1.0"
