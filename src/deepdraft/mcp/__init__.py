"""The MCP server: deepdraft as tools for MCP clients."""
