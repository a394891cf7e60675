//go:build tools

// ToolHive programs and an MCP server the tests run, pinned here: the proxy runner
// (the version the chart's toolhiveRunnerImage names), ToolHive's own operator (the
// reference of the differential test) and the Go MCP SDK's memory server (an MCP
// server speaking streamable HTTP or stdio).
package tools

import (
	_ "github.com/modelcontextprotocol/go-sdk/examples/server/memory"
	_ "github.com/stacklok/toolhive/cmd/thv-operator"
	_ "github.com/stacklok/toolhive/cmd/thv-proxyrunner"
)
