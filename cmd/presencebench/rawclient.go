package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
)

// --client raw: a minimal HTTP/2 gRPC client for Connect streams, so that
// the bench's own cost per received message stays well below the
// server's. grpc-go's client costs the bench ~7.5 µs per message (its
// HTTP/2 reader goroutine hands each DATA frame to a per-stream buffer,
// which the session's reader goroutine wakes up for, with allocations on
// the way); here one goroutine per TCP connection reads every frame and
// decodes the gRPC messages of all its streams in place, and one more
// goroutine per connection sends the Pings of all its streams.
//
// What it speaks: the client preface; SETTINGS (ENABLE_PUSH 0, a static
// INITIAL_WINDOW_SIZE of 64 KiB like the grpc path's static windows)
// and the ACK of the server's; PING ACKs; WINDOW_UPDATE for a stream and
// for the connection once a quarter of the window has been consumed;
// HEADERS (response headers, trailers, trailers-only), DATA, RST_STREAM
// and GOAWAY. No compression, no TLS, no retries: what the bench needs
// against presenced, and no more.
//
// What it does not do: stop reading one stream (the slow scenario keeps
// its stalled sessions on grpc-go), and it carries only Connect streams
// (cluster uses grpc-go directly, and refuses --client raw; see
// clientSupports).
//
// churn's cycles (rawChurnCycle) use a rawConn of their own without its
// goroutines: the cycle's goroutine writes, and reads the connection with
// readUntil, from dial to close.

const (
	clientGRPC = "grpc"
	clientRaw  = "raw"

	rawWindow       = 65535         // stream and connection receive windows (the HTTP/2 default)
	rawWindowUpdate = rawWindow / 4 // consumed bytes that trigger a WINDOW_UPDATE
	rawMaxMsg       = 4 << 20       // largest gRPC message accepted: grpc-go's default
	connectPath     = "/presence.v1.PresenceService/Connect"
)

// clientSupports reports whether --client kind can run scenario, and why
// not.
func clientSupports(kind, scenario string) error {
	switch kind {
	case clientGRPC:
		return nil
	case clientRaw:
	default:
		return fmt.Errorf("--client %q: want grpc or raw", kind)
	}
	switch scenario {
	case "idle", "fanout", "unicast", "silent", "churn":
		return nil
	case "slow":
		// The reading sessions are raw; the stalled ones stay on grpc-go,
		// which stops reading one stream (the raw client reads every
		// stream of a connection on one goroutine).
		return nil
	default:
		return fmt.Errorf("--client raw does not support --scenario %s: it opens its streams through grpc-go; use --client grpc", scenario)
	}
}

// streamState is a rawStream's place in its life.
type streamState uint8

const (
	streamOpening streamState = iota // HEADERS and Identify sent, no Identified yet
	streamOpen                       // identified: frames go to session.handle
	streamEnded                      // ended: the session is finished (or the open failed)
)

// rawConn is one HTTP/2 connection carrying Connect streams.
//
// Goroutines: the reader (readLoop) reads every frame and is the only
// one to decode messages; the heartbeat goroutine, started at the first
// Identified, sends every open stream's Ping. Writes from them and from
// the openers are serialized by wmu. Lock order: wmu before mu; nobody
// holding mu takes wmu.
type rawConn struct {
	addr string // the server's gRPC address, a 127.0.0.0/8 literal
	src  net.IP // source address to bind

	dialMu sync.Mutex // guards the dial (connections are dialled at first use)
	nc     net.Conn   // set once under dialMu
	fr     *http2.Framer
	done   chan struct{} // closed when the reader has returned
	wg     sync.WaitGroup

	wmu         sync.Mutex
	bw          *bufio.Writer
	henc        *hpack.Encoder
	hbuf        bytes.Buffer
	wbuf        []byte
	nextID      uint32 // the last stream id used
	batch       bool   // a heartbeat round writes: it flushes at its end
	werr        error  // the connection broke while writing
	goaway      bool   // the server said GOAWAY: no new streams
	sendWin     int64  // connection send window
	peerInitWin int64  // the server's INITIAL_WINDOW_SIZE: new streams' send window
	peerMaxSize uint32 // the server's MAX_FRAME_SIZE

	mu      sync.Mutex
	streams map[uint32]*rawStream // open and opening streams
	closed  bool                  // the reader has ended or close was called: no new streams or heartbeat
	hbOn    bool                  // the heartbeat goroutine runs

	// The reader's only.
	connUnacked uint32
	f           frameInfo
}

