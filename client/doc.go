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
// trace, and nothing is buffered without a bound. A callback also makes
// "handled" well defined, for acks and resume: OnPush has returned.
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
// # Nothing lost across reconnects
//
// The client remembers the last push it handled in each sequence (its
// uid's and the broadcasts', by epoch and seq; a push counts as handled
// once OnPush returns) and sends that position in Identify on every
// reconnect. The server then replays what was missed, in order and before
// any live push, so OnPush sees every push exactly once across a dropped
// connection, as long as the server's history (--history-size,
// --history-age) still covers the gap. When it does not (a long absence, a
// restarted server), the StateConnected change has Lost set: pushes were
// missed, resync from your backend. StateChange.Identified has the
// details.
//
// A push that asks for an acknowledgement (Push.Msg.GetAckRequired(), when
// the backend called SendToUid with ack_timeout) is acked by the client
// once OnPush has returned; the backend's answer then lists this session.
//
// # Tokens
//
// The client asks TokenFunc for a token on every attempt, so after Goodbye
// TOKEN_EXPIRED it reconnects with a fresh one. On an open session it also
// refreshes before expiry: when 80% of the token's remaining lifetime (its
// exp claim, read without verifying) has passed it asks TokenFunc again and
// sends the new token in a RefreshToken frame, so a session outlives its
// tokens. A static Config.Token is never refreshed.
package client
