package server

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
)

// Reason says why a session ended. It is the single place that maps an
// ending to a gRPC code and a Goodbye reason (DESIGN.md, "How a stream
// ends").
type Reason int

// The ways a session ends.
const (
	ReasonUnknown          Reason = iota
	ReasonClientClosed            // the client half-closed or cancelled the stream
	ReasonIdentifyTimeout         // no Identify within the identify timeout
	ReasonProtocol                // a frame out of order (before Identify, a second Identify)
	ReasonInvalidFrame            // an empty frame or invalid Identify fields
	ReasonUnknownFrame            // a client frame this server does not know
	ReasonUnauthenticated         // bad, expired or missing token at Identify
	ReasonPermissionDenied        // a valid token for another uid
	ReasonTokenExpired            // the token expired on an open session
	ReasonHeartbeatTimeout        // no client frame for the heartbeat timeout
	ReasonSlowConsumer            // the outbound queue overflowed
	ReasonLimit                   // a frame flood, too many sessions, a message too large
	ReasonReplaced                // a newer session of the same uid took this one's place
	ReasonKicked                  // a backend ended the session
	ReasonShutdown                // the server is shutting down
	ReasonTransport               // the transport failed under the session
)

var reasonNames = [...]string{
	ReasonUnknown:          "unknown",
	ReasonClientClosed:     "client_closed",
	ReasonIdentifyTimeout:  "identify_timeout",
	ReasonProtocol:         "protocol_violation",
	ReasonInvalidFrame:     "invalid_frame",
	ReasonUnknownFrame:     "unknown_frame",
	ReasonUnauthenticated:  "unauthenticated",
	ReasonPermissionDenied: "permission_denied",
	ReasonTokenExpired:     "token_expired",
	ReasonHeartbeatTimeout: "heartbeat_timeout",
	ReasonSlowConsumer:     "slow_consumer",
	ReasonLimit:            "limit_exceeded",
	ReasonReplaced:         "replaced",
	ReasonKicked:           "kicked",
	ReasonShutdown:         "shutdown",
	ReasonTransport:        "transport_error",
}

// String returns the reason's snake_case name, as used in logs and metrics.
func (r Reason) String() string {
	if r >= 0 && int(r) < len(reasonNames) {
		return reasonNames[r]
	}
	return fmt.Sprintf("reason(%d)", int(r))
}

// Code is the gRPC status code a stream ending for r carries.
func (r Reason) Code() codes.Code {
	switch r {
	case ReasonClientClosed:
		return codes.Canceled
	case ReasonIdentifyTimeout:
		return codes.DeadlineExceeded
	case ReasonProtocol:
		return codes.FailedPrecondition
	case ReasonInvalidFrame:
		return codes.InvalidArgument
	case ReasonUnknownFrame:
		return codes.Unimplemented
	case ReasonUnauthenticated, ReasonTokenExpired:
		return codes.Unauthenticated
	case ReasonPermissionDenied:
		return codes.PermissionDenied
	case ReasonHeartbeatTimeout, ReasonShutdown, ReasonTransport:
		return codes.Unavailable
	case ReasonSlowConsumer, ReasonLimit:
		return codes.ResourceExhausted
	case ReasonReplaced, ReasonKicked:
		return codes.Aborted
	default:
		return codes.Internal
	}
}

// goodbye is the Goodbye reason sent before the stream ends, or
// UNSPECIFIED when the table sends none.
func (r Reason) goodbye() presencev1.GoodbyeReason {
	switch r {
	case ReasonHeartbeatTimeout:
		return presencev1.GoodbyeReason_GOODBYE_REASON_HEARTBEAT_TIMEOUT
	case ReasonSlowConsumer:
		return presencev1.GoodbyeReason_GOODBYE_REASON_SLOW_CONSUMER
	case ReasonReplaced:
		return presencev1.GoodbyeReason_GOODBYE_REASON_REPLACED
	case ReasonKicked:
		return presencev1.GoodbyeReason_GOODBYE_REASON_KICKED
	case ReasonShutdown:
		return presencev1.GoodbyeReason_GOODBYE_REASON_SHUTDOWN
	case ReasonTokenExpired:
		return presencev1.GoodbyeReason_GOODBYE_REASON_TOKEN_EXPIRED
	default:
		return presencev1.GoodbyeReason_GOODBYE_REASON_UNSPECIFIED
	}
}

// EndError is the cause a session's context is cancelled with. The handler
// turns it into the stream's status, after a Goodbye where the reason has
// one.
type EndError struct {
	Reason Reason
	// Msg says what happened and what to do, in words a user can act on.
	Msg string
	// Reconnect and ReconnectAfter fill Goodbye's reconnect hint.
	Reconnect      bool
	ReconnectAfter time.Duration
}

func (e *EndError) Error() string { return e.Reason.String() + ": " + e.Msg }

// GRPCStatus lets status.FromError see the status an EndError ends with.
func (e *EndError) GRPCStatus() *status.Status { return status.New(e.Reason.Code(), e.Msg) }

// endf builds an EndError with a formatted message.
func endf(r Reason, format string, args ...any) *EndError {
	return &EndError{Reason: r, Msg: fmt.Sprintf(format, args...)}
}

// goodbyeFrame returns the Goodbye frame for e, or nil when its reason sends
// none.
func (e *EndError) goodbyeFrame() *presencev1.ConnectResponse {
	gr := e.Reason.goodbye()
	if gr == presencev1.GoodbyeReason_GOODBYE_REASON_UNSPECIFIED {
		return nil
	}
	// Reconnecting is right after these endings (with backoff, or with a
	// new token); REPLACED never; KICKED only when the backend says so.
	reconnect := e.Reconnect
	switch e.Reason {
	case ReasonHeartbeatTimeout, ReasonSlowConsumer, ReasonShutdown, ReasonTokenExpired:
		reconnect = true
	case ReasonReplaced:
		reconnect = false
	}
	g := &presencev1.Goodbye{Reason: gr, Message: e.Msg, Reconnect: reconnect}
	if reconnect && e.ReconnectAfter > 0 {
		g.ReconnectAfter = durationpb.New(e.ReconnectAfter)
	}
	return &presencev1.ConnectResponse{Frame: &presencev1.ConnectResponse_Goodbye{Goodbye: g}}
}

// asEndError extracts the EndError from a context cause, mapping anything
// else (the stream's own context ending) to a client or transport ending.
func asEndError(cause error) *EndError {
	var e *EndError
	if errors.As(cause, &e) {
		return e
	}
	if cause == nil || errors.Is(cause, context.Canceled) || errors.Is(cause, context.DeadlineExceeded) {
		return &EndError{Reason: ReasonClientClosed, Msg: "the client closed the stream"}
	}
	return &EndError{Reason: ReasonTransport, Msg: "the connection failed: " + cause.Error()}
}
