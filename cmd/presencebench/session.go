package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
)

// session is one client Connect stream of the bench, carried by grpc-go
// (--client grpc) or by the bench's own HTTP/2 client (--client raw,
// rawclient.go). Both paths share what a session does with what it
// receives (handle, identified, finish) and what it sends (identify, beat).
//
// Goroutines: with grpc, the reader (readLoop) is the only caller of
// RecvMsg and the session's heartbeat goroutine the only caller of beat;
// with raw, the connection's reader and heartbeat goroutines take those
// roles for every stream of the connection. Both end when the stream does.
type session struct {
	// Set before the goroutines start, read-only after.
	idx        int
	uid        string
	sender     requestSender // the stream's send side
	cancel     context.CancelFunc
	hbInterval time.Duration
	hbTimeout  time.Duration
	onPush     pushFunc
	onEnd      func(*session)

	silent   atomic.Bool   // stop sending Ping (the silent scenario)
	stall    atomic.Bool   // stop calling Recv (the slow scenario) until resume is closed
	resume   chan struct{} // closed (by resumeReading) to let a stalled reader go on
	resumeMu sync.Once
	lastSent atomic.Int64 // unix ns of the last frame sent
	pingSeq  uint64       // the last Ping's seq; the heartbeating goroutine's only

	pushes atomic.Int64  // pushes received
	done   chan struct{} // closed when the reader returns

	// Written by the reader before done is closed; read after done.
	endAt   int64 // unix ns when the stream ended
	endErr  error // how the stream ended: io.EOF for OK, else a status error
	goodbye presencev1.GoodbyeReason

	mu      sync.Mutex
	samples []sample // guarded by mu
}

// sample is one measured delivery: the push's bench index, the latency
// from its reference time (scheduled or actual publish) to receipt, and
// the part of it before the server accepted the push (Push.sent_at).
type sample struct {
	idx   int64
	total int64 // ns
	toSrv int64 // ns, sent_at - reference time
}

// requestSender sends a session's ConnectRequests: grpc-go's Connect
// stream, or a rawStream.
type requestSender interface {
	Send(*presencev1.ConnectRequest) error
}

// identify sends the session's Identify.
func (s *session) identify() error {
	if err := s.sender.Send(&presencev1.ConnectRequest{Frame: &presencev1.ConnectRequest_Identify{Identify: &presencev1.Identify{Uid: s.uid}}}); err != nil {
		return fmt.Errorf("Identify %q: %w", s.uid, err)
	}
	s.lastSent.Store(time.Now().UnixNano())
	return nil
}

// beat sends the next Ping, unless the session has gone silent. Only the
// goroutine that heartbeats the session calls it.
func (s *session) beat() error {
	if s.silent.Load() {
		return nil
	}
	s.pingSeq++
	if err := s.sender.Send(&presencev1.ConnectRequest{Frame: &presencev1.ConnectRequest_Ping{Ping: &presencev1.Ping{Seq: s.pingSeq}}}); err != nil {
		return err
	}
	s.lastSent.Store(time.Now().UnixNano())
	return nil
}

// identified reads one frame received before Identified: it reports
// whether it is the Identified, and takes the heartbeat settings from it.
// Other frames before it are ignored.
func (s *session) identified(b []byte, f *frameInfo) (bool, error) {
	if err := decodeFrame(b, f); err != nil {
		return false, fmt.Errorf("session %q: %w", s.uid, err)
	}
	if f.kind != kindIdentified {
		return false, nil
	}
	s.hbInterval, s.hbTimeout = f.hbInterval, f.hbTimeout
	return true, nil
}

// handle processes one ConnectResponse (its wire bytes) received after
// Identified at now (unix ns), on the goroutine that reads the session.
// f is scratch space.
func (s *session) handle(b []byte, now int64, f *frameInfo) {
	if decodeFrame(b, f) != nil {
		return
	}
	switch f.kind {
	case kindPush:
		s.pushes.Add(1)
		if s.onPush != nil {
			s.onPush(s, f, now)
		}
	case kindGoodbye:
		s.goodbye = f.goodbye
	}
}

// finish records the end of the stream (err: io.EOF for OK, else a status
// error), tells onEnd and closes done. The reading goroutine calls it
// once.
func (s *session) finish(now int64, err error) {
	s.endAt, s.endErr = now, err
	if s.onEnd != nil {
		s.onEnd(s)
	}
	close(s.done)
}

