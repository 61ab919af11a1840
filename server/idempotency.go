package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// MaxIdempotencyKeyLen bounds an idempotency key.
const MaxIdempotencyKeyLen = 128

// idempotency remembers the answers of calls made with an idempotency key,
// for a window, so that a retry returns the first answer and delivers
// nothing twice. A call that failed is not remembered (nothing was
// delivered, so a retry may try again); a retry that arrives while the
// first call runs waits for it.
type idempotency struct {
	window time.Duration
	max    int

	mu    sync.Mutex
	calls map[string]*idemCall // by method and key; guarded by mu
	order []*idemCall          // oldest first; guarded by mu
}

type idemCall struct {
	key  string
	fp   [32]byte
	at   time.Time
	done chan struct{} // closed when resp or err is set
	resp proto.Message
	err  error
}

func newIdempotency(window time.Duration, max int) *idempotency {
	return &idempotency{window: window, max: max, calls: make(map[string]*idemCall)}
}

// validateIdempotencyKey checks a key's syntax.
func validateIdempotencyKey(k string) error {
	if len(k) > MaxIdempotencyKeyLen {
		return status.Errorf(codes.InvalidArgument, "idempotency_key is %d bytes; at most %d", len(k), MaxIdempotencyKeyLen)
	}
	for _, c := range []byte(k) {
		if c < 0x21 || c > 0x7e {
			return status.Error(codes.InvalidArgument, "idempotency_key: printable ASCII without spaces only")
		}
	}
	return nil
}

// run runs f once for method and key within the window. req is the request
// (its idempotency_key field is ignored when comparing): a key reused with
// a different request is FAILED_PRECONDITION. dup reports that resp is a
// remembered answer.
func (m *idempotency) run(ctx context.Context, method, key string, req proto.Message, f func() (proto.Message, error)) (resp proto.Message, dup bool, err error) {
	fp := fingerprint(req)
	id := method + "\x00" + key
	for {
		m.mu.Lock()
		c := m.calls[id]
		if c != nil && time.Since(c.at) > m.window {
			c = nil
		}
		if c == nil {
			c = &idemCall{key: id, fp: fp, at: time.Now(), done: make(chan struct{})}
			m.putLocked(c)
			m.mu.Unlock()
			resp, err := f()
			m.mu.Lock()
			c.resp, c.err = resp, err
			if err != nil && m.calls[id] == c {
				delete(m.calls, id)
			}
			close(c.done)
			m.mu.Unlock()
			return resp, false, err
		}
		m.mu.Unlock()
		if c.fp != fp {
			return nil, false, status.Errorf(codes.FailedPrecondition,
				"idempotency_key %q was used within the last %v for a different request; use a new key for a new request", key, m.window)
		}
		select {
		case <-c.done:
		case <-ctx.Done():
			return nil, false, status.FromContextError(ctx.Err()).Err()
		}
		if c.err == nil {
			return c.resp, true, nil
		}
		// The first call failed and delivered nothing: try again.
	}
}

// putLocked remembers c, forgetting the oldest call when full.
func (m *idempotency) putLocked(c *idemCall) {
	for len(m.calls) >= m.max && len(m.order) > 0 {
		m.dropOldestLocked()
	}
	m.calls[c.key] = c
	m.order = append(m.order, c)
}

func (m *idempotency) dropOldestLocked() {
	old := m.order[0]
	m.order[0] = nil
	m.order = m.order[1:]
	if m.calls[old.key] == old {
		delete(m.calls, old.key)
	}
}

// trim forgets calls older than the window.
func (m *idempotency) trim(now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for len(m.order) > 0 && now.Sub(m.order[0].at) > m.window {
		m.dropOldestLocked()
	}
	if len(m.order) == 0 {
		m.order = nil
	}
}

// fingerprint hashes req without its idempotency_key.
func fingerprint(req proto.Message) [32]byte {
	c := proto.Clone(req)
	r := c.ProtoReflect()
	if fd := r.Descriptor().Fields().ByName("idempotency_key"); fd != nil {
		r.Clear(fd)
	}
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(c)
	return sha256.Sum256(b)
}

// idempotencyStore runs calls once per idempotency key: per node
// (idempotency) or cluster-wide (sharedIdempotency). newResp returns an
// empty answer of the method's type, for answers read back from storage.
type idempotencyStore interface {
	do(ctx context.Context, method, key string, req proto.Message, newResp func() proto.Message, f func() (proto.Message, error)) (resp proto.Message, dup bool, err error)
}

func (m *idempotency) do(ctx context.Context, method, key string, req proto.Message, _ func() proto.Message, f func() (proto.Message, error)) (proto.Message, bool, error) {
	return m.run(ctx, method, key, req, f)
}

