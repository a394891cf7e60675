//go:build tools

// The programs the test node runs in pods, pinned here: ToolHive's proxy runner
// (the version the chart's toolhiveRunnerImage names) and the Go MCP SDK's memory
// server (an MCP server speaking streamable HTTP or stdio).
package tools

import (
	_ "github.com/modelcontextprotocol/go-sdk/examples/server/memory"
	_ "github.com/stacklok/toolhive/cmd/thv-proxyrunner"
)
