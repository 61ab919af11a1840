package client

import (
	"fmt"
	"time"

	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
)

// Push is one message from a backend, as OnPush receives it.
type Push struct {
	// SessionID is the session the push arrived on.
	SessionID string
	// Msg is the frame as received: Id, Scope, Seq and Epoch (to spot
	// gaps), SentAt, and the payload (Msg.GetData() or Msg.GetBinary()).
	// Treat it as read-only.
	Msg *presencev1.Push
}

// State is where a Client is in its life.
type State int

// The states, in the order a client goes through them. Every Connecting is
// followed by a Disconnected (with a Connected between them when the
// attempt got that far); Closed is always last, reported once.
const (
	// StateConnecting: an attempt has started.
	StateConnecting State = iota + 1
	// StateConnected: the server answered Identify; the session is live.
	StateConnected
	// StateDisconnected: the attempt or session ended. Reconnect says
	// whether another attempt follows after RetryIn.
	StateDisconnected
	// StateClosed: the client has stopped for good, after Close or a
	// permanent error. Nothing follows.
	StateClosed
)

var stateNames = [...]string{
	StateConnecting:   "connecting",
	StateConnected:    "connected",
	StateDisconnected: "disconnected",
	StateClosed:       "closed",
}

// String returns the state's lower-case name.
func (s State) String() string {
	if s > 0 && int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("state(%d)", int(s))
}

// StateChange reports a new state and what goes with it.
type StateChange struct {
	State State
	// Attempt numbers connection attempts from 1, since New or since the
	// last session that stayed up for Backoff.ResetAfter (which counts as
	// attempt 1). The wait before attempt n was drawn from
	// Backoff.Window(n-2). Set for Connecting.
	Attempt int
	// SessionID is the server's id for the session. Set for Connected, and
	// for Disconnected when the attempt had connected.
	SessionID string
	// UID is the uid the server identified the session as (from the
	// token's subject when Config.UID is empty). Set for Connected.
	UID string
	// Identified is the server's answer to Identify, with the resume
	// results. Set for Connected.
	Identified *presencev1.Identified
	// Lost is set for Connected when the session resumed after a
	// disconnection but the server's history no longer covered the gap:
	// pushes sent meanwhile were missed and will not come. Resync from
	// your backend. (With Lost unset, every push missed while
	// disconnected is replayed, in order, before live ones.)
	Lost bool
	// Err says why the attempt or session ended: a gRPC status error from
	// the server (status.Code(Err) gives its code), or one of this
	// package's errors. Set for Disconnected; for Closed, the permanent
	// error that stopped the client, or nil after Close.
	Err error
	// Goodbye is the server's last word before it ended the stream, when
	// it sent one. Disconnected only.
	Goodbye *presencev1.Goodbye
	// Reconnect says whether the client will try again, and RetryIn after
	// how long. Disconnected only.
	Reconnect bool
	RetryIn   time.Duration
}
