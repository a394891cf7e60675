// mcp-echo: an MCP server (streamable HTTP) whose one tool, request_headers, answers
// with the HTTP headers its caller sent. The tests put it behind an MCPRemoteProxy to
// see what the proxy adds to each request (injected headers, a bearer token).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"log"
	"net/http"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

type noInput struct{}

func main() {
	addr := flag.String("http", ":8080", "address to serve streamable HTTP on")
	flag.Parse()
	server := mcp.NewServer(&mcp.Implementation{Name: "echo"}, nil)
	mcp.AddTool(server, &mcp.Tool{Name: "request_headers", Description: "the HTTP headers of this request"},
		func(_ context.Context, req *mcp.CallToolRequest, _ noInput) (*mcp.CallToolResult, any, error) {
			headers := map[string]string{}
			if req.Extra != nil {
				for name, values := range req.Extra.Header {
					if len(values) > 0 {
						headers[name] = values[0]
					}
				}
			}
			text, err := json.Marshal(headers)
			if err != nil {
				return nil, nil, err
			}
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: string(text)}}}, nil, nil
		})
	handler := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, nil)
	log.Printf("mcp-echo listening at %s", *addr)
	httpServer := &http.Server{Addr: *addr, Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	log.Fatal(httpServer.ListenAndServe())
}
