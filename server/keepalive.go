package server

import (
	"time"

	"google.golang.org/grpc/keepalive"
)

// Liveness has two layers. This file holds the transport layer: HTTP/2
// PINGs that grpc-go sends and polices per connection. The application
// layer, Ping frames and the reaper, is in reaper.go.

// DefaultKeepaliveParams are the server's transport keepalive settings.
var DefaultKeepaliveParams = keepalive.ServerParameters{
	// MaxConnectionIdle: never. It counts only time with no open stream, so
	// it never fires for a connection carrying Connect; idle connections
	// without streams are cheap and clients reuse them on reconnect.
	MaxConnectionIdle: 0,
	// MaxConnectionAge: never. Sessions are meant to live for days; load
	// balancing is done by clients reconnecting after Goodbye SHUTDOWN.
	MaxConnectionAge: 0,
	// Time: ping a connection after 30 s with no frame in either direction.
	// A client heartbeating every 10 s never triggers it; it finds dead TCP
	// peers on connections without an active session (grpc-go's default is
	// 2 h, far too long to free a dead peer's resources).
	Time: 30 * time.Second,
	// Timeout: close the connection if the ping is not answered within
	// 10 s, so a dead peer is gone 40 s after its last frame, the same
	// bound as the heartbeat timeout.
	Timeout: 10 * time.Second,
}

// DefaultKeepalivePolicy is what the server allows clients to do.
var DefaultKeepalivePolicy = keepalive.EnforcementPolicy{
	// MinTime: clients may ping at most every 5 s. grpc-go clients never
	// ping more often than every 10 s and other stacks commonly use 10 to
	// 30 s, so every sane client passes with room for jitter; grpc-go's
	// default of 5 min would cut those clients off with GOAWAY
	// too_many_pings. A client pinging faster is cut off with GOAWAY
	// ENHANCE_YOUR_CALM "too_many_pings".
	MinTime: 5 * time.Second,
	// PermitWithoutStream: allow pings on a connection with no open stream,
	// so a client can keep its connection warm between sessions (for
	// example while it backs off before reconnecting).
	PermitWithoutStream: true,
}