// rawStream is one Connect stream of a rawConn. It is its session's
// requestSender.
type rawStream struct {
	c     *rawConn
	s     *session
	ready chan struct{} // closed at Identified, or at the end before it

	id uint32 // 0 until the HEADERS are written; set under c.wmu and c.mu

	// Under c.wmu.
	sendWin    int64
	reset      bool // RST_STREAM sent: nothing more may be sent
	halfClosed bool // END_STREAM sent (closeSend): nothing more may be sent

	// Under c.mu.
	state   streamState
	openErr error       // why the stream ended before Identified; read after ready
	stop    func() bool // undoes the context.AfterFunc that cancels the stream

	// The reader's only (it reads under c.mu too).
	gotHeaders bool
	pend       []byte // a gRPC message (prefix included) split over DATA frames
	unacked    uint32
}

// dialRawConns makes n connections from the source addresses starting at
// index first. They are dialled at first use.
func dialRawConns(t *target, n, first int) []*rawConn {
	out := make([]*rawConn, n)
	for i := range out {
		out[i] = &rawConn{addr: t.grpcAddr, src: sourceIP(first+i, t.srcAddrs), done: make(chan struct{}), streams: map[uint32]*rawStream{}}
	}
	return out
}

// connect dials the connection if it is not yet, writes the preface and
// SETTINGS, and starts the reader.
func (c *rawConn) connect(ctx context.Context) error {
	c.dialMu.Lock()
	defer c.dialMu.Unlock()
	if c.nc != nil {
		return nil
	}
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return status.Error(codes.Unavailable, "connection closed")
	}
	nc, err := c.handshake(ctx, bufio.NewReaderSize(nil, 32<<10), bufio.NewWriterSize(nil, 16<<10))
	if err != nil {
		return err
	}
	if err := c.bw.Flush(); err != nil {
		nc.Close()
		return status.Errorf(codes.Unavailable, "connection preface: %v", err)
	}
	c.nc = nc
	c.wg.Add(1)
	go c.readLoop()
	return nil
}

// handshake dials the connection (within 10 s), sets up the framer on br
// and bw (reset to read and write it), and writes the client preface and
// SETTINGS into bw without flushing them. The caller flushes and sets
// c.nc; until then c is its own.
func (c *rawConn) handshake(ctx context.Context, br *bufio.Reader, bw *bufio.Writer) (net.Conn, error) {
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	nc, err := loopbackDialer(c.src)(dctx, c.addr) // refuses anything but 127.0.0.0/8
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "dial %s: %v", c.addr, err)
	}
	br.Reset(nc)
	bw.Reset(nc)
	c.bw = bw
	c.fr = http2.NewFramer(c.bw, br)
	c.fr.SetReuseFrames()
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.henc = hpack.NewEncoder(&c.hbuf)
	c.sendWin, c.peerInitWin, c.peerMaxSize = 65535, 65535, 16384
	c.bw.WriteString(http2.ClientPreface)
	c.fr.WriteSettings(http2.Setting{ID: http2.SettingEnablePush, Val: 0}, http2.Setting{ID: http2.SettingInitialWindowSize, Val: rawWindow})
	return nc, nil
}

// close closes the connection and waits for its goroutines; streams still
// open end as Unavailable.
func (c *rawConn) close() {
	c.dialMu.Lock()
	defer c.dialMu.Unlock()
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	if c.nc == nil {
		return
	}
	c.nc.Close()
	c.wg.Wait()
}

