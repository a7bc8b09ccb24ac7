"""What both HTTP interfaces share (the REST server and MCP's HTTP transport): the access rules."""
