package server

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/presence-dev/presence/auth"
)

// Options configures a Server. The zero value of every field means "the
// default written beside it"; Validate reports settings that cannot work.
type Options struct {
	// HeartbeatInterval is how often clients are told to Ping (Identified).
	// Default 10 s, the original client's check period. At most a third of
	// HeartbeatTimeout, so one late Ping never ends a live session.
	HeartbeatInterval time.Duration
	// HeartbeatTimeout ends a session that has sent no frame for this long
	// (Goodbye HEARTBEAT_TIMEOUT, UNAVAILABLE). Default 40 s, the original
	// server's.
	HeartbeatTimeout time.Duration
	// ReapInterval is how often the liveness reaper looks for silent
	// sessions. Default 10 s. A silent session ends between HeartbeatTimeout
	// and HeartbeatTimeout+ReapInterval after its last frame.
	ReapInterval time.Duration
	// IdentifyTimeout ends a stream whose first frame (Identify) has not
	// arrived in time (DEADLINE_EXCEEDED). Default 10 s.
	IdentifyTimeout time.Duration

	// QueueMaxMessages and QueueMaxBytes bound each session's outbound
	// queue. A push that would exceed either ends the session as a slow
	// consumer (Goodbye SLOW_CONSUMER, RESOURCE_EXHAUSTED); the push counts
	// as not delivered to it. Defaults 256 frames and 1 MiB.
	QueueMaxMessages int
	QueueMaxBytes    int

	// MaxPayloadBytes bounds one push's payload (the encoded data or
	// binary field). Larger pushes are INVALID_ARGUMENT (HTTP 400): the
	// request itself is wrong and retrying cannot help. Default 64 KiB.
	MaxPayloadBytes int

	// GoodbyeTimeout bounds how long an ending session waits for its
	// writer to flush what is queued and the Goodbye frame before the
	// stream is ended anyway. Default 1 s.
	GoodbyeTimeout time.Duration

	// ShutdownReconnectMin and ShutdownReconnectJitter set the reconnect
	// hint in Goodbye SHUTDOWN: each session gets Min plus a uniformly
	// random part of Jitter, so clients do not all return in the same
	// second. Defaults 1 s and 10 s.
	ShutdownReconnectMin    time.Duration
	ShutdownReconnectJitter time.Duration

	// Tokens verifies the JWT in Identify and RefreshToken. Nil means open
	// development mode: any uid is accepted and tokens are ignored (the
	// daemon allows that only on loopback).
	Tokens auth.TokenVerifier

	// MaxSessionsPerUid bounds the live sessions of one uid. Default 8.
	// What happens to the next one is SessionsPerUidPolicy.
	MaxSessionsPerUid int
	// SessionsPerUidPolicy is ReplaceOldest (default: the oldest session
	// ends with Goodbye REPLACED, ABORTED, so a device that vanished without
	// a goodbye never locks its user out) or RefuseNewest (the new stream
	// ends with RESOURCE_EXHAUSTED).
	SessionsPerUidPolicy UidPolicy
	// MaxSessions bounds live sessions on this server; past it new streams
	// end with RESOURCE_EXHAUSTED. Default 50,000.
	MaxSessions int
	// MaxFrameRate and FrameBurst bound client frames per session (a token
	// bucket); a client past them is ended with RESOURCE_EXHAUSTED.
	// Defaults 20 frames/s with bursts of 40: a client heartbeating every
	// 10 s uses 0.1/s.
	MaxFrameRate float64
	FrameBurst   int

	// PresenceGrace debounces OFFLINE for watchers: a uid whose last
	// session ends and that has a session again within this time produces
	// neither OFFLINE nor ONLINE. Queries are never debounced. Default 5 s;
	// negative means no grace period.
	PresenceGrace time.Duration
	// LastSeenMax bounds how many offline uids' last-seen times are kept;
	// past it the oldest are forgotten. About 100 bytes each. Default
	// 100,000.
	LastSeenMax int
	// WatchQueue bounds each presence watcher's queue of unsent events; a
	// watcher that falls further behind is ended with RESOURCE_EXHAUSTED.
	// Default 1,024.
	WatchQueue int

	// HistorySize bounds the pushes kept per uid and for broadcasts, for
	// resume and stored pushes. Default 64 (or a quarter of
	// QueueMaxMessages if less: a resume replays both sequences into the
	// queue); negative keeps none (resume then always reports lost, and
	// store_for is refused).
	HistorySize int
	// HistoryAge is how long a push is kept for resume. Default 5 min,
	// enough for a phone to change networks. Stored pushes are kept for
	// their own store_for instead.
	HistoryAge time.Duration
	// HistoryMaxBytes bounds the memory of every history together (encoded
	// pushes plus a fixed overhead each). Past it new live pushes are not
	// kept (a resume across them reports lost) and stored pushes are
	// refused with RESOURCE_EXHAUSTED. Default 64 MiB.
	HistoryMaxBytes int64
	// StoreMax bounds SendToUidRequest.store_for. Default 24 h.
	StoreMax time.Duration
	// IdempotencyWindow is how long an idempotency key's answer is kept.
	// Default 10 min.
	IdempotencyWindow time.Duration
	// IdempotencyMaxKeys bounds the keys remembered; past it the oldest
	// are forgotten early. Default 100,000 (about 1 KiB each).
	IdempotencyMaxKeys int

	// Cluster, when set, makes this server one node of several (see
	// Cluster; package cluster implements it over NATS). Default nil: a
	// single node, and nothing of the cluster runs.
	Cluster Cluster

	// Logger receives session start and end records. Default
	// slog.Default().
	Logger *slog.Logger
}

