// Package client is the Go SDK for the presence service: it holds one
// Connect session open for a uid, heartbeats, detects a dead connection,
// reconnects with backoff, and hands pushes and state changes to the
// caller.
//
//	c, err := client.New(client.Config{
//		Target:  "127.0.0.1:9090",
//		UID:     "alice",
//		OnPush:  func(p *client.Push) { log.Print(p.Msg.GetData()) },
//		OnState: func(s client.StateChange) { log.Print(s.State, s.Err) },
//	})
//	if err != nil { ... }
//	defer c.Close()
//
// # Lifecycle
//
// New starts a supervisor goroutine and returns. Each connection attempt
// dials a new gRPC connection, sends Identify (uid, labels and a token from
// Config.Token or Config.TokenFunc, asked again on every attempt), and waits
// for Identified, all within Config.HandshakeTimeout. Once identified, the
// client sends Ping at the interval the server announced, and treats a
// server that sends nothing at all (not even Pong) for the announced
// heartbeat timeout as gone: it cancels the stream and reconnects on a
// new connection (ErrServerSilent).
//
// When a session ends the client decides from the Goodbye and the status
// (see GoodbyeReason in proto/presence/v1/presence.proto): it reconnects
// after the server's reconnect_after hint or a Backoff delay, or it stops
// for good after Goodbye REPLACED, KICKED without a reconnect hint, or a
// status that a retry cannot fix (Unauthenticated, PermissionDenied,
// InvalidArgument, FailedPrecondition, Unimplemented). Client.Err then says
// why, and Client.Done is closed. The backoff count resets once a session
// has stayed up for Backoff.ResetAfter.
//
// Close ends the session, waits for every goroutine the client started,
// and reports StateClosed; nothing the client started outlives it.
//
// # Concurrency contract
//
// While connected a client runs three goroutines: the supervisor (which
// also watches the session's liveness), a reader (the only caller of Recv)
// and a writer (the only caller of Send, which sends Pings). The callbacks
// are called in order and never concurrently with each other: OnState from
// the supervisor, OnPush from the reader, and a session's reader runs only
// between its StateConnected and its StateDisconnected.
//
// # Why pushes arrive through a callback, not a channel
//
// OnPush is called synchronously on the reader goroutine, in stream order.
// A channel would have to pick an overflow policy inside the SDK: block the
// reader when the caller stops draining (the same thing as a callback, with
// a buffer that hides it), or drop pushes silently, which the service
// promises never to do. With a callback the flow control is the stream's
// own: while OnPush runs the reader does not read, gRPC's flow-control
// window fills, the server's bounded per-session queue fills behind it, and
// the server ends the session with Goodbye SLOW_CONSUMER, which the client
// reports and recovers from by reconnecting. Nothing is dropped without a
// trace, and nothing is buffered without a bound. A callback also leaves
// room for acknowledging a push once the protocol has acks (a method on
// Push) and for tracking the last seq seen per scope and epoch for resume,
// both on the same goroutine that delivers.
//
// So OnPush should return quickly; to do slow work, hand the push to your
// own goroutine or queue, with the overflow policy your application wants.
// Time spent in OnPush does not count as server silence. Callers that want
// a channel can write one in a line:
//
//	pushes := make(chan *client.Push, 64)
//	cfg.OnPush = func(p *client.Push) { pushes <- p } // blocks when full
//
// OnPush and OnState must not call Close: Close waits for them to return.
//
// # Later protocol features
//
// Tokens: the client asks TokenFunc for a token on every attempt, so after
// Goodbye TOKEN_EXPIRED it reconnects with a fresh one. Refreshing on an
// open stream (the RefreshToken frame, answered by TokenRefreshed, which
// this client ignores today) is a frame queued to the writer, the one
// place frames are sent from; push acks would be too. Resume after a
// reconnect needs the last (scope, epoch, seq) seen, which the reader sees
// first, and a field in Identify to send it.
package client
