package cluster

// The messages nodes exchange, as JSON (pushes and other protobuf values
// inside them as protobuf bytes). Field names are short: gossip goes to
// every node for every session that starts or ends.

// Kinds of gossip.
const (
	kindEvents    = "ev"  // changes of one node's uids
	kindHeartbeat = "hb"  // a node is alive; its last change's seq
	kindBye       = "bye" // a node is leaving: drop its uids now
)

// gossip is what a node publishes on <prefix>.gossip.
type gossip struct {
	Kind string `json:"k"`
	Node string `json:"n"`
	// Inc names the node's run: new each time it starts, so a node that
	// restarts under the same name is not taken for its past self.
	Inc string `json:"i"`
	// Seq: for events, the seq of Changes[0] (the others follow in
	// order); for a heartbeat, the node's last change.
	Seq     uint64   `json:"s,omitempty"`
	Changes []change `json:"c,omitempty"`
	// Hello asks every node for a heartbeat now (a node starting or
	// reconnecting learns the cluster in one round trip).
	Hello bool `json:"h,omitempty"`
	// Bcast, in a heartbeat, is the last broadcast the node delivered (in
	// the cluster's broadcast log): a node behind it fills its gap.
	Bcast uint64 `json:"b,omitempty"`
}

// change says a node now holds N sessions of Uid (0: none), the oldest
// since Since (Unix nanoseconds). Changes are absolute, so applying one
// twice is harmless: a snapshot and the events after it may overlap.
// Gossip (not snapshots) also says which session started or ended, for
// watchers that ask for session events; those are not repeated by a
// snapshot.
type change struct {
	Uid   string `json:"u"`
	N     int    `json:"n"`
	Since int64  `json:"t,omitempty"`

	Ev      int8              `json:"e,omitempty"` // evStarted, evEnded, or none
	Session string            `json:"s,omitempty"`
	Labels  map[string]string `json:"l,omitempty"`
	At      int64             `json:"a,omitempty"` // Unix nanoseconds
}

const (
	evStarted int8 = 1
	evEnded   int8 = 2
)

// hdrDeadline carries a request's deadline (Unix nanoseconds): a node
// that gets a request after it does nothing, since its caller has already
// answered its own caller (the nodes' clocks are assumed NTP-close).
const hdrDeadline = "Presence-Deadline"

// Requests to one node, on <prefix>.node.<id>.<op>.
const (
	opPush     = "push"
	opBcast    = "bcast"
	opKick     = "kick"
	opSessions = "sessions"
	opReplace  = "replace"
	opSnapshot = "snap"
)

type pushReq struct {
	Uid        string `json:"uid"`
	Push       []byte `json:"push"`           // presencev1.Push
	Prev       uint64 `json:"prev,omitempty"` // the uid log's entry before it
	AckTimeout int64  `json:"ack_timeout,omitempty"`
}

type bcastReq struct {
	Push []byte `json:"push"` // presencev1.Push
}

type kickReq struct {
	Req []byte `json:"req"` // presencev1.KickRequest
}

type sessionsReq struct {
	Uid string `json:"uid"`
}

type replaceReq struct {
	Uid string `json:"uid"`
	Msg string `json:"msg"`
}

type snapReq struct {
	After string `json:"after,omitempty"`
	Limit int    `json:"limit"`
}

// reply is every request's answer; Err set means the request failed there.
type reply struct {
	Err       string   `json:"err,omitempty"`
	Delivered uint32   `json:"delivered,omitempty"`
	Seq       uint64   `json:"seq,omitempty"`
	Epoch     string   `json:"epoch,omitempty"`
	Acked     []string `json:"acked,omitempty"`
	Unacked   []string `json:"unacked,omitempty"`
	Kicked    uint32   `json:"kicked,omitempty"`
	Sessions  [][]byte `json:"sessions,omitempty"` // presencev1.SessionInfo each
	// Snapshot pages: the node's run, its seq when the page was taken,
	// its uids after the asked one, and whether more follow.
	Inc     string   `json:"inc,omitempty"`
	Entries []change `json:"entries,omitempty"`
	More    bool     `json:"more,omitempty"`
}
