package server

import (
	"context"
	"errors"
	"time"

	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
)

// Shared is storage that every node of a cluster reaches (package cluster
// keeps it in NATS JetStream). With it, idempotency keys and stored pushes
// hold wherever a call or a client lands; without it (one node, or a
// cluster without JetStream) they are kept by the node that took the call.
// A Cluster offers it through Shared.
type Shared interface {
	// KeyCreate, KeyGet, KeyUpdate and KeyDelete are a key-value store
	// with compare-and-set on revisions, whose entries expire an
	// idempotency window after their last write. KeyCreate fails with
	// ErrKeyExists, KeyGet with ErrKeyNotFound, KeyUpdate and KeyDelete
	// with ErrKeyChanged when rev is no longer the key's.
	KeyCreate(ctx context.Context, key string, val []byte) (rev uint64, err error)
	KeyGet(ctx context.Context, key string) (val []byte, rev uint64, err error)
	KeyUpdate(ctx context.Context, key string, val []byte, rev uint64) (uint64, error)
	KeyDelete(ctx context.Context, key string, rev uint64) error

	// StorePush keeps push for uid until ttl passes or a node takes it.
	// It fails with ErrStoreFull (wrapped, with the reason) when the store
	// refuses it.
	StorePush(ctx context.Context, uid string, push *presencev1.Push, ttl time.Duration) error
	// TakePushes removes the uid's stored pushes and returns them, oldest
	// first. Each stored push is returned by one call only, on whichever
	// node. On an error it returns what it took before the error.
	TakePushes(ctx context.Context, uid string) ([]StoredPush, error)

	// AppendBroadcast appends push to the cluster's broadcast log and
	// returns its seq there: the cluster's broadcast sequence, which every
	// node delivers in order.
	AppendBroadcast(ctx context.Context, push *presencev1.Push) (seq uint64, err error)
	// ReadBroadcasts returns the logged broadcasts with seq from..to, in
	// order, with Seq set; one no longer in the log is absent.
	ReadBroadcasts(ctx context.Context, from, to uint64) ([]*presencev1.Push, error)

	// AppendUid appends push to uid's log and returns its seq there and
	// the seq of the uid's entry before it (0: none).
	AppendUid(ctx context.Context, uid string, push *presencev1.Push) (seq, prev uint64, err error)
	// ReadUid returns uid's log entries after seq after, in order, with
	// Seq set (none when after is math.MaxUint64), and the seq of its last
	// entry (0: none).
	ReadUid(ctx context.Context, uid string, after uint64) (pushes []LoggedPush, last uint64, err error)
}

// StoredPush is a push taken from the shared store, with the time it was
// to be kept until.
type StoredPush struct {
	Push  *presencev1.Push
	Until time.Time
}

// Errors of Shared.
var (
	ErrKeyExists   = errors.New("key exists")
	ErrKeyNotFound = errors.New("key not found")
	ErrKeyChanged  = errors.New("key changed since read")
	ErrStoreFull   = errors.New("the store is full")
)
