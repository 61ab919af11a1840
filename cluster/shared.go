package cluster

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
	"github.com/presence-dev/presence/server"
)

// shared is the cluster's storage in NATS JetStream (server.Shared): a
// key-value bucket for idempotency keys and a stream for stored pushes.
// Everything else the cluster does is core NATS.
type shared struct {
	open    func(context.Context) error // creates or updates the assets again
	kv      jetstream.KeyValue
	stream  jetstream.Stream // stored pushes
	bcast   jetstream.Stream // the broadcast log
	bcastTo string           // its subject
	uids    jetstream.Stream // the uid log
	uidTo   string           // its subjects' prefix

	mu      sync.Mutex
	uidLast map[string]uint64 // a uid's last log entry, as last seen here
	js      jetstream.JetStream
	subject string // stored pushes: subject + hex(uid)
	noStore string // why pushes cannot be stored at all ("" if they can)
	stored  func(uid string)
}

var _ server.Shared = (*shared)(nil)

// assetName is the prefix as a JetStream stream or bucket name.
func assetName(prefix string) string {
	return strings.Map(func(r rune) rune {
		if nameRune(r) {
			return r
		}
		return '_'
	}, prefix)
}

// openShared creates or updates the bucket and the stream (the last node
// to start sets their limits) and returns the store.
func openShared(ctx context.Context, js jetstream.JetStream, cfg Config, opts server.Options) (*shared, error) {
	s := &shared{js: js, subject: cfg.Prefix + ".stored.", bcastTo: cfg.Prefix + ".broadcasts", uidTo: cfg.Prefix + ".uid.", uidLast: make(map[string]uint64)}
	if opts.HistorySize <= 0 {
		s.noStore = "this cluster keeps no push history (--history-size 0), so it cannot store pushes"
	}
	s.open = func(ctx context.Context) error { return s.create(ctx, cfg, opts) }
	if err := s.open(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// create creates or updates the bucket and the stream. The handles kept
// from the first call name them only, so they stay good when the assets
// are created again (after a NATS restart that lost them); later calls
// write nothing here, so they may run beside the store's users.
func (s *shared) create(ctx context.Context, cfg Config, opts server.Options) error {
	js := s.js
	name := assetName(cfg.Prefix)
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      name + "_idempotency",
		Description: "presence: answers of calls made with an idempotency key, for the idempotency window",
		TTL:         opts.IdempotencyWindow,
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
	})
	if err != nil {
		return fmt.Errorf("the idempotency key bucket: %w", err)
	}
	if s.kv == nil {
		s.kv = kv // first open; later ones keep the handle (see above)
	}
	bcast, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        name + "_broadcasts",
		Description: "presence: the cluster's broadcasts, numbered in one sequence (kept to fill a node's gaps)",
		Subjects:    []string{s.bcastTo},
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
		MaxMsgs:     int64(max(opts.HistorySize, bcastLogMin)),
		MaxAge:      max(opts.HistoryAge, time.Minute),
		MaxBytes:    opts.HistoryMaxBytes,
		Discard:     jetstream.DiscardOld,
		AllowDirect: true,
	})
	if err != nil {
		return fmt.Errorf("the broadcast log: %w", err)
	}
	if s.bcast == nil {
		s.bcast = bcast
	}
	uids, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:              name + "_uids",
		Description:       "presence: every uid's pushes, numbered in one chain per uid (resume on any node)",
		Subjects:          []string{s.uidTo + "*"},
		Storage:           jetstream.FileStorage,
		Replicas:          cfg.Replicas,
		MaxMsgsPerSubject: int64(max(opts.HistorySize, 1)),
		MaxAge:            max(opts.HistoryAge, time.Minute),
		MaxBytes:          opts.HistoryMaxBytes,
		Discard:           jetstream.DiscardOld,
		AllowDirect:       true,
	})
	if err != nil {
		return fmt.Errorf("the uid log: %w", err)
	}
	if s.uids == nil {
		s.uids = uids
	}
	if opts.HistorySize <= 0 {
		return nil
	}
	stream, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:                 name + "_stored",
		Description:          "presence: pushes stored (store_for) for uids offline on every node",
		Subjects:             []string{s.subject + "*"},
		Storage:              jetstream.FileStorage,
		Replicas:             cfg.Replicas,
		MaxMsgsPerSubject:    int64(opts.HistorySize),
		MaxBytes:             opts.HistoryMaxBytes,
		Discard:              jetstream.DiscardNew,
		DiscardNewPerSubject: true,
		MaxAge:               opts.StoreMax,
		AllowMsgTTL:          true,
		AllowDirect:          true,
	})
	if err != nil {
		return fmt.Errorf("the stored push stream: %w", err)
	}
	if s.stream == nil {
		s.stream = stream
	}
	return nil
}

