package cluster

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

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
	s := &shared{js: js, subject: cfg.Prefix + ".stored.", bcastTo: cfg.Prefix + ".broadcasts"}
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