// pushFunc handles one push received by s at now (unix ns). It runs on
// s's reader goroutine.
type pushFunc func(s *session, f *frameInfo, now int64)

// record appends a sample.
func (s *session) record(x sample) {
	s.mu.Lock()
	s.samples = append(s.samples, x)
	s.mu.Unlock()
}

// appendSamples appends to dst the samples recorded so far that keep
// selects (all when keep is nil).
func (s *session) appendSamples(dst []sample, keep func(sample) bool) []sample {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, x := range s.samples {
		if keep == nil || keep(x) {
			dst = append(dst, x)
		}
	}
	return dst
}

// resumeReading lets a stalled reader go on. Idempotent.
func (s *session) resumeReading() { s.resumeMu.Do(func() { close(s.resume) }) }

// ended reports whether the stream has ended.
func (s *session) ended() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// endCode is the gRPC code the stream ended with (OK for a clean EOF).
func (s *session) endCode() codes.Code {
	if errors.Is(s.endErr, io.EOF) {
		return codes.OK
	}
	return status.Code(s.endErr)
}

// sessionSpec says how to open a group of sessions.
type sessionSpec struct {
	n        int
	conns    clientConns // session i uses connection i%len
	prefix   string      // uid prefix
	onPush   pushFunc
	onEnd    func(*session)
	parallel int // streams opened at once
	// expect is how many samples each session will record at most. They
	// are allocated when it opens: slices growing as they fill grew in
	// every session at the same push (the 512th, 853rd, 1365th, 2048th:
	// one size class after another), and reallocating a thousand of them
	// at once stalled the tool for 100-600 ms, which it then reported as
	// the server's latency (BENCHMARKS.md, "The slow tail was the tool's"). They are also
	// written once, or every session would fault in its fresh pages at
	// the same push instead.
	expect int
}

// openSessions opens spec.n sessions: Connect, Identify, wait for
// Identified, then start the reader and heartbeat. It fails if more than
// 1% cannot be opened. Progress goes to pr.
func openSessions(ctx context.Context, spec sessionSpec, pr *progress) ([]*session, int, error) {
	out := make([]*session, spec.n)
	var opened, failed atomic.Int64
	var firstErr atomic.Value
	sem := make(chan struct{}, max(1, spec.parallel))
	var wg sync.WaitGroup
	stop := pr.every(time.Second, func() string {
		return fmt.Sprintf("opening sessions: %d/%d identified, %d failed", opened.Load(), spec.n, failed.Load())
	})
	for i := 0; i < spec.n; i++ {
		if ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			s, err := openSession(ctx, spec, i)
			if err != nil {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, err)
				return
			}
			out[i] = s
			opened.Add(1)
		}(i)
	}
	wg.Wait()
	stop()
	got := out[:0]
	for _, s := range out {
		if s != nil {
			got = append(got, s)
		}
	}
	nf := int(failed.Load())
	if err := ctx.Err(); err != nil {
		return got, nf, fmt.Errorf("opening sessions: %w (%d of %d open)", err, len(got), spec.n)
	}
	if nf*100 > spec.n {
		return got, nf, fmt.Errorf("%d of %d sessions failed to open; first error: %v", nf, spec.n, firstErr.Load())
	}
	pr.printf("%d sessions identified (%d failed)", len(got), nf)
	return got, nf, nil
}

// identifyTimeout bounds Connect+Identify+Identified for one session.
const identifyTimeout = 20 * time.Second