func (s *shared) KeyCreate(ctx context.Context, key string, val []byte) (uint64, error) {
	rev, err := s.kv.Create(ctx, key, val)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return 0, server.ErrKeyExists
	}
	return rev, err
}

func (s *shared) KeyGet(ctx context.Context, key string) ([]byte, uint64, error) {
	e, err := s.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return nil, 0, server.ErrKeyNotFound
	}
	if err != nil {
		return nil, 0, err
	}
	return e.Value(), e.Revision(), nil
}

func (s *shared) KeyUpdate(ctx context.Context, key string, val []byte, rev uint64) (uint64, error) {
	rev, err := s.kv.Update(ctx, key, val, rev)
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) {
		return 0, server.ErrKeyChanged
	}
	return rev, err
}

func (s *shared) KeyDelete(ctx context.Context, key string, rev uint64) error {
	err := s.kv.Delete(ctx, key, jetstream.LastRevision(rev))
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) {
		return server.ErrKeyChanged
	}
	return err
}

// uidSubject is the subject of uid's stored pushes: any uid is a valid
// subject token in hex.
func (s *shared) uidSubject(uid string) string { return s.subject + hex.EncodeToString([]byte(uid)) }

// StorePush publishes the push to the stream with its time to live as
// the message's TTL. The stream refuses a uid's push past --history-size
// stored ones, or past --history-max-bytes in all.
func (s *shared) StorePush(ctx context.Context, uid string, push *presencev1.Push, ttl time.Duration) error {
	if s.noStore != "" {
		return fmt.Errorf("%w: %s", server.ErrStoreFull, s.noStore)
	}
	b, err := proto.Marshal(push)
	if err != nil {
		return err
	}
	// Message TTLs count in whole seconds.
	ttl = max(time.Second, ttl.Round(time.Second))
	_, err = s.js.Publish(ctx, s.uidSubject(uid), b, jetstream.WithMsgTTL(ttl))
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.ErrorCode(10077) { // JSStreamStoreFailedF: a limit
		return fmt.Errorf("%w: the cluster's push store refused it (%s)", server.ErrStoreFull, apiErr.Description)
	}
	if err != nil {
		return err
	}
	if s.stored != nil {
		s.stored(uid)
	}
	return nil
}

// TakePushes reads the uid's stored pushes in order and deletes each; a
// push another node deleted first is that node's.
func (s *shared) TakePushes(ctx context.Context, uid string) ([]server.StoredPush, error) {
	if s.stream == nil {
		return nil, nil
	}
	subj := s.uidSubject(uid)
	var taken []server.StoredPush
	for seq := uint64(1); ; {
		m, err := s.stream.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subj))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return taken, nil
		}
		if err != nil {
			return taken, err
		}
		seq = m.Sequence + 1
		if err := s.stream.DeleteMsg(ctx, m.Sequence); err != nil {
			if _, gerr := s.stream.GetMsg(ctx, m.Sequence); errors.Is(gerr, jetstream.ErrMsgNotFound) {
				continue // another node took it first
			}
			return taken, err
		}
		push := new(presencev1.Push)
		if err := proto.Unmarshal(m.Data, push); err != nil {
			continue // not ours to deliver
		}
		ttl, err := time.ParseDuration(m.Header.Get(jetstream.MsgTTLHeader))
		if err != nil {
			continue // not stored by a presence node
		}
		until := m.Time.Add(ttl)
		if time.Now().After(until) {
			continue // expired, not yet removed by the stream
		}
		taken = append(taken, server.StoredPush{Push: push, Until: until})
	}
}

// bcastLogMin is the fewest broadcasts the log keeps, whatever
// --history-size says: a node cut off for a while fills its gap from it.
const bcastLogMin = 1024

// AppendBroadcast publishes the push (unnumbered) to the broadcast log.
func (s *shared) AppendBroadcast(ctx context.Context, push *presencev1.Push) (uint64, error) {
	b, err := proto.Marshal(push)
	if err != nil {
		return 0, err
	}
	ack, err := s.js.Publish(ctx, s.bcastTo, b)
	if err != nil {
		return 0, err
	}
	return ack.Sequence, nil
}