// open opens s's Connect stream on c: HEADERS and Identify, then waits for
// Identified. ctx is the session's: its cancellation resets the stream and
// ends the session with Canceled, as grpc-go does.
func (c *rawConn) open(ctx context.Context, s *session) error {
	if err := c.connect(ctx); err != nil {
		return fmt.Errorf("Connect: %w", err)
	}
	st := &rawStream{c: c, s: s, ready: make(chan struct{})}
	s.sender = st
	if err := s.identify(); err != nil {
		c.abort(st, err)
		return err
	}
	stop := context.AfterFunc(ctx, func() { c.abort(st, status.Error(codes.Canceled, context.Canceled.Error())) })
	c.mu.Lock()
	if st.state == streamEnded {
		stop()
	} else {
		st.stop = stop
	}
	c.mu.Unlock()
	timer := time.NewTimer(identifyTimeout)
	defer timer.Stop()
	select {
	case <-st.ready:
	case <-timer.C:
		c.abort(st, status.Errorf(codes.DeadlineExceeded, "no Identified within %v", identifyTimeout))
		<-st.ready
	}
	if st.openErr != nil {
		return fmt.Errorf("waiting for Identified %q: %w", s.uid, st.openErr)
	}
	c.startHeartbeat(s.hbInterval)
	return nil
}

// Send sends one ConnectRequest on the stream, opening it (HEADERS) first
// if it is not yet. Stream ids are assigned and HEADERS written under wmu,
// so they go out in id order.
func (st *rawStream) Send(req *presencev1.ConnectRequest) error {
	c := st.c
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		return status.Errorf(codes.Unavailable, "connection broken: %v", c.werr)
	}
	if st.reset {
		return status.Error(codes.Canceled, "stream reset")
	}
	if st.halfClosed {
		return status.Error(codes.Internal, "SendMsg called after CloseSend")
	}
	if st.id == 0 {
		if c.goaway {
			return status.Error(codes.Unavailable, "the server sent GOAWAY")
		}
		id := c.nextID + 2
		if c.nextID == 0 {
			id = 1
		}
		c.mu.Lock()
		if c.closed || st.state == streamEnded {
			c.mu.Unlock()
			return status.Error(codes.Unavailable, "connection closed")
		}
		st.id = id // under both locks: read under either
		c.streams[id] = st
		c.mu.Unlock()
		c.nextID, st.sendWin = id, c.peerInitWin
		c.hbuf.Reset()
		for _, h := range [...][2]string{
			{":method", "POST"}, {":scheme", "http"}, {":path", connectPath}, {":authority", c.addr},
			{"content-type", "application/grpc"}, {"te", "trailers"}, {"user-agent", "presencebench-raw"},
		} {
			c.henc.WriteField(hpack.HeaderField{Name: h[0], Value: h[1]})
		}
		if err := c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: c.hbuf.Bytes(), EndHeaders: true}); err != nil {
			return c.failWrite(err)
		}
	}
	b, err := proto.MarshalOptions{}.MarshalAppend(append(c.wbuf[:0], 0, 0, 0, 0, 0), req)
	if err != nil {
		return status.Errorf(codes.Internal, "marshal: %v", err)
	}
	c.wbuf = b
	binary.BigEndian.PutUint32(b[1:5], uint32(len(b)-5))
	n := int64(len(b))
	if n > st.sendWin || n > c.sendWin || uint32(n) > c.peerMaxSize {
		// Requests are a few bytes and the server reopens its windows
		// as it reads them: this means it has stopped reading.
		return status.Error(codes.ResourceExhausted, "the server's flow-control window is full")
	}
	st.sendWin -= n
	c.sendWin -= n
	if err := c.fr.WriteData(st.id, false, b); err != nil {
		return c.failWrite(err)
	}
	if !c.batch {
		if err := c.bw.Flush(); err != nil {
			return c.failWrite(err)
		}
	}
	return nil
}

// closeSend half-closes the stream, as grpc-go's CloseSend: an empty DATA
// frame with END_STREAM, flushed. Nothing more is sent on it after, and
// its end after the server's trailers needs no RST_STREAM.
func (st *rawStream) closeSend() error {
	c := st.c
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		return status.Errorf(codes.Unavailable, "connection broken: %v", c.werr)
	}
	if st.reset || st.halfClosed {
		return nil // as grpc-go: CloseSend on an ended stream is no error
	}
	if st.id == 0 {
		return status.Error(codes.Internal, "CloseSend before the stream was opened")
	}
	st.halfClosed = true
	if err := c.fr.WriteData(st.id, true, nil); err != nil {
		return c.failWrite(err)
	}
	if err := c.bw.Flush(); err != nil {
		return c.failWrite(err)
	}
	return nil
}