// sharedIdempotency is idempotency over a cluster's Shared keys, with the
// same rules as on one node: the first call for a key runs, a retry on any
// node gets its answer, a reuse with another request is
// FAILED_PRECONDITION, a failed call is forgotten, and a retry that
// arrives while the first call runs waits for it.
//
// The first call creates the key as pending (compare-and-set: exactly one
// creator), runs, then writes its answer over it, or deletes it if it
// failed. A pending key whose call should long be over (its node died
// mid-call) is taken over by the next retry, which runs the call again:
// sessions the dead node reached may get the push twice, as after any
// failed call.
type sharedIdempotency struct {
	sh      Shared
	window  time.Duration
	pending time.Duration // longest a first call may run before a retry takes over
	poll    time.Duration // how often a waiting retry looks again
	log     *slog.Logger
}

// idemRecord is a key's value in the shared store.
type idemRecord struct {
	FP    []byte `json:"fp"`
	Until int64  `json:"until,omitempty"` // pending: unix ns after which a retry takes over
	Done  bool   `json:"done,omitempty"`
	Resp  []byte `json:"resp,omitempty"` // the answer, once done
}

func (m *sharedIdempotency) do(ctx context.Context, method, key string, req proto.Message, newResp func() proto.Message, f func() (proto.Message, error)) (proto.Message, bool, error) {
	fp := fingerprint(req)
	h := sha256.Sum256([]byte(key))
	k := method + "." + hex.EncodeToString(h[:])
	unavailable := func(err error) error {
		if ctx.Err() != nil {
			return status.FromContextError(ctx.Err()).Err()
		}
		return status.Errorf(codes.Unavailable, "idempotency keys are kept in the cluster's shared store, which cannot be reached (%v); nothing was sent; retry, or send without a key", err)
	}
	pending := func() []byte {
		b, _ := json.Marshal(idemRecord{FP: fp[:], Until: time.Now().Add(m.pending).UnixNano()})
		return b
	}
	for {
		rev, err := m.sh.KeyCreate(ctx, k, pending())
		if err == nil {
			resp, err := m.first(ctx, k, rev, fp, f)
			return resp, false, err
		}
		if !errors.Is(err, ErrKeyExists) {
			return nil, false, unavailable(err)
		}
		val, rev, err := m.sh.KeyGet(ctx, k)
		if errors.Is(err, ErrKeyNotFound) {
			continue // the first call failed (or expired) meanwhile: try again
		}
		if err != nil {
			return nil, false, unavailable(err)
		}
		var rec idemRecord
		if err := json.Unmarshal(val, &rec); err != nil || !bytes.Equal(rec.FP, fp[:]) {
			return nil, false, status.Errorf(codes.FailedPrecondition,
				"idempotency_key %q was used within the last %v for a different request; use a new key for a new request", key, m.window)
		}
		if rec.Done {
			resp := newResp()
			if err := proto.Unmarshal(rec.Resp, resp); err != nil {
				return nil, false, status.Errorf(codes.Internal, "the stored answer for idempotency_key %q cannot be read: %v", key, err)
			}
			return resp, true, nil
		}
		if time.Now().UnixNano() > rec.Until {
			// The first call's node is gone mid-call: take over.
			if rev, err := m.sh.KeyUpdate(ctx, k, pending(), rev); err == nil {
				resp, err := m.first(ctx, k, rev, fp, f)
				return resp, false, err
			}
			continue
		}
		select {
		case <-time.After(m.poll):
		case <-ctx.Done():
			return nil, false, status.FromContextError(ctx.Err()).Err()
		}
	}
}

// first runs the call that holds key k pending at rev, and records its
// answer, or forgets the key if it failed.
func (m *sharedIdempotency) first(ctx context.Context, k string, rev uint64, fp [32]byte, f func() (proto.Message, error)) (proto.Message, error) {
	resp, err := f()
	// The call's outcome must be recorded even if its caller went away.
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err != nil {
		if derr := m.sh.KeyDelete(wctx, k, rev); derr != nil {
			m.log.Warn("a failed call's idempotency key could not be released; retries wait until it is taken over", "key", k, "err", derr)
		}
		return nil, err
	}
	b, merr := proto.Marshal(resp)
	if merr == nil {
		rec, _ := json.Marshal(idemRecord{FP: fp[:], Done: true, Resp: b})
		_, merr = m.sh.KeyUpdate(wctx, k, rec, rev)
	}
	if merr != nil {
		m.log.Warn("a call's answer could not be kept under its idempotency key; a retry may deliver again", "key", k, "err", merr)
	}
	return resp, nil
}
