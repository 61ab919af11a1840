package client

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
)

// sessionResult is how one connection attempt ended.
type sessionResult struct {
	sessionID    string              // "" when the attempt never got Identified
	connectedFor time.Duration       // how long the session was identified
	err          error               // why it ended; never nil
	goodbye      *presencev1.Goodbye // the server's Goodbye, if it sent one
}

// session is one Connect stream.
//
// Goroutines: connectOnce (the client's supervisor) opens the stream, sends
// Identify, reads frames until Identified, then starts the reader and the
// writer and becomes the watchdog; when the session's context ends it
// waits for both before it returns. Cancelling the context (with a cause)
// is how anything ends the session, and it releases a reader or writer
// blocked on the wire.
type session struct {
	// Set before the reader and writer start, read-only after.
	stream    presencev1.PresenceService_ConnectClient
	ctx       context.Context
	cancel    context.CancelCauseFunc // first cause wins
	onPush    func(*Push)
	id        string        // the session id from Identified
	uid       string        // the uid from Identified
	interval  time.Duration // how often to Ping, as the server announced
	timeout   time.Duration // how long the server may stay silent, as announced
	startedAt time.Time     // origin of lastFrame, for a monotonic clock

	// Written by the reader, read by the watchdog.
	lastFrame   atomic.Int64 // time since startedAt of the last frame received
	dispatching atomic.Bool  // the reader is in OnPush, not waiting on the server

	// Owned by the reader while it runs (by connectOnce before and after).
	goodbye *presencev1.Goodbye
	// pos is the client's resume position, advanced after each push is
	// handled; identified is the server's answer to Identify.
	pos        *presencev1.ResumeFrom
	identified *presencev1.Identified

	acks    chan string // push ids to acknowledge, sent by the writer
	refresh chan string // new tokens to send, from refreshLoop to the writer
}

// connectOnce makes one connection attempt and, when it succeeds, runs the
// session until it ends. It reports StateConnected itself; the caller
// reports the rest.
//
// Each attempt dials a new grpc.ClientConn and closes it at the end. So the
// client's backoff is the only one (grpc-go's own reconnect backoff, up to
// 120 s, never stacks on it), and a connection found dead by the watchdog is
// never reused: grpc-go cannot tell that a silent TCP connection is dead,
// and a new stream on it would hang the same way.
func (c *Client) connectOnce(ctx context.Context) (res sessionResult) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	handshake := time.AfterFunc(c.cfg.HandshakeTimeout, func() {
		cancel(fmt.Errorf("%w (%v)", ErrHandshakeTimeout, c.cfg.HandshakeTimeout))
	})
	defer handshake.Stop()
	// failed returns the reason an attempt failed with err: the context's
	// cause when the context ended it (a timeout, Close), else err.
	failed := func(err error) sessionResult {
		if cause := context.Cause(ctx); cause != nil {
			err = cause
		}
		return sessionResult{err: err}
	}

	token, err := c.cfg.token(ctx)
	if err != nil {
		return failed(err)
	}
	cc, err := grpc.NewClient(c.cfg.Target, c.cfg.DialOptions...)
	if err != nil {
		return failed(fmt.Errorf("client target %q: %w", c.cfg.Target, err))
	}
	defer cc.Close()
	stream, err := presencev1.NewPresenceServiceClient(cc).Connect(ctx)
	if err != nil {
		return failed(err)
	}
	s := &session{stream: stream, ctx: ctx, cancel: cancel, onPush: c.cfg.OnPush, startedAt: time.Now(),
		pos: c.pos, acks: make(chan string, 64), refresh: make(chan string)}
	if err := s.identify(c.cfg.UID, token, c.cfg.Labels); err != nil {
		return sessionResult{err: failed(err).err, goodbye: s.goodbye}
	}
	if !handshake.Stop() {
		// The timer fired as Identified arrived: the context is done.
		return sessionResult{err: context.Cause(ctx), goodbye: s.goodbye}
	}

	connectedAt := time.Now()
	id := s.identified
	c.report(StateChange{State: StateConnected, SessionID: s.id, UID: s.uid, Identified: id,
		Lost: id.GetUidResume() == presencev1.ResumeResult_RESUME_RESULT_LOST ||
			id.GetBroadcastResume() == presencev1.ResumeResult_RESUME_RESULT_LOST})
	var wg sync.WaitGroup
	wg.Go(s.readLoop)
	wg.Go(s.writeLoop)
	if c.cfg.TokenFunc != nil {
		if exp, ok := tokenExpiry(token); ok {
			wg.Go(func() { s.refreshLoop(&c.cfg, exp) })
		}
	}
	s.watch()
	wg.Wait()
	return sessionResult{
		sessionID:    s.id,
		connectedFor: time.Since(connectedAt),
		err:          context.Cause(ctx),
		goodbye:      s.goodbye,
	}
}