// failWrite records a broken connection (under wmu) and closes it, so the
// reader ends every stream.
func (c *rawConn) failWrite(err error) error {
	if c.werr == nil {
		c.werr = err
		c.nc.Close()
	}
	return status.Errorf(codes.Unavailable, "connection broken: %v", err)
}

// writeControl writes control frames (under wmu) and flushes them.
func (c *rawConn) writeControl(write func() error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		return
	}
	if err := write(); err != nil {
		c.failWrite(err)
		return
	}
	if err := c.bw.Flush(); err != nil {
		c.failWrite(err)
	}
}

// abort ends st with err (if it has not ended) and resets it.
func (c *rawConn) abort(st *rawStream, err error) {
	c.mu.Lock()
	ended := c.endLocked(st, err, time.Now().UnixNano())
	c.mu.Unlock()
	if ended {
		c.reset(st, http2.ErrCodeCancel)
	}
}

// reset sends RST_STREAM for st once.
func (c *rawConn) reset(st *rawStream, code http2.ErrCode) {
	c.writeControl(func() error { return c.writeRST(st, code) })
}

// closeEnded closes st, which the server ended (END_STREAM), on the
// bench's side too: RST_STREAM NO_ERROR, unless the bench has half-closed
// it already, which closed it both ways (grpc-go sends none either).
func (c *rawConn) closeEnded(st *rawStream) {
	c.writeControl(func() error {
		if st.halfClosed {
			return nil
		}
		return c.writeRST(st, http2.ErrCodeNo)
	})
}

// writeRST writes RST_STREAM for st unless it has been (under wmu).
func (c *rawConn) writeRST(st *rawStream, code http2.ErrCode) error {
	if st.id == 0 || st.reset {
		return nil
	}
	st.reset = true
	return c.fr.WriteRSTStream(st.id, code)
}

// endLocked ends st with err at now, under c.mu: before Identified it
// fails the open, after it finishes the session. It reports whether st
// was still going.
func (c *rawConn) endLocked(st *rawStream, err error, now int64) bool {
	prev := st.state
	if prev == streamEnded {
		return false
	}
	st.state = streamEnded
	if c.streams[st.id] == st {
		delete(c.streams, st.id)
	}
	st.pend = nil
	if st.stop != nil {
		st.stop()
	}
	if prev == streamOpening {
		st.openErr = err
		close(st.ready)
	} else {
		st.s.finish(now, err)
	}
	return true
}

// startHeartbeat starts the connection's heartbeat goroutine once, at the
// interval the server announced.
func (c *rawConn) startHeartbeat(iv time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.hbOn || c.closed {
		return
	}
	c.hbOn = true
	c.wg.Add(1)
	go c.heartbeat(iv)
}

// heartbeat sends a Ping on every open stream of the connection each
// interval, in one write, starting at a random offset so that the
// connections' pings spread over the interval. A session gone silent
// sends none (session.beat).
func (c *rawConn) heartbeat(iv time.Duration) {
	defer c.wg.Done()
	if iv <= 0 {
		iv = 10 * time.Second
	}
	t := time.NewTimer(rand.N(iv))
	defer t.Stop()
	var open []*rawStream
	for {
		select {
		case <-c.done:
			return
		case <-t.C:
		}
		open = open[:0]
		c.mu.Lock()
		for _, st := range c.streams {
			if st.state == streamOpen {
				open = append(open, st)
			}
		}
		c.mu.Unlock()
		c.wmu.Lock()
		c.batch = true
		c.wmu.Unlock()
		for _, st := range open {
			st.s.beat() // an error ends the stream or the connection, which the reader sees
		}
		c.writeControl(func() error { c.batch = false; return nil })
		t.Reset(iv)
	}
}

// readLoop reads every frame of the connection until it breaks, then ends
// the streams still open.
func (c *rawConn) readLoop() {
	defer c.wg.Done()
	defer close(c.done)
	var err error
	for err == nil {
		err = c.readFrame()
	}
	c.shut(err)
}

