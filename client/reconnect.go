package client

import (
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
)

// reconnectAfter decides, from why a session ended, whether the client
// connects again, and the wait the server asked for (zero means "use the
// backoff"). It follows the protocol's table of endings (GoodbyeReason in
// proto/presence/v1/presence.proto):
//
//   - the Goodbye decides where the server sent one: never after REPLACED
//     (two devices would replace each other forever), after KICKED only
//     when the server says so, always after the others (HEARTBEAT_TIMEOUT,
//     SLOW_CONSUMER, SHUTDOWN, TOKEN_EXPIRED, whose status is
//     Unauthenticated but a fresh token can fix it); for a reason this
//     client does not know, the Goodbye's reconnect flag decides;
//   - otherwise a status a retry cannot fix stops the client
//     (permanentCode), and everything else (Unavailable, a dead connection,
//     a handshake timeout, a failed token lookup) is retried.
func reconnectAfter(err error, gb *presencev1.Goodbye) (reconnect bool, hint time.Duration) {
	if gb != nil {
		switch gb.GetReason() {
		case presencev1.GoodbyeReason_GOODBYE_REASON_REPLACED:
			return false, 0
		case presencev1.GoodbyeReason_GOODBYE_REASON_KICKED:
			reconnect = gb.GetReconnect()
		case presencev1.GoodbyeReason_GOODBYE_REASON_HEARTBEAT_TIMEOUT,
			presencev1.GoodbyeReason_GOODBYE_REASON_SLOW_CONSUMER,
			presencev1.GoodbyeReason_GOODBYE_REASON_SHUTDOWN,
			presencev1.GoodbyeReason_GOODBYE_REASON_TOKEN_EXPIRED:
			reconnect = true
		default:
			reconnect = gb.GetReconnect()
		}
		if reconnect && gb.GetReconnectAfter() != nil {
			hint = max(gb.GetReconnectAfter().AsDuration(), 0)
		}
		return reconnect, hint
	}
	return !permanentCode(status.Code(err)), 0
}

// permanentCode reports whether a stream that ended with code c would end
// the same way again: the client's request itself is wrong, so it stops
// and reports the error rather than retry.
func permanentCode(c codes.Code) bool {
	switch c {
	case codes.Unauthenticated, codes.PermissionDenied, codes.InvalidArgument,
		codes.FailedPrecondition, codes.Unimplemented:
		return true
	}
	return false
}