// identify sends Identify and reads frames until Identified, then records
// the session id and heartbeat settings. It is bounded by the handshake
// timer that cancels s.ctx.
func (s *session) identify(uid, token string, labels map[string]string) error {
	var resume *presencev1.ResumeFrom
	if s.pos.GetUidEpoch() != "" || s.pos.GetBroadcastEpoch() != "" {
		resume = proto.CloneOf(s.pos)
	}
	err := s.stream.Send(&presencev1.ConnectRequest{Frame: &presencev1.ConnectRequest_Identify{Identify: &presencev1.Identify{
		Uid: uid, Token: token, Labels: labels, Resume: resume,
	}}})
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	// On io.EOF the server has ended the stream; Recv returns its status.
	for {
		m, err := s.stream.Recv()
		if err != nil {
			return recvError(err)
		}
		switch f := m.GetFrame().(type) {
		case *presencev1.ConnectResponse_Identified:
			id := f.Identified
			s.id, s.uid, s.identified = id.GetSessionId(), id.GetUid(), id
			// Where no resume happened (a first connect, or history lost),
			// carry on from where the server is now.
			if id.GetUidResume() != presencev1.ResumeResult_RESUME_RESULT_RESUMED {
				s.pos.UidEpoch, s.pos.UidSeq = id.GetUidEpoch(), id.GetUidSeq()
			}
			if id.GetBroadcastResume() != presencev1.ResumeResult_RESUME_RESULT_RESUMED {
				s.pos.BroadcastEpoch, s.pos.BroadcastSeq = id.GetBroadcastEpoch(), id.GetBroadcastSeq()
			}
			s.interval = f.Identified.GetHeartbeatInterval().AsDuration()
			s.timeout = f.Identified.GetHeartbeatTimeout().AsDuration()
			if s.timeout <= 0 {
				s.timeout = DefaultHeartbeatTimeout
			}
			if s.interval <= 0 {
				s.interval = min(DefaultHeartbeatInterval, s.timeout/3)
			}
			s.touch()
			return nil
		case *presencev1.ConnectResponse_Goodbye:
			s.goodbye = f.Goodbye
		}
		// Any other frame before Identified is ignored, as unknown
		// frames are.
	}
}

// readLoop is the session's only caller of Recv after Identified. It
// records every frame as a sign of life, hands pushes to OnPush in order,
// keeps the Goodbye, and ends the session with the stream's status.
func (s *session) readLoop() {
	for {
		m, err := s.stream.Recv()
		if err != nil {
			s.cancel(recvError(err))
			return
		}
		s.touch()
		switch f := m.GetFrame().(type) {
		case *presencev1.ConnectResponse_Push:
			if s.ctx.Err() != nil {
				return
			}
			if s.onPush != nil {
				s.dispatching.Store(true)
				s.onPush(&Push{SessionID: s.id, Msg: f.Push})
				s.touch()
				s.dispatching.Store(false)
			}
			// Handled: it counts for resume, and is acked if asked.
			s.advance(f.Push)
			if f.Push.GetAckRequired() {
				select {
				case s.acks <- f.Push.GetId():
				case <-s.ctx.Done():
					return
				}
			}
		case *presencev1.ConnectResponse_Goodbye:
			s.goodbye = f.Goodbye
		case *presencev1.ConnectResponse_Pong:
			// A sign of life; touch did the work.
		}
		// Frames this client does not know are ignored (forward
		// compatibility).
	}
}

// writeLoop is the session's only caller of Send after Identify: it sends a
// Ping with a growing seq every heartbeat interval. Frames added later
// (token refresh, acks) go through here too.
func (s *session) writeLoop() {
	t := time.NewTicker(s.interval)
	defer t.Stop()
	var seq uint64
	for {
		var req *presencev1.ConnectRequest
		select {
		case <-s.ctx.Done():
			return
		case id := <-s.acks:
			req = &presencev1.ConnectRequest{Frame: &presencev1.ConnectRequest_Ack{Ack: &presencev1.Ack{PushId: id}}}
		case tok := <-s.refresh:
			req = &presencev1.ConnectRequest{Frame: &presencev1.ConnectRequest_RefreshToken{RefreshToken: &presencev1.RefreshToken{Token: tok}}}
		case <-t.C:
			seq++
			req = &presencev1.ConnectRequest{Frame: &presencev1.ConnectRequest_Ping{Ping: &presencev1.Ping{Seq: seq}}}
		}
		err := s.stream.Send(req)
		if err != nil {
			// io.EOF: the stream has ended and the reader gets its
			// status. Anything else came from this side; end with it.
			if !errors.Is(err, io.EOF) {
				s.cancel(err)
			}
			return
		}
	}
}