// readFrame reads one frame and handles it. An error means the connection
// is broken (a stream error only ends its stream). The reader's only.
func (c *rawConn) readFrame() error {
	fr, err := c.fr.ReadFrame()
	if err != nil {
		var se http2.StreamError
		if errors.As(err, &se) {
			c.endID(se.StreamID, status.Errorf(codes.Internal, "HTTP/2 stream error: %v", se), se.Code)
			return nil
		}
		return err
	}
	now := time.Now().UnixNano()
	switch f := fr.(type) {
	case *http2.DataFrame:
		c.onData(f, now)
	case *http2.MetaHeadersFrame:
		c.onHeaders(f, now)
	case *http2.RSTStreamFrame:
		c.mu.Lock()
		if st := c.streams[f.StreamID]; st != nil {
			c.endLocked(st, rstStatus(f.ErrCode), now)
		}
		c.mu.Unlock()
	case *http2.SettingsFrame:
		if !f.IsAck() {
			c.onSettings(f)
		}
	case *http2.PingFrame:
		if !f.IsAck() {
			data := f.Data
			c.writeControl(func() error { return c.fr.WritePing(true, data) })
		}
	case *http2.WindowUpdateFrame:
		c.onWindowUpdate(f)
	case *http2.GoAwayFrame:
		c.onGoAway(f, now)
	}
	return nil
}

// readUntil reads and handles frames on the calling goroutine until done
// is closed, for a connection without a reader goroutine (the raw churn
// cycle). A broken connection ends its streams, which closes their ready
// or session done; it returns then too.
func (c *rawConn) readUntil(done <-chan struct{}) {
	for {
		select {
		case <-done:
			return
		default:
		}
		if err := c.readFrame(); err != nil {
			c.shut(err)
			return
		}
	}
}

// shut closes the connection, broken by err, and ends the streams still
// open as Unavailable. The reader's, at its end.
func (c *rawConn) shut(err error) {
	c.nc.Close()
	c.mu.Lock()
	c.closed = true
	msg := fmt.Sprintf("connection closed: %v", err)
	now := time.Now().UnixNano()
	for _, st := range c.streams {
		c.endLocked(st, status.Error(codes.Unavailable, msg), now)
	}
	c.mu.Unlock()
}

// endID ends stream id with err and resets it with code.
func (c *rawConn) endID(id uint32, err error, code http2.ErrCode) {
	c.mu.Lock()
	st := c.streams[id]
	ended := st != nil && c.endLocked(st, err, time.Now().UnixNano())
	c.mu.Unlock()
	if ended {
		c.reset(st, code)
	}
}

// onData reassembles the stream's gRPC messages and hands each to its
// session, then returns flow-control credit.
func (c *rawConn) onData(f *http2.DataFrame, now int64) {
	n := f.Header().Length // padding included: it counts against the windows
	var stInc uint32
	var bad error
	c.mu.Lock()
	st := c.streams[f.StreamID]
	if st != nil {
		bad = c.feed(st, f.Data(), now)
		switch {
		case bad != nil:
		case f.StreamEnded():
			bad = status.Error(codes.Internal, "server closed the stream without sending trailers")
		default:
			if st.unacked += n; st.unacked >= rawWindowUpdate {
				stInc, st.unacked = st.unacked, 0
			}
		}
		if bad != nil {
			c.endLocked(st, bad, now)
		}
	}
	c.mu.Unlock()
	if bad != nil {
		c.reset(st, http2.ErrCodeCancel)
	}
	var connInc uint32
	if c.connUnacked += n; c.connUnacked >= rawWindowUpdate {
		connInc, c.connUnacked = c.connUnacked, 0
	}
	if connInc > 0 || stInc > 0 {
		id := f.StreamID
		c.writeControl(func() error {
			if connInc > 0 {
				if err := c.fr.WriteWindowUpdate(0, connInc); err != nil {
					return err
				}
			}
			if stInc > 0 && !st.reset {
				return c.fr.WriteWindowUpdate(id, stInc)
			}
			return nil
		})
	}
}

