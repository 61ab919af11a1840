package server

import (
	"context"
	"crypto/sha256"
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

// do runs f once for method and key within the window. req is the request
// (its idempotency_key field is ignored when comparing): a key reused with
// a different request is FAILED_PRECONDITION. dup reports that resp is a
// remembered answer.
func (m *idempotency) do(ctx context.Context, method, key string, req proto.Message, f func() (proto.Message, error)) (resp proto.Message, dup bool, err error) {
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
