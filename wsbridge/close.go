package wsbridge

import (
	"unicode/utf8"

	"github.com/coder/websocket"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// CloseCodeBase is added to a gRPC code to make the close code for a
// session that ended with that code: 4000 + codes.Unavailable (14) = 4014.
// 4000-4999 is the range RFC 6455 leaves to applications.
const CloseCodeBase = 4000

// maxCloseReason is the longest close reason a close frame can carry: a
// control frame holds 125 bytes, two of which are the code.
const maxCloseReason = 123

// CloseCode returns the WebSocket close code and reason for the status
// Serve returned: 1000 and no reason for nil (the client hung up), else
// 4000 plus the gRPC code, with the status message as the reason.
func CloseCode(err error) (websocket.StatusCode, string) {
	if err == nil {
		return websocket.StatusNormalClosure, ""
	}
	st := status.Convert(err)
	if st.Code() == codes.OK {
		return websocket.StatusNormalClosure, ""
	}
	return websocket.StatusCode(CloseCodeBase + int(st.Code())), truncateReason(st.Message())
}

// GRPCCode is CloseCode's inverse for session endings: the gRPC code a
// close code in 4000-4016 stands for, and whether it was one.
func GRPCCode(c websocket.StatusCode) (codes.Code, bool) {
	n := int(c) - CloseCodeBase
	if n < 0 || n > int(codes.Unauthenticated) {
		return codes.Unknown, false
	}
	return codes.Code(n), true
}

// truncateReason cuts s to fit a close frame, at a rune boundary.
func truncateReason(s string) string {
	if len(s) <= maxCloseReason {
		return s
	}
	s = s[:maxCloseReason]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}