func openSession(ctx context.Context, spec sessionSpec, i int) (*session, error) {
	sctx, cancel := context.WithCancel(ctx)
	s := &session{
		idx:    i,
		uid:    fmt.Sprintf("%s-%d", spec.prefix, i),
		cancel: cancel,
		onPush: spec.onPush,
		onEnd:  spec.onEnd,
		resume: make(chan struct{}),
		done:   make(chan struct{}),
	}
	if spec.expect > 0 {
		s.samples = make([]sample, spec.expect)
		clear(s.samples) // touch the pages now, not mid-run
		s.samples = s.samples[:0]
	}
	if len(spec.conns.raw) > 0 {
		if err := spec.conns.raw[i%len(spec.conns.raw)].open(sctx, s); err != nil {
			cancel()
			return nil, err
		}
		return s, nil
	}
	cc := spec.conns.grpc[i%len(spec.conns.grpc)]
	stream, err := presencev1.NewPresenceServiceClient(cc).Connect(sctx, grpc.ForceCodecV2(rawCodec{}))
	if err != nil {
		cancel()
		return nil, fmt.Errorf("Connect: %w", err)
	}
	s.sender = stream
	// Identify and Identified within a bound; the stream itself lives on.
	timer := time.AfterFunc(identifyTimeout, cancel)
	defer timer.Stop()
	if err := s.identify(); err != nil {
		cancel()
		return nil, err
	}
	var raw rawFrame
	var f frameInfo
	for {
		if err := stream.RecvMsg(&raw); err != nil {
			cancel()
			return nil, fmt.Errorf("waiting for Identified %q: %w", s.uid, err)
		}
		ok, err := s.identified(raw.b, &f)
		if err != nil {
			cancel()
			return nil, err
		}
		if ok {
			break
		}
	}
	if !timer.Stop() {
		cancel()
		return nil, fmt.Errorf("session %q: no Identified within %v", s.uid, identifyTimeout)
	}
	go s.readLoop(stream, &raw)
	go s.heartbeat(sctx)
	return s, nil
}

// readLoop receives frames until the stream ends.
func (s *session) readLoop(stream grpc.ClientStream, raw *rawFrame) {
	var f frameInfo
	for {
		if s.stall.Load() {
			<-s.resume
		}
		err := stream.RecvMsg(raw)
		now := time.Now().UnixNano()
		if err != nil {
			s.finish(now, err)
			return
		}
		s.handle(raw.b, now, &f)
	}
}

// heartbeat sends Ping every announced interval, starting at a random
// offset so that the sessions' pings are spread evenly over the interval.
func (s *session) heartbeat(ctx context.Context) {
	iv := s.hbInterval
	if iv <= 0 {
		iv = 10 * time.Second
	}
	t := time.NewTimer(rand.N(iv))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.done:
			return
		case <-t.C:
		}
		if s.beat() != nil {
			return
		}
		t.Reset(iv)
	}
}

// closeSessions cancels every stream and waits, up to limit, for their
// readers to return.
func closeSessions(sessions []*session, limit time.Duration) {
	for _, s := range sessions {
		s.resumeReading()
		s.cancel()
	}
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	for _, s := range sessions {
		select {
		case <-s.done:
		case <-deadline.C:
			return
		}
	}
}

// dialConns creates n client connections (lazily connected), spread over
// the source addresses, starting at source index first.
func dialConns(t *target, n, first int, smallWindow bool) ([]*grpc.ClientConn, error) {
	conns := make([]*grpc.ClientConn, 0, n)
	for i := 0; i < n; i++ {
		cc, err := t.newConn(first+i, smallWindow)
		if err != nil {
			closeConns(conns)
			return nil, err
		}
		conns = append(conns, cc)
	}
	return conns, nil
}

// clientConns carries a group of sessions: grpc-go connections, or the
// bench's own HTTP/2 connections (--client raw). One of the two is set.
type clientConns struct {
	grpc []*grpc.ClientConn
	raw  []*rawConn
}

// dialClients makes n connections of the client kind ("grpc" or "raw"),
// spread over the source addresses from source index first.
func dialClients(t *target, kind string, n, first int) (clientConns, error) {
	if kind == clientRaw {
		return clientConns{raw: dialRawConns(t, n, first)}, nil
	}
	cc, err := dialConns(t, n, first, false)
	return clientConns{grpc: cc}, err
}

// close closes every connection.
func (c clientConns) close() {
	closeConns(c.grpc)
	for _, rc := range c.raw {
		rc.close()
	}
}

func closeConns(conns []*grpc.ClientConn) {
	for _, cc := range conns {
		cc.Close()
	}
}

// endTally counts how sessions ended, by code and Goodbye reason.
func endTally(sessions []*session) map[string]int {
	m := map[string]int{}
	for _, s := range sessions {
		if !s.ended() {
			continue
		}
		k := s.endCode().String()
		if s.goodbye != presencev1.GoodbyeReason_GOODBYE_REASON_UNSPECIFIED {
			k += "/" + s.goodbye.String()
		}
		m[k]++
	}
	return m
}