// ReadBroadcasts reads from..to from the log, one direct get each (they
// are few: a gap is a broadcast or two in flight, or what a node missed
// while cut off).
func (s *shared) ReadBroadcasts(ctx context.Context, from, to uint64) ([]*presencev1.Push, error) {
	if to >= bcastLogMin && from < to-bcastLogMin+1 {
		from = to - bcastLogMin + 1 // older ones are gone anyway
	}
	var out []*presencev1.Push
	for seq := from; seq <= to; seq++ {
		m, err := s.bcast.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return out, err
		}
		p := new(presencev1.Push)
		if err := proto.Unmarshal(m.Data, p); err != nil {
			continue
		}
		p.Seq = m.Sequence
		out = append(out, p)
	}
	return out, nil
}

// bcastLog returns the broadcast log's epoch (its creation time: a log
// made anew is another sequence) and last seq.
func (s *shared) bcastLog(ctx context.Context) (string, uint64, error) {
	info, err := s.bcast.Info(ctx)
	if err != nil {
		return "", 0, err
	}
	return strconv.FormatInt(info.Created.UnixNano(), 36), info.State.LastSeq, nil
}

// hdrPrev names, in a uid log entry, the uid's entry before it.
const hdrPrev = "Presence-Prev"

// uidLastCacheMax bounds the per-uid last-entry cache (cleared when full:
// it only saves a read).
const uidLastCacheMax = 100_000

// uidLogSubject is uid's subject in the uid log.
func (s *shared) uidLogSubject(uid string) string { return s.uidTo + hex.EncodeToString([]byte(uid)) }

// AppendUid appends push to uid's log with compare-and-set on the uid's
// last entry (Nats-Expected-Last-Subject-Sequence), so that entries form
// one chain per uid even when several nodes push at once; the entry names
// the one before it (hdrPrev). The last entry per uid is cached, so an
// append usually costs one round trip.
func (s *shared) AppendUid(ctx context.Context, uid string, push *presencev1.Push) (uint64, uint64, error) {
	subj := s.uidLogSubject(uid)
	b, err := proto.Marshal(push)
	if err != nil {
		return 0, 0, err
	}
	s.mu.Lock()
	prev, known := s.uidLast[uid]
	s.mu.Unlock()
	for try := 0; ; try++ {
		if !known {
			if prev, err = s.lastUid(ctx, subj); err != nil {
				return 0, 0, err
			}
		}
		m := nats.NewMsg(subj)
		m.Data = b
		m.Header.Set(hdrPrev, strconv.FormatUint(prev, 10))
		ack, err := s.js.PublishMsg(ctx, m, jetstream.WithExpectLastSequencePerSubject(prev))
		if err == nil {
			s.mu.Lock()
			if len(s.uidLast) >= uidLastCacheMax {
				clear(s.uidLast)
			}
			s.uidLast[uid] = ack.Sequence
			s.mu.Unlock()
			return ack.Sequence, prev, nil
		}
		var apiErr *jetstream.APIError
		if !errors.As(err, &apiErr) || (apiErr.ErrorCode != jetstream.JSErrCodeStreamWrongLastSequence && apiErr.ErrorCode != jetstream.JSErrCodeStreamWrongLastSequenceConstant) || try >= 16 {
			return 0, 0, err
		}
		known = false // another node appended: read the uid's last entry again
	}
}

// lastUid is the seq of the last entry on subj (0: none).
func (s *shared) lastUid(ctx context.Context, subj string) (uint64, error) {
	m, err := s.uids.GetLastMsgForSubject(ctx, subj)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return m.Sequence, nil
}

// ReadUid reads uid's entries after after, one direct get each (a resume
// replays at most --history-size of them), and the uid's last entry.
func (s *shared) ReadUid(ctx context.Context, uid string, after uint64) ([]server.LoggedPush, uint64, error) {
	subj := s.uidLogSubject(uid)
	last, err := s.lastUid(ctx, subj)
	if err != nil || after >= last {
		return nil, last, err
	}
	var out []server.LoggedPush
	for seq := after + 1; ; {
		m, err := s.uids.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subj))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return out, last, nil
		}
		if err != nil {
			return out, last, err
		}
		seq = m.Sequence + 1
		p := new(presencev1.Push)
		if err := proto.Unmarshal(m.Data, p); err != nil {
			continue
		}
		prev, _ := strconv.ParseUint(m.Header.Get(hdrPrev), 10, 64)
		p.Seq = m.Sequence
		out = append(out, server.LoggedPush{Push: p, Prev: prev})
	}
}

// uidLogEpoch is the uid log's epoch: its creation time.
func (s *shared) uidLogEpoch(ctx context.Context) (string, error) {
	info, err := s.uids.Info(ctx)
	if err != nil {
		return "", err
	}
	return strconv.FormatInt(info.Created.UnixNano(), 36), nil
}