// UidPolicy says what happens when a uid already has MaxSessionsPerUid
// sessions and another identifies.
type UidPolicy int

const (
	// ReplaceOldest ends the uid's oldest session (Goodbye REPLACED).
	ReplaceOldest UidPolicy = iota
	// RefuseNewest refuses the new session (RESOURCE_EXHAUSTED).
	RefuseNewest
)

// ParseUidPolicy parses "replace-oldest" or "refuse-newest".
func ParseUidPolicy(s string) (UidPolicy, error) {
	switch s {
	case "replace-oldest":
		return ReplaceOldest, nil
	case "refuse-newest":
		return RefuseNewest, nil
	}
	return 0, fmt.Errorf("sessions-per-uid policy %q: want replace-oldest or refuse-newest", s)
}

func (p UidPolicy) String() string {
	if p == RefuseNewest {
		return "refuse-newest"
	}
	return "replace-oldest"
}

// The defaults, in one place.
const (
	DefaultHeartbeatInterval       = 10 * time.Second
	DefaultHeartbeatTimeout        = 40 * time.Second
	DefaultReapInterval            = 10 * time.Second
	DefaultIdentifyTimeout         = 10 * time.Second
	DefaultQueueMaxMessages        = 256
	DefaultQueueMaxBytes           = 1 << 20
	DefaultMaxPayloadBytes         = 64 << 10
	DefaultGoodbyeTimeout          = time.Second
	DefaultShutdownReconnectMin    = time.Second
	DefaultShutdownReconnectJitter = 10 * time.Second
	DefaultMaxSessionsPerUid       = 8
	DefaultMaxSessions             = 50_000
	DefaultMaxFrameRate            = 20
	DefaultFrameBurst              = 40
	DefaultPresenceGrace           = 5 * time.Second
	DefaultLastSeenMax             = 100_000
	DefaultWatchQueue              = 1024
	DefaultHistorySize             = 64
	DefaultHistoryAge              = 5 * time.Minute
	DefaultHistoryMaxBytes         = 64 << 20
	DefaultStoreMax                = 24 * time.Hour
	DefaultIdempotencyWindow       = 10 * time.Minute
	DefaultIdempotencyMaxKeys      = 100_000
	// MaxAckTimeout bounds SendToUidRequest.ack_timeout.
	MaxAckTimeout = 30 * time.Second
)