// feed splits data into gRPC messages (5-byte prefix: compressed flag and
// big-endian length), keeping a partial one in st.pend, and delivers each.
// Whole messages in one DATA frame are decoded in place. Under c.mu.
func (c *rawConn) feed(st *rawStream, data []byte, now int64) error {
	if len(st.pend) > 0 {
		if len(st.pend) < 5 {
			k := min(5-len(st.pend), len(data))
			st.pend, data = append(st.pend, data[:k]...), data[k:]
			if len(st.pend) < 5 {
				return nil
			}
		}
		size, err := msgSize(st.pend)
		if err != nil {
			return err
		}
		k := min(5+size-len(st.pend), len(data))
		st.pend, data = append(st.pend, data[:k]...), data[k:]
		if len(st.pend) < 5+size {
			return nil
		}
		if err := c.deliver(st, st.pend[5:], now); err != nil {
			return err
		}
		if cap(st.pend) > 64<<10 {
			st.pend = nil // do not keep a large message's buffer per stream
		} else {
			st.pend = st.pend[:0]
		}
	}
	for len(data) >= 5 {
		size, err := msgSize(data)
		if err != nil {
			return err
		}
		if len(data) < 5+size {
			break
		}
		if err := c.deliver(st, data[5:5+size], now); err != nil {
			return err
		}
		data = data[5+size:]
	}
	if len(data) > 0 {
		st.pend = append(st.pend, data...)
	}
	return nil
}

// msgSize reads a gRPC message prefix.
func msgSize(p []byte) (int, error) {
	if p[0] != 0 {
		return 0, status.Error(codes.Internal, "compressed message, but no compression was negotiated")
	}
	n := binary.BigEndian.Uint32(p[1:5])
	if n > rawMaxMsg {
		return 0, status.Errorf(codes.ResourceExhausted, "received message larger than max (%d vs. %d)", n, rawMaxMsg)
	}
	return int(n), nil
}

// deliver hands one message to the stream's session: the frames before
// Identified to session.identified, the rest to session.handle. Under c.mu.
func (c *rawConn) deliver(st *rawStream, b []byte, now int64) error {
	switch st.state {
	case streamOpen:
		st.s.handle(b, now, &c.f)
	case streamOpening:
		ok, err := st.s.identified(b, &c.f)
		if err != nil {
			return status.Error(codes.Internal, err.Error())
		}
		if ok {
			st.state = streamOpen
			close(st.ready)
		}
	}
	return nil
}

// onHeaders handles response headers and trailers (END_STREAM): the
// trailers' grpc-status and grpc-message end the session.
func (c *rawConn) onHeaders(f *http2.MetaHeadersFrame, now int64) {
	c.mu.Lock()
	st := c.streams[f.StreamID]
	if st == nil {
		c.mu.Unlock()
		return
	}
	var err error
	switch {
	case !st.gotHeaders && !f.StreamEnded():
		st.gotHeaders = true
		if s := f.PseudoValue("status"); s != "200" {
			err = status.Errorf(httpCode(s), "unexpected HTTP status %q", s)
		}
	case !f.StreamEnded():
		err = status.Error(codes.Internal, "a second HEADERS frame without END_STREAM")
	default:
		err = trailerStatus(f)
	}
	ended := false
	if err != nil {
		ended = c.endLocked(st, err, now)
	}
	c.mu.Unlock()
	// The server is done with the stream; closing our side too frees it
	// on both ends (grpc-go does the same), unless both sides have sent
	// END_STREAM (closeEnded).
	switch {
	case ended && f.StreamEnded():
		c.closeEnded(st)
	case ended:
		c.reset(st, http2.ErrCodeNo)
	}
}

// trailerStatus is the stream's end from its trailers: io.EOF for OK, as
// grpc-go's RecvMsg returns it.
func trailerStatus(f *http2.MetaHeadersFrame) error {
	gs := headerValue(f, "grpc-status")
	if gs == "" {
		if s := f.PseudoValue("status"); s != "" && s != "200" {
			return status.Errorf(httpCode(s), "unexpected HTTP status %q", s)
		}
		return status.Error(codes.Internal, "server closed the stream without grpc-status")
	}
	n, err := strconv.ParseUint(gs, 10, 32)
	if err != nil {
		return status.Errorf(codes.Internal, "malformed grpc-status %q", gs)
	}
	if n == 0 {
		return io.EOF
	}
	return status.Error(codes.Code(n), decodeGrpcMessage(headerValue(f, "grpc-message")))
}

