package wsbridge

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/coder/websocket"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestCloseCode pins the status → close code mapping documented in doc.go.
func TestCloseCode(t *testing.T) {
	for _, tc := range []struct {
		name       string
		err        error
		wantCode   websocket.StatusCode
		wantReason string
	}{
		{"client hung up", nil, 1000, ""},
		{"OK status", status.Error(codes.OK, ""), 1000, ""},
		{"invalid argument", status.Error(codes.InvalidArgument, "empty frame"), 4003, "empty frame"},
		{"identify timeout", status.Error(codes.DeadlineExceeded, "no Identify"), 4004, "no Identify"},
		{"limits", status.Error(codes.ResourceExhausted, "too big"), 4008, "too big"},
		{"frame order", status.Error(codes.FailedPrecondition, "x"), 4009, "x"},
		{"replaced or kicked", status.Error(codes.Aborted, "replaced"), 4010, "replaced"},
		{"unknown frame", status.Error(codes.Unimplemented, "x"), 4012, "x"},
		{"heartbeat, shutdown", status.Error(codes.Unavailable, "x"), 4014, "x"},
		{"token", status.Error(codes.Unauthenticated, "x"), 4016, "x"},
		{"not a status", errors.New("boom"), 4002, "boom"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, reason := CloseCode(tc.err)
			if code != tc.wantCode || reason != tc.wantReason {
				t.Errorf("CloseCode(%v) = %d, %q; want %d, %q", tc.err, code, reason, tc.wantCode, tc.wantReason)
			}
			if c, ok := GRPCCode(code); code >= CloseCodeBase && (!ok || c != status.Code(tc.err)) {
				t.Errorf("GRPCCode(%d) = %v, %v; want %v, true", code, c, ok, status.Code(tc.err))
			}
		})
	}
	if _, ok := GRPCCode(websocket.StatusNormalClosure); ok {
		t.Error("GRPCCode(1000) reports a session code; want false")
	}
}

// TestCloseReasonFits proves a long status message is cut to fit a close
// frame without splitting a character.
func TestCloseReasonFits(t *testing.T) {
	msg := strings.Repeat("é", 100) // 200 bytes
	_, reason := CloseCode(status.Error(codes.Unavailable, msg))
	if len(reason) > maxCloseReason || !utf8.ValidString(reason) || !strings.HasPrefix(msg, reason) {
		t.Errorf("reason = %q (%d bytes); want a valid prefix of at most %d bytes", reason, len(reason), maxCloseReason)
	}
	if len(reason) < maxCloseReason-1 {
		t.Errorf("reason is %d bytes; want it cut at the limit, not before", len(reason))
	}
}