// withDefaults returns o with every zero field set to its default.
func (o Options) withDefaults() Options {
	setDur := func(p *time.Duration, d time.Duration) {
		if *p == 0 {
			*p = d
		}
	}
	setInt := func(p *int, d int) {
		if *p == 0 {
			*p = d
		}
	}
	setDur(&o.HeartbeatInterval, DefaultHeartbeatInterval)
	setDur(&o.HeartbeatTimeout, DefaultHeartbeatTimeout)
	setDur(&o.ReapInterval, DefaultReapInterval)
	setDur(&o.IdentifyTimeout, DefaultIdentifyTimeout)
	setInt(&o.QueueMaxMessages, DefaultQueueMaxMessages)
	setInt(&o.QueueMaxBytes, DefaultQueueMaxBytes)
	setInt(&o.MaxPayloadBytes, DefaultMaxPayloadBytes)
	setDur(&o.GoodbyeTimeout, DefaultGoodbyeTimeout)
	setDur(&o.ShutdownReconnectMin, DefaultShutdownReconnectMin)
	setDur(&o.ShutdownReconnectJitter, DefaultShutdownReconnectJitter)
	setInt(&o.MaxSessionsPerUid, DefaultMaxSessionsPerUid)
	setInt(&o.MaxSessions, DefaultMaxSessions)
	setInt(&o.FrameBurst, DefaultFrameBurst)
	setInt(&o.LastSeenMax, DefaultLastSeenMax)
	setInt(&o.WatchQueue, DefaultWatchQueue)
	setDur(&o.PresenceGrace, DefaultPresenceGrace)
	setInt(&o.HistorySize, min(DefaultHistorySize, o.QueueMaxMessages/4))
	setDur(&o.HistoryAge, DefaultHistoryAge)
	if o.HistoryMaxBytes == 0 {
		o.HistoryMaxBytes = DefaultHistoryMaxBytes
	}
	setDur(&o.StoreMax, DefaultStoreMax)
	setDur(&o.IdempotencyWindow, DefaultIdempotencyWindow)
	setInt(&o.IdempotencyMaxKeys, DefaultIdempotencyMaxKeys)
	if o.MaxFrameRate == 0 {
		o.MaxFrameRate = DefaultMaxFrameRate
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// Validate reports the first setting that cannot work, after defaults.
func (o Options) Validate() error {
	o = o.withDefaults()
	var errs []error
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"heartbeat interval", o.HeartbeatInterval},
		{"heartbeat timeout", o.HeartbeatTimeout},
		{"reap interval", o.ReapInterval},
		{"identify timeout", o.IdentifyTimeout},
		{"goodbye timeout", o.GoodbyeTimeout},
		{"history age", o.HistoryAge},
		{"store max", o.StoreMax},
		{"idempotency window", o.IdempotencyWindow},
	} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("%s is %v; it must be positive", d.name, d.v))
		}
	}
	if o.HeartbeatInterval*3 > o.HeartbeatTimeout {
		errs = append(errs, fmt.Errorf("heartbeat interval %v is more than a third of the heartbeat timeout %v; one late ping would end live sessions", o.HeartbeatInterval, o.HeartbeatTimeout))
	}
	if o.QueueMaxMessages < 1 || o.QueueMaxBytes < 1 || o.MaxPayloadBytes < 1 {
		errs = append(errs, errors.New("queue and payload limits must be positive"))
	}
	if o.MaxSessionsPerUid < 1 || o.MaxSessions < 1 || o.MaxFrameRate <= 0 || o.FrameBurst < 1 {
		errs = append(errs, errors.New("session limits and the frame rate must be positive"))
	}
	if o.HistoryMaxBytes < 0 || o.IdempotencyMaxKeys < 0 {
		errs = append(errs, errors.New("history bytes and idempotency keys must not be negative"))
	}
	if 2*o.HistorySize >= o.QueueMaxMessages {
		errs = append(errs, fmt.Errorf("history size %d is more than half the queue (%d frames); a resume replaying both sequences would overflow it", o.HistorySize, o.QueueMaxMessages))
	}
	if o.ShutdownReconnectMin < 0 || o.ShutdownReconnectJitter < 0 {
		errs = append(errs, errors.New("shutdown reconnect hints must not be negative"))
	}
	return errors.Join(errs...)
}
