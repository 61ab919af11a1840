package client

import "errors"

// Errors a StateChange (or Client.Err) can carry besides a gRPC status
// from the server. They are wrapped with details; test with errors.Is.
var (
	// ErrClosed: Close was called.
	ErrClosed = errors.New("client closed")
	// ErrServerSilent: no frame came from the server for the heartbeat
	// timeout it announced, so the connection is taken as dead (a frozen
	// server or a network path that stopped without closing). The client
	// reconnects on a new connection.
	ErrServerSilent = errors.New("no frame from the server within the heartbeat timeout")
	// ErrHandshakeTimeout: the attempt did not reach Identified within
	// Config.HandshakeTimeout. The client reconnects with backoff.
	ErrHandshakeTimeout = errors.New("no Identified from the server within the handshake timeout")
	// ErrStreamEnded: the server ended the stream without an error status.
	// The client reconnects with backoff.
	ErrStreamEnded = errors.New("the server ended the stream")
)
