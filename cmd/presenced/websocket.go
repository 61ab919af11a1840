package main

import (
	"flag"
	"strings"

	"github.com/presence-dev/presence/daemon"
	"github.com/presence-dev/presence/wsbridge"
)

// webFlags are the flags for browser clients: the WebSocket bridge at
// /v1/connect and the debug console at /.
type webFlags struct {
	allowedOrigins string
}

func bindWebFlags(fs *flag.FlagSet, cfg *daemon.Config) *webFlags {
	f := &webFlags{}
	w := &cfg.WebSocket
	fs.StringVar(&f.allowedOrigins, "ws-allowed-origins", "", `comma-separated origins, besides the daemon's own, whose pages may open WebSockets: host patterns ("app.example.com", "*.example.com") or "https://host"`)
	fs.BoolVar(&w.DevMode, "ws-dev-mode", false, "accept WebSockets from pages of any origin (development only; refused on a non-loopback --http-addr without --insecure)")
	fs.Int64Var(&w.ReadLimit, "ws-read-limit", wsbridge.DefaultReadLimit, "largest WebSocket message accepted from a client, in bytes (close code 4008 past it)")
	fs.DurationVar(&w.WriteTimeout, "ws-write-timeout", wsbridge.DefaultWriteTimeout, "close a WebSocket whose client takes longer than this to take one message")
	fs.BoolVar(&cfg.NoWebConsole, "no-web-console", false, "do not serve the debug console and presence.js at /")
	return f
}

// apply writes the parsed origin list into cfg.
func (f *webFlags) apply(cfg *daemon.Config) {
	cfg.WebSocket.AllowedOrigins = nil
	for p := range strings.SplitSeq(f.allowedOrigins, ",") {
		if p = strings.TrimSpace(p); p != "" {
			cfg.WebSocket.AllowedOrigins = append(cfg.WebSocket.AllowedOrigins, p)
		}
	}
}
