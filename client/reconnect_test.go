package client

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
)

// TestReconnectAfter proves the reconnect decision for every ending in
// the protocol's table, the Goodbye taking precedence over the status.
func TestReconnectAfter(t *testing.T) {
	bye := func(r presencev1.GoodbyeReason, reconnect bool, after time.Duration) *presencev1.Goodbye {
		gb := &presencev1.Goodbye{Reason: r, Reconnect: reconnect}
		if after > 0 {
			gb.ReconnectAfter = durationpb.New(after)
		}
		return gb
	}
	st := func(c codes.Code) error { return status.Error(c, "test") }
	for _, tc := range []struct {
		name      string
		err       error
		gb        *presencev1.Goodbye
		reconnect bool
		hint      time.Duration
	}{
		{"unavailable", st(codes.Unavailable), nil, true, 0},
		{"resource exhausted", st(codes.ResourceExhausted), nil, true, 0},
		{"server identify timeout", st(codes.DeadlineExceeded), nil, true, 0},
		{"internal", st(codes.Internal), nil, true, 0},
		{"server silent", fmt.Errorf("%w: 1s", ErrServerSilent), nil, true, 0},
		{"handshake timeout", ErrHandshakeTimeout, nil, true, 0},
		{"stream ended", ErrStreamEnded, nil, true, 0},
		{"token lookup failed", errors.New("getting a token: down"), nil, true, 0},
		{"unauthenticated", st(codes.Unauthenticated), nil, false, 0},
		{"permission denied", st(codes.PermissionDenied), nil, false, 0},
		{"invalid argument", st(codes.InvalidArgument), nil, false, 0},
		{"failed precondition", st(codes.FailedPrecondition), nil, false, 0},
		{"unimplemented", st(codes.Unimplemented), nil, false, 0},
		{"wrapped permanent", fmt.Errorf("identify: %w", st(codes.InvalidArgument)), nil, false, 0},
		{"heartbeat timeout", st(codes.Unavailable), bye(presencev1.GoodbyeReason_GOODBYE_REASON_HEARTBEAT_TIMEOUT, true, 0), true, 0},
		{"slow consumer", st(codes.ResourceExhausted), bye(presencev1.GoodbyeReason_GOODBYE_REASON_SLOW_CONSUMER, true, 0), true, 0},
		{"shutdown with hint", st(codes.Unavailable), bye(presencev1.GoodbyeReason_GOODBYE_REASON_SHUTDOWN, true, 3*time.Second), true, 3 * time.Second},
		{"token expired is retried with a new token", st(codes.Unauthenticated), bye(presencev1.GoodbyeReason_GOODBYE_REASON_TOKEN_EXPIRED, true, 0), true, 0},
		{"replaced", st(codes.Aborted), bye(presencev1.GoodbyeReason_GOODBYE_REASON_REPLACED, false, 0), false, 0},
		{"replaced ignores a reconnect flag", st(codes.Aborted), bye(presencev1.GoodbyeReason_GOODBYE_REASON_REPLACED, true, time.Second), false, 0},
		{"kicked", st(codes.Aborted), bye(presencev1.GoodbyeReason_GOODBYE_REASON_KICKED, false, 0), false, 0},
		{"kicked, may come back", st(codes.Aborted), bye(presencev1.GoodbyeReason_GOODBYE_REASON_KICKED, true, 0), true, 0},
		{"kicked, come back later", st(codes.Aborted), bye(presencev1.GoodbyeReason_GOODBYE_REASON_KICKED, true, 5*time.Second), true, 5 * time.Second},
		{"unknown reason, reconnect", st(codes.Aborted), bye(99, true, time.Second), true, time.Second},
		{"unknown reason, stay away", st(codes.Unavailable), bye(99, false, 0), false, 0},
		{"hint ignored without reconnect", st(codes.Aborted), bye(presencev1.GoodbyeReason_GOODBYE_REASON_KICKED, false, time.Second), false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reconnect, hint := reconnectAfter(tc.err, tc.gb)
			if reconnect != tc.reconnect || hint != tc.hint {
				t.Errorf("reconnectAfter(%v, %v) = %v, %v; want %v, %v", tc.err, tc.gb, reconnect, hint, tc.reconnect, tc.hint)
			}
		})
	}
}