// headerValue is the value of the regular header field name, or "".
func headerValue(f *http2.MetaHeadersFrame, name string) string {
	for _, hf := range f.RegularFields() {
		if hf.Name == name {
			return hf.Value
		}
	}
	return ""
}

// decodeGrpcMessage undoes grpc-message's percent-encoding.
func decodeGrpcMessage(s string) string {
	var b []byte
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+3], 16, 8); err == nil {
				if b == nil {
					b = append(make([]byte, 0, len(s)), s[:i]...)
				}
				b = append(b, byte(v))
				i += 2
				continue
			}
		}
		if b != nil {
			b = append(b, s[i])
		}
	}
	if b == nil {
		return s
	}
	return string(b)
}

// httpCode maps a non-200 HTTP status to a gRPC code as grpc-go does.
func httpCode(s string) codes.Code {
	switch s {
	case "400":
		return codes.Internal
	case "401":
		return codes.Unauthenticated
	case "403":
		return codes.PermissionDenied
	case "404":
		return codes.Unimplemented
	case "429", "502", "503", "504":
		return codes.Unavailable
	}
	return codes.Unknown
}

// rstStatus maps a RST_STREAM error code to a gRPC status as grpc-go does.
func rstStatus(code http2.ErrCode) error {
	c := codes.Internal
	switch code {
	case http2.ErrCodeRefusedStream:
		c = codes.Unavailable
	case http2.ErrCodeCancel:
		c = codes.Canceled
	case http2.ErrCodeEnhanceYourCalm:
		c = codes.ResourceExhausted
	case http2.ErrCodeInadequateSecurity:
		c = codes.PermissionDenied
	}
	return status.Errorf(c, "stream terminated by RST_STREAM with error code: %v", code)
}

// onSettings applies the server's SETTINGS and acknowledges them.
func (c *rawConn) onSettings(f *http2.SettingsFrame) {
	c.writeControl(func() error {
		f.ForeachSetting(func(s http2.Setting) error {
			switch s.ID {
			case http2.SettingInitialWindowSize:
				delta := int64(s.Val) - c.peerInitWin
				c.peerInitWin = int64(s.Val)
				c.mu.Lock()
				for _, st := range c.streams {
					if st.id != 0 {
						st.sendWin += delta
					}
				}
				c.mu.Unlock()
			case http2.SettingMaxFrameSize:
				c.peerMaxSize = s.Val
			case http2.SettingHeaderTableSize:
				c.henc.SetMaxDynamicTableSizeLimit(s.Val)
			}
			return nil
		})
		return c.fr.WriteSettingsAck()
	})
}

// onWindowUpdate adds the server's credit for what the bench sends.
func (c *rawConn) onWindowUpdate(f *http2.WindowUpdateFrame) {
	var st *rawStream
	if f.StreamID != 0 {
		c.mu.Lock()
		st = c.streams[f.StreamID]
		c.mu.Unlock()
		if st == nil {
			return
		}
	}
	inc := int64(f.Increment)
	c.wmu.Lock()
	if st == nil {
		c.sendWin += inc
	} else {
		st.sendWin += inc
	}
	c.wmu.Unlock()
}

// onGoAway stops new streams on the connection and ends those the server
// will not process (above its last stream id) as Unavailable; the others
// run to their end.
func (c *rawConn) onGoAway(f *http2.GoAwayFrame, now int64) {
	c.wmu.Lock()
	c.goaway = true
	c.wmu.Unlock()
	c.mu.Lock()
	for id, st := range c.streams {
		if id > f.LastStreamID {
			c.endLocked(st, status.Errorf(codes.Unavailable, "the server sent GOAWAY (%v)", f.ErrCode), now)
		}
	}
	c.mu.Unlock()
}

// quickAckAll takes the dialled connections' sockets out of delayed-ACK
// mode (quickAck) and returns how many it set.
func quickAckAll(conns []*rawConn) (int, error) {
	n := 0
	for _, c := range conns {
		c.dialMu.Lock()
		nc := c.nc
		c.dialMu.Unlock()
		if nc == nil {
			continue
		}
		ok, err := quickAck(nc)
		if err != nil {
			return n, err
		}
		if ok {
			n++
		}
	}
	return n, nil
}