// watch is the application-level liveness check: it ends the session with
// ErrServerSilent when no frame has arrived for the announced heartbeat
// timeout. It returns when the session's context ends. One timer, re-armed
// only when it fires, for the time left until the deadline the last frame
// set: frames themselves touch no timer.
func (s *session) watch() {
	t := time.NewTimer(s.timeout)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		if s.dispatching.Load() {
			// The reader is in OnPush, not waiting on the server: a slow
			// handler is not a silent server.
			t.Reset(s.timeout)
			continue
		}
		silent := s.sinceLastFrame()
		if silent >= s.timeout {
			s.cancel(fmt.Errorf("%w: silent for %v (heartbeat timeout %v)", ErrServerSilent, silent.Round(time.Millisecond), s.timeout))
			return
		}
		t.Reset(s.timeout - silent)
	}
}

// refreshLoop asks TokenFunc for a new token when 80% of the current one's
// remaining lifetime has passed and hands it to the writer, as long as the
// new token expires later; it ends with the session. A TokenFunc error is
// retried at the next 80% mark; if the token expires first, the server
// ends the session (Goodbye TOKEN_EXPIRED) and the client reconnects with
// a fresh token as usual.
func (s *session) refreshLoop(cfg *Config, exp time.Time) {
	for {
		wait := time.Until(exp) * 4 / 5
		if wait <= 0 {
			return
		}
		t := time.NewTimer(wait)
		select {
		case <-s.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		tok, err := cfg.token(s.ctx)
		if err != nil {
			continue
		}
		next, ok := tokenExpiry(tok)
		if !ok || !next.After(exp) {
			continue // no later expiry: nothing gained
		}
		select {
		case s.refresh <- tok:
			exp = next
		case <-s.ctx.Done():
			return
		}
	}
}

// tokenExpiry reads a JWT's exp claim without verifying it (the server
// verifies; the client only needs to know when to refresh).
func tokenExpiry(tok string) (time.Time, bool) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return time.Time{}, false
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return time.Time{}, false
	}
	var claims struct {
		Exp float64 `json:"exp"`
	}
	if json.Unmarshal(payload, &claims) != nil || claims.Exp <= 0 {
		return time.Time{}, false
	}
	sec, frac := math.Modf(claims.Exp)
	return time.Unix(int64(sec), int64(frac*1e9)), true
}

// advance moves the resume position past a handled push. Replays of
// stored pushes may carry a seq below the position; it never goes back.
// A push with seq 0 is outside any sequence (a cluster node cut off from
// NATS sends those): it does not move the position.
func (s *session) advance(p *presencev1.Push) {
	if p.GetSeq() == 0 {
		return
	}
	switch p.GetScope() {
	case presencev1.PushScope_PUSH_SCOPE_UID:
		if p.GetEpoch() != s.pos.UidEpoch || p.GetSeq() > s.pos.UidSeq {
			s.pos.UidEpoch, s.pos.UidSeq = p.GetEpoch(), p.GetSeq()
		}
	case presencev1.PushScope_PUSH_SCOPE_BROADCAST:
		if p.GetEpoch() != s.pos.BroadcastEpoch || p.GetSeq() > s.pos.BroadcastSeq {
			s.pos.BroadcastEpoch, s.pos.BroadcastSeq = p.GetEpoch(), p.GetSeq()
		}
	}
}

// touch records that a frame arrived (or OnPush returned) now.
func (s *session) touch() { s.lastFrame.Store(int64(time.Since(s.startedAt))) }

// sinceLastFrame is how long ago the last frame arrived.
func (s *session) sinceLastFrame() time.Duration {
	return time.Since(s.startedAt) - time.Duration(s.lastFrame.Load())
}

// recvError maps a Recv error to why the session ended: io.EOF (the server
// returned without an error status) becomes ErrStreamEnded; a status is
// kept as it is.
func recvError(err error) error {
	if errors.Is(err, io.EOF) {
		return ErrStreamEnded
	}
	return err
}
