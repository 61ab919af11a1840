package lite

import (
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// conn is one HTTP/2 connection. Its only goroutine is the reader (serve),
// which handles every frame; streams and the keepalive sweeper write through
// wmu.
type conn struct {
	srv  *Server
	nc   net.Conn
	peer *peer.Peer

	// Reader-only state. rbuf is inline[:] while idle, or a pooled
	// bigReadBufSize buffer (rpooled) while frames arrive.
	rbuf          []byte
	r, w          int
	rfull         bool // the last Read filled rbuf
	rpooled       *[]byte
	hdec          *hpack.Decoder
	hs            *headerState // header block being decoded, nil between blocks
	contStream    uint32       // stream whose CONTINUATION we expect, or 0
	sawSettings   bool
	awake         bool  // handshake done: read deadlines are wake-ups (see wake)
	recvConnAvail int64 // what the client may still send on the connection
	connUnacked   int64 // received but not yet returned with WINDOW_UPDATE
	pingStrikes   int
	lastPingAt    int64 // UnixNano of the client's previous PING

	lastRead         atomic.Int64 // UnixNano of the last successful Read
	pingSentAt       atomic.Int64 // UnixNano of our unanswered keepalive PING, or 0
	resetPingStrikes atomic.Bool  // set when we write HEADERS or DATA

	mu           sync.Mutex
	cond         sync.Cond // on mu: send windows changed or streams ended
	streams      map[uint32]*Stream
	maxStreamID  uint32 // highest client stream id seen
	sendWindow   int64  // connection send window
	peerInitWin  int64  // client's SETTINGS_INITIAL_WINDOW_SIZE
	peerMaxFrame int    // client's SETTINGS_MAX_FRAME_SIZE
	closed       bool
	draining     bool   // we sent GOAWAY (GracefulStop)
	goawayID     uint32 // last stream id in our GOAWAY
	peerGoaway   bool
	handlers     int // RegisterService handler goroutines running

	// wmu serializes writes; the fields below are guarded by it.
	wmu       sync.Mutex
	henc      *hpack.Encoder
	hw        appendWriter
	werr      error
	handshook bool // our SETTINGS were written
	// Coalesced writes (see writeLocked): frames queued and not yet
	// written, and whether a goroutine is writing them.
	pending  *[]byte   // a pooled buffer, nil when nothing waits
	flushing bool      // a flush loop owns pending (or a shard's list holds c)
	flushed  sync.Cond // on wmu: the flush loop wrote a batch or ended

	// fd is nc's socket, which the flush shard writes to directly without
	// waiting (-1 unless nc is a plain socket); shard is the flush shard
	// TrySend hands c to (see flushInBackground). fdMu fences those
	// writes against closing nc: once fdClosed is set no write starts,
	// and it is set only when none is in progress, so a write never goes
	// to a descriptor number that a close has freed for reuse by another
	// connection. Every close of nc goes through closeConn.
	fd       int
	fdMu     sync.Mutex
	fdClosed bool // guarded by fdMu
	shard    *flushShard

	inline [idleReadBufSize]byte
}

// appendWriter is the io.Writer behind the HPACK encoder: it appends to b.
type appendWriter struct{ b []byte }

func (w *appendWriter) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	return len(p), nil
}

func newConn(s *Server, nc net.Conn) *conn {
	c := &conn{
		srv:          s,
		nc:           nc,
		streams:      make(map[uint32]*Stream),
		sendWindow:   defaultWindow,
		peerInitWin:  defaultWindow,
		peerMaxFrame: maxFrameSize,
	}
	c.cond.L = &c.mu
	c.flushed.L = &c.wmu
	c.fd = socketFD(nc)
	c.shard = s.nextShard()
	c.rbuf = c.inline[:]
	c.recvConnAvail = int64(s.opts.InitialConnWindowSize)
	c.lastRead.Store(time.Now().UnixNano())
	c.hdec = hpack.NewDecoder(4096, c.onField)
	c.hdec.SetMaxStringLength(int(s.opts.MaxHeaderListSize))
	c.henc = hpack.NewEncoder(&c.hw)
	// A zero-sized dynamic table: responses never grow per-connection state.
	c.henc.SetMaxDynamicTableSizeLimit(0)
	return c
}

func (c *conn) debug(msg string, args ...any) {
	c.srv.log.Debug(msg, append([]any{"remote", c.nc.RemoteAddr().String()}, args...)...)
}

// serve is the connection's goroutine.
func (c *conn) serve() {
	defer c.srv.connWG.Done()
	defer c.teardown()
	c.nc.SetReadDeadline(time.Now().Add(handshakeTimeout))
	if err := c.fill(len(http2.ClientPreface)); err != nil {
		c.debug("lite: reading client preface", "err", err)
		return
	}
	if string(c.rbuf[c.r:c.r+len(http2.ClientPreface)]) != http2.ClientPreface {
		c.debug("lite: bad client preface")
		return
	}
	c.r += len(http2.ClientPreface)
	c.nc.SetReadDeadline(time.Time{})
	c.awake = true
	c.peer = c.makePeer()
	if err := c.writeSettings(); err != nil {
		return
	}
	for {
		h, p, err := c.readFrame()
		if err == nil {
			err = c.handleFrame(h, p)
		}
		if err != nil {
			c.fail(err)
			return
		}
		c.releaseReadBuf()
	}
}

func (c *conn) makePeer() *peer.Peer {
	p := &peer.Peer{Addr: c.nc.RemoteAddr(), LocalAddr: c.nc.LocalAddr()}
	if tc, ok := c.nc.(*tls.Conn); ok {
		p.AuthInfo = credentials.TLSInfo{
			State:          tc.ConnectionState(),
			CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity},
		}
	}
	return p
}

// fail ends the connection after err: a connError gets a GOAWAY first.
func (c *conn) fail(err error) {
	var ce connError
	if errors.As(err, &ce) {
		c.debug("lite: connection error", "code", ce.code, "reason", ce.reason)
		c.mu.Lock()
		last := c.maxStreamID
		c.mu.Unlock()
		debug := ce.reason
		if ce.code != http2.ErrCodeEnhanceYourCalm && len(debug) > 256 {
			debug = debug[:256]
		}
		bp := getWriteBuf()
		*bp = appendGoAway(*bp, last, ce.code, debug)
		c.writeFrames(*bp)
		putWriteBuf(bp)
		return
	}
	if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && err != errDrained {
		c.debug("lite: connection read error", "err", err)
	}
}

// teardown runs when the reader exits: every remaining stream ends with
// Unavailable.
func (c *conn) teardown() {
	c.mu.Lock()
	c.closed = true
	streams := c.streams
	c.streams = nil
	c.cond.Broadcast()
	c.mu.Unlock()
	c.waitFlushed()
	c.closeConn()
	if len(streams) > 0 {
		err := status.Error(codes.Unavailable, "lite: connection closed")
		for _, st := range streams {
			c.abortStream(st, err)
		}
	}
	if c.rpooled != nil {
		readBufPool.Put(c.rpooled)
		c.rpooled = nil
	}
	c.rbuf = nil
	c.srv.removeConn(c)
}

func (c *conn) handleFrame(h frameHeader, p []byte) error {
	if c.contStream != 0 && (h.typ != http2.FrameContinuation || h.streamID != c.contStream) {
		return connError{http2.ErrCodeProtocol, "expected CONTINUATION of the header block"}
	}
	if !c.sawSettings && (h.typ != http2.FrameSettings || h.flags.Has(http2.FlagSettingsAck)) {
		return connError{http2.ErrCodeProtocol, "first frame must be SETTINGS"}
	}
	switch h.typ {
	case http2.FrameData:
		return c.onData(h, p)
	case http2.FrameHeaders:
		return c.onHeaders(h, p)
	case http2.FrameContinuation:
		if c.contStream == 0 {
			return connError{http2.ErrCodeProtocol, "unexpected CONTINUATION"}
		}
		return c.headerFragment(h.flags.Has(http2.FlagContinuationEndHeaders), p)
	case http2.FramePriority:
		if h.streamID == 0 {
			return connError{http2.ErrCodeProtocol, "PRIORITY on stream 0"}
		}
		if h.length != 5 {
			return c.writeRST(h.streamID, http2.ErrCodeFrameSize)
		}
		return nil
	case http2.FrameRSTStream:
		return c.onRSTStream(h, p)
	case http2.FrameSettings:
		return c.onSettings(h, p)
	case http2.FramePushPromise:
		return connError{http2.ErrCodeProtocol, "PUSH_PROMISE from a client"}
	case http2.FramePing:
		return c.onPing(h, p)
	case http2.FrameGoAway:
		return c.onGoAway(h, p)
	case http2.FrameWindowUpdate:
		return c.onWindowUpdate(h, p)
	default:
		return nil // unknown frame types are ignored (RFC 9113 §4.1)
	}
}

// isIdleLocked says whether sid names a stream the client never opened.
func (c *conn) isIdleLocked(sid uint32) bool { return sid%2 == 0 || sid > c.maxStreamID }

func (c *conn) onData(h frameHeader, p []byte) error {
	sid := h.streamID
	if sid == 0 {
		return connError{http2.ErrCodeProtocol, "DATA on stream 0"}
	}
	data := p
	if h.flags.Has(http2.FlagDataPadded) {
		if len(p) < 1 || int(p[0]) > len(p)-1 {
			return connError{http2.ErrCodeProtocol, "DATA padding too long"}
		}
		data = p[1 : len(p)-int(p[0])]
	}
	// Connection flow control: everything received is consumed at once.
	n := int64(h.length)
	if n > c.recvConnAvail {
		return connError{http2.ErrCodeFlowControl, "connection receive window exceeded"}
	}
	c.recvConnAvail -= n
	c.connUnacked += n
	var connInc int64
	if c.connUnacked >= int64(c.srv.opts.InitialConnWindowSize)/4 {
		connInc = c.connUnacked
		c.recvConnAvail += connInc
		c.connUnacked = 0
	}

	c.mu.Lock()
	st := c.streams[sid]
	if st == nil {
		idle := c.isIdleLocked(sid)
		c.mu.Unlock()
		if idle {
			return connError{http2.ErrCodeProtocol, fmt.Sprintf("DATA on idle stream %d", sid)}
		}
		return c.writeControl(connInc, 0, 0, sid, http2.ErrCodeStreamClosed)
	}
	if st.ended {
		c.mu.Unlock()
		return c.writeControl(connInc, 0, 0, 0, 0)
	}
	if st.remoteDone {
		c.mu.Unlock()
		if err := c.writeControl(connInc, 0, 0, 0, 0); err != nil {
			return err
		}
		return c.resetStream(st, http2.ErrCodeStreamClosed, status.Error(codes.Internal, "lite: DATA after END_STREAM"))
	}
	if n > st.recvAvail {
		c.mu.Unlock()
		if err := c.writeControl(connInc, 0, 0, 0, 0); err != nil {
			return err
		}
		return c.resetStream(st, http2.ErrCodeFlowControl, status.Error(codes.Internal, "lite: stream receive window exceeded"))
	}
	st.recvAvail -= n
	c.mu.Unlock()

	if serr := c.onStreamData(st, data); serr != nil {
		if err := c.writeControl(connInc, 0, 0, 0, 0); err != nil {
			return err
		}
		c.abortWithStatus(st, serr)
		return nil
	}
	end := h.flags.Has(http2.FlagDataEndStream)
	if end && st.msgHdrN != 0 {
		if err := c.writeControl(connInc, 0, 0, 0, 0); err != nil {
			return err
		}
		c.abortWithStatus(st, status.New(codes.Internal, "unexpected EOF"))
		return nil
	}
	c.mu.Lock()
	streamInc := c.creditLocked(st, n)
	c.mu.Unlock()
	if err := c.writeControl(connInc, sid, streamInc, 0, 0); err != nil {
		return err
	}
	if end {
		c.halfClose(st)
	}
	return nil
}

// onStreamData splits DATA bytes into gRPC messages and delivers them.
func (c *conn) onStreamData(st *Stream, data []byte) *status.Status {
	for len(data) > 0 {
		if st.msg == nil {
			k := copy(st.msgHdr[st.msgHdrN:], data)
			st.msgHdrN += uint8(k)
			data = data[k:]
			if st.msgHdrN < 5 {
				return nil
			}
			flag := st.msgHdr[0]
			length := binary.BigEndian.Uint32(st.msgHdr[1:])
			if flag == 1 {
				return status.New(codes.Internal, "grpc: compressed flag set with identity or empty encoding")
			}
			if flag > 1 {
				return status.Newf(codes.Internal, "grpc: received unexpected payload format %d", flag)
			}
			if max := c.srv.opts.MaxRecvMsgSize; uint64(length) > uint64(max) {
				return status.Newf(codes.ResourceExhausted, "grpc: received message larger than max (%d vs. %d)", length, max)
			}
			if int(length) <= len(data) {
				// The whole message is in this frame: deliver it in place.
				st.msgHdrN = 0
				c.deliver(st, data[:length], false)
				data = data[length:]
				continue
			}
			// Grow with what arrives rather than trusting the length.
			st.msgLen = length
			st.msg = make([]byte, 0, min(int(length), maxFrameSize))
			continue
		}
		k := min(len(data), int(st.msgLen)-len(st.msg))
		st.msg = append(st.msg, data[:k]...)
		data = data[k:]
		if len(st.msg) == int(st.msgLen) {
			m := st.msg
			st.msg, st.msgHdrN, st.msgLen = nil, 0, 0
			c.deliver(st, m, true)
		}
	}
	return nil
}

// deliver hands one complete message to the stream's handler. owned says b
// is not aliased to the read buffer.
func (c *conn) deliver(st *Stream, b []byte, owned bool) {
	if st.g != nil {
		if !owned {
			b = append([]byte(nil), b...)
		}
		st.g.push(st, b)
		return
	}
	c.mu.Lock()
	skip := st.ended || st.ev == nil
	c.mu.Unlock()
	if !skip {
		st.ev.Msg(b)
	}
}

// creditLocked returns n received bytes of st to the stream window; it
// returns the WINDOW_UPDATE increment to send now (0 for none).
func (c *conn) creditLocked(st *Stream, n int64) int64 {
	if st.remoteDone || st.ended {
		return 0
	}
	if st.g != nil && st.g.qBytes > int64(c.srv.opts.InitialWindowSize) {
		// The handler is behind: hold the credit until RecvMsg catches up.
		st.g.held += n
		return 0
	}
	st.recvUnacked += n
	if st.recvUnacked >= int64(c.srv.opts.InitialWindowSize)/4 {
		inc := st.recvUnacked
		st.recvAvail += inc
		st.recvUnacked = 0
		return inc
	}
	return 0
}

// halfClose records the client's END_STREAM and tells the handler.
func (c *conn) halfClose(st *Stream) {
	c.mu.Lock()
	if st.remoteDone {
		c.mu.Unlock()
		return
	}
	st.remoteDone = true
	notify := !st.ended && !st.finished && !st.closedNotified
	if notify {
		st.closedNotified = true
	}
	c.mu.Unlock()
	if !notify {
		return
	}
	if st.g != nil {
		st.g.fail(st, io.EOF)
		return
	}
	if st.ev != nil {
		st.ev.Closed(io.EOF)
	}
}

// abortStream ends st because of the peer or the connection (RST_STREAM
// received, connection gone): nothing is written.
func (c *conn) abortStream(st *Stream, err error) {
	c.mu.Lock()
	if st.ended {
		if c.streams != nil {
			delete(c.streams, st.id)
		}
		c.mu.Unlock()
		return
	}
	st.ended = true
	st.endErr = err
	st.remoteDone = true
	if c.streams != nil {
		delete(c.streams, st.id)
	}
	notify := !st.finished && !st.closedNotified
	st.closedNotified = true
	c.cond.Broadcast()
	closeConn := c.drainedLocked()
	c.mu.Unlock()
	st.cancel()
	if notify {
		st.notifyClosed(err)
	}
	if closeConn {
		c.wake()
	}
}

// abortWithStatus ends st from our side because of its request (message too
// large, bad compression flag...): the handler hears about it first, then the
// client gets the status in trailers.
func (c *conn) abortWithStatus(st *Stream, s *status.Status) {
	c.mu.Lock()
	notify := !st.ended && !st.finished && !st.closedNotified
	st.closedNotified = true
	c.mu.Unlock()
	if notify {
		st.notifyClosed(s.Err())
	}
	st.finish(s)
}

// resetStream ends st with RST_STREAM code; the handler gets err.
func (c *conn) resetStream(st *Stream, code http2.ErrCode, err error) error {
	c.mu.Lock()
	wasEnded := st.ended
	c.mu.Unlock()
	c.abortStream(st, err)
	if wasEnded {
		return nil
	}
	return c.writeRST(st.id, code)
}

// drainedLocked says whether the connection should close now: GOAWAY was
// exchanged and the last stream is gone.
func (c *conn) drainedLocked() bool {
	return (c.draining || c.peerGoaway) && len(c.streams) == 0 && !c.closed
}

func (c *conn) onHeaders(h frameHeader, p []byte) error {
	sid := h.streamID
	if sid == 0 {
		return connError{http2.ErrCodeProtocol, "HEADERS on stream 0"}
	}
	frag := p
	if h.flags.Has(http2.FlagHeadersPadded) {
		if len(frag) < 1 || int(frag[0]) > len(frag)-1 {
			return connError{http2.ErrCodeProtocol, "HEADERS padding too long"}
		}
		frag = frag[1 : len(frag)-int(frag[0])]
	}
	if h.flags.Has(http2.FlagHeadersPriority) {
		if len(frag) < 5 {
			return connError{http2.ErrCodeFrameSize, "HEADERS priority fields missing"}
		}
		frag = frag[5:]
	}
	if sid%2 == 0 {
		return connError{http2.ErrCodeProtocol, fmt.Sprintf("HEADERS on even stream id %d", sid)}
	}
	c.mu.Lock()
	st := c.streams[sid]
	if st == nil {
		if sid <= c.maxStreamID {
			c.mu.Unlock()
			return connError{http2.ErrCodeStreamClosed, fmt.Sprintf("HEADERS on closed stream %d", sid)}
		}
		c.maxStreamID = sid
	}
	c.mu.Unlock()
	c.hs = &headerState{sid: sid, endStream: h.flags.Has(http2.FlagHeadersEndStream), st: st}
	return c.headerFragment(h.flags.Has(http2.FlagHeadersEndHeaders), frag)
}

func (c *conn) headerFragment(end bool, frag []byte) error {
	hs := c.hs
	hs.blockLen += len(frag)
	if hs.blockLen > 2*int(c.srv.opts.MaxHeaderListSize)+maxFrameSize {
		return connError{http2.ErrCodeEnhanceYourCalm, "header block too large"}
	}
	if _, err := c.hdec.Write(frag); err != nil {
		return connError{http2.ErrCodeCompression, err.Error()}
	}
	if !end {
		c.contStream = hs.sid
		return nil
	}
	c.contStream = 0
	c.hs = nil
	if err := c.hdec.Close(); err != nil {
		return connError{http2.ErrCodeCompression, err.Error()}
	}
	if hs.st != nil {
		return c.onTrailers(hs)
	}
	return c.startStream(hs)
}

// onField is the HPACK decoder's emit function.
func (c *conn) onField(f hpack.HeaderField) {
	hs := c.hs
	hs.size += f.Size()
	if hs.size > c.srv.opts.MaxHeaderListSize {
		hs.tooLarge = true
	}
	if hs.tooLarge || hs.st != nil {
		return
	}
	hs.add(f)
}

// onTrailers handles a header block on an open stream: gRPC clients send
// none, so it must end the stream.
func (c *conn) onTrailers(hs *headerState) error {
	st := hs.st
	c.mu.Lock()
	remoteDone, ended := st.remoteDone, st.ended
	c.mu.Unlock()
	switch {
	case ended:
		return nil
	case remoteDone:
		return c.resetStream(st, http2.ErrCodeStreamClosed, status.Error(codes.Internal, "lite: HEADERS after END_STREAM"))
	case !hs.endStream:
		return c.resetStream(st, http2.ErrCodeProtocol, status.Error(codes.Internal, "lite: trailers without END_STREAM"))
	}
	if st.msgHdrN != 0 {
		c.abortWithStatus(st, status.New(codes.Internal, "unexpected EOF"))
		return nil
	}
	c.halfClose(st)
	return nil
}

func (c *conn) onRSTStream(h frameHeader, p []byte) error {
	if h.streamID == 0 {
		return connError{http2.ErrCodeProtocol, "RST_STREAM on stream 0"}
	}
	if len(p) != 4 {
		return connError{http2.ErrCodeFrameSize, "RST_STREAM length"}
	}
	c.mu.Lock()
	st := c.streams[h.streamID]
	idle := st == nil && c.isIdleLocked(h.streamID)
	c.mu.Unlock()
	if idle {
		return connError{http2.ErrCodeProtocol, "RST_STREAM on idle stream"}
	}
	if st == nil {
		return nil
	}
	code := http2.ErrCode(binary.BigEndian.Uint32(p))
	c.abortStream(st, status.Errorf(rstCode(code), "stream terminated by RST_STREAM with error code: %v", code))
	return nil
}

// rstCode maps an HTTP/2 error code to a gRPC code like grpc-go.
func rstCode(code http2.ErrCode) codes.Code {
	switch code {
	case http2.ErrCodeCancel:
		return codes.Canceled
	case http2.ErrCodeRefusedStream:
		return codes.Unavailable
	case http2.ErrCodeFlowControl, http2.ErrCodeEnhanceYourCalm:
		return codes.ResourceExhausted
	case http2.ErrCodeInadequateSecurity:
		return codes.PermissionDenied
	default:
		return codes.Internal
	}
}

func (c *conn) onSettings(h frameHeader, p []byte) error {
	if h.streamID != 0 {
		return connError{http2.ErrCodeProtocol, "SETTINGS on a stream"}
	}
	if h.flags.Has(http2.FlagSettingsAck) {
		if len(p) != 0 {
			return connError{http2.ErrCodeFrameSize, "SETTINGS ACK with a payload"}
		}
		return nil
	}
	if len(p)%6 != 0 {
		return connError{http2.ErrCodeFrameSize, "SETTINGS length"}
	}
	for ; len(p) > 0; p = p[6:] {
		id := http2.SettingID(binary.BigEndian.Uint16(p))
		v := binary.BigEndian.Uint32(p[2:])
		switch id {
		case http2.SettingHeaderTableSize:
			// Our encoder's table is capped at 0, which fits any size.
			c.wmu.Lock()
			c.henc.SetMaxDynamicTableSize(v)
			c.wmu.Unlock()
		case http2.SettingEnablePush:
			if v > 1 {
				return connError{http2.ErrCodeProtocol, "SETTINGS_ENABLE_PUSH not 0 or 1"}
			}
		case http2.SettingInitialWindowSize:
			if v > 1<<31-1 {
				return connError{http2.ErrCodeFlowControl, "SETTINGS_INITIAL_WINDOW_SIZE too large"}
			}
			if err := c.setPeerInitialWindow(int64(v)); err != nil {
				return err
			}
		case http2.SettingMaxFrameSize:
			if v < 1<<14 || v > 1<<24-1 {
				return connError{http2.ErrCodeProtocol, "SETTINGS_MAX_FRAME_SIZE out of range"}
			}
			c.mu.Lock()
			c.peerMaxFrame = int(v)
			c.mu.Unlock()
		}
	}
	c.sawSettings = true
	bp := getWriteBuf()
	*bp = appendFrameHeader(*bp, 0, http2.FrameSettings, http2.FlagSettingsAck, 0)
	err := c.writeFrames(*bp)
	putWriteBuf(bp)
	return err
}

func (c *conn) onPing(h frameHeader, p []byte) error {
	if h.streamID != 0 {
		return connError{http2.ErrCodeProtocol, "PING on a stream"}
	}
	if len(p) != 8 {
		return connError{http2.ErrCodeFrameSize, "PING length"}
	}
	if h.flags.Has(http2.FlagPingAck) {
		return nil // lastRead was updated; the sweeper sees the answer
	}
	bp := getWriteBuf()
	*bp = appendPing(*bp, true, p)
	err := c.writeFrames(*bp)
	putWriteBuf(bp)
	if err != nil {
		return err
	}
	return c.checkPingPolicy()
}

func (c *conn) onGoAway(h frameHeader, p []byte) error {
	if h.streamID != 0 {
		return connError{http2.ErrCodeProtocol, "GOAWAY on a stream"}
	}
	if len(p) < 8 {
		return connError{http2.ErrCodeFrameSize, "GOAWAY length"}
	}
	c.mu.Lock()
	c.peerGoaway = true
	closeConn := c.drainedLocked()
	c.mu.Unlock()
	if closeConn {
		return io.EOF
	}
	return nil
}

func (c *conn) onWindowUpdate(h frameHeader, p []byte) error {
	if len(p) != 4 {
		return connError{http2.ErrCodeFrameSize, "WINDOW_UPDATE length"}
	}
	inc := int64(binary.BigEndian.Uint32(p) & (1<<31 - 1))
	c.mu.Lock()
	if h.streamID == 0 {
		if inc == 0 {
			c.mu.Unlock()
			return connError{http2.ErrCodeProtocol, "WINDOW_UPDATE of 0 on the connection"}
		}
		c.sendWindow += inc
		if c.sendWindow > 1<<31-1 {
			c.mu.Unlock()
			return connError{http2.ErrCodeFlowControl, "connection send window overflow"}
		}
		c.cond.Broadcast()
		c.mu.Unlock()
		return nil
	}
	st := c.streams[h.streamID]
	if st == nil {
		idle := c.isIdleLocked(h.streamID)
		c.mu.Unlock()
		if idle {
			return connError{http2.ErrCodeProtocol, "WINDOW_UPDATE on idle stream"}
		}
		return nil
	}
	if inc == 0 {
		c.mu.Unlock()
		return c.resetStream(st, http2.ErrCodeProtocol, status.Error(codes.Internal, "lite: WINDOW_UPDATE of 0"))
	}
	st.sendWindow += inc
	if st.sendWindow > 1<<31-1 {
		c.mu.Unlock()
		return c.resetStream(st, http2.ErrCodeFlowControl, status.Error(codes.Internal, "lite: stream send window overflow"))
	}
	c.cond.Broadcast()
	c.mu.Unlock()
	return nil
}

// maxFrame is the client's SETTINGS_MAX_FRAME_SIZE.
func (c *conn) maxFrame() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.peerMaxFrame
}

// writeFrames writes b (see writeLocked).
func (c *conn) writeFrames(b []byte) error {
	c.wmu.Lock()
	err := c.writeLocked(b)
	c.wmu.Unlock()
	return err
}

// maxPending bounds the frames queued on a connection while a write is
// under way: past it, writers wait, so a client that stops reading holds
// up its senders (and their sessions' queues fill) instead of this buffer
// growing.
const maxPending = 256 << 10

// writeLocked queues b, a copy of it, to be written after the frames
// already queued, and writes the queue unless another goroutine is doing
// so (that one then writes b too). wmu must be held; writeLocked may
// release and retake it. A failed write closes the connection. See
// writeBatchLocked for the yielding variant that senders use.
func (c *conn) writeLocked(b []byte) error { return c.queueLocked(b, false) }

// writeBatchLocked is writeLocked for DATA from streams' senders: when it
// has to write, it first yields the processor once, so that the other
// streams of the connection with frames ready (a broadcast wakes a writer
// for each) add theirs and one write carries them all. With one stream
// per connection it costs a trip through the scheduler and no latency
// when nothing else is runnable.
func (c *conn) writeBatchLocked(b []byte) error { return c.queueLocked(b, true) }

func (c *conn) queueLocked(b []byte, yield bool) error {
	for c.werr == nil && c.pending != nil && len(*c.pending) >= maxPending {
		c.flushed.Wait()
	}
	if c.werr != nil {
		return c.werr
	}
	if c.pending == nil {
		c.pending = getWriteBuf()
	}
	*c.pending = append(*c.pending, b...)
	if c.flushing {
		return nil
	}
	c.flushing = true
	if yield {
		c.wmu.Unlock()
		runtime.Gosched()
		c.wmu.Lock()
	}
	c.flushLocked()
	return c.werr
}

// flushInBackground has what is queued written off the caller's
// goroutine, unless a writer is at it already. wmu must be held.
//
// On a TCP connection the connection joins its flush shard's list (see
// flushShard): one goroutine per shard writes every listed connection
// without blocking, so a broadcast over 10,000 connections costs one
// goroutine and 10,000 write calls, not 10,000 goroutines each with its
// scheduling rounds and its write deadline. A connection whose socket is
// full goes on to a goroutine of its own (flushAlone). Other connections
// (TLS) get that goroutine at once.
func (c *conn) flushInBackground() {
	if c.flushing {
		return
	}
	c.flushing = true
	if c.fd >= 0 {
		c.shard.add(c)
		return
	}
	go func() {
		c.srv.settle()
		c.flushAlone()
	}()
}

// flushAlone runs the flush loop with blocking writes, under their
// deadline; the caller set c.flushing.
func (c *conn) flushAlone() {
	c.wmu.Lock()
	c.flushLocked()
	c.wmu.Unlock()
}

// flushLocked is the flush loop: it writes what is queued, batch after
// batch, until nothing is or a write failed. The caller set c.flushing;
// wmu must be held, and is released during each write.
func (c *conn) flushLocked() {
	for c.pending != nil && c.werr == nil {
		bp := c.pending
		c.pending = nil
		c.wmu.Unlock()
		c.nc.SetWriteDeadline(time.Now().Add(c.srv.opts.WriteTimeout))
		_, err := c.nc.Write(*bp)
		putWriteBuf(bp)
		c.wmu.Lock()
		c.wrote(err)
	}
	c.flushDone()
}

// flushNow is the flush loop of a flush shard's goroutine: it writes what
// is queued without ever waiting for the socket. When the socket takes
// only part, the rest goes back to the front of the queue and the loop
// goes on on a goroutine of its own (flushAlone), where waiting is
// harmless. The caller set c.flushing; wmu must not be held.
func (c *conn) flushNow(f *flushShard) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	for c.pending != nil && c.werr == nil {
		bp := c.pending
		c.pending = nil
		c.wmu.Unlock()
		n, err := c.writeNow(*bp)
		if err != net.ErrClosed { // refused by the fence: nothing written
			f.writes.Add(1)
		}
		c.wmu.Lock()
		if err == errWouldBlock {
			rest := getWriteBuf()
			*rest = append(*rest, (*bp)[n:]...)
			if c.pending != nil {
				*rest = append(*rest, *c.pending...)
				putWriteBuf(c.pending)
			}
			c.pending = rest
			putWriteBuf(bp)
			c.srv.handedOff.Add(1)
			go c.flushAlone()
			return
		}
		putWriteBuf(bp)
		c.wrote(err)
	}
	c.flushDone()
}

// wrote records a flush loop's write: a failed one closes the connection.
// Writers waiting for room are woken either way. wmu must be held.
func (c *conn) wrote(err error) {
	if err != nil && c.werr == nil {
		c.werr = err
		c.closeConn()
	}
	c.flushed.Broadcast()
}

// flushDone ends a flush loop: what still waits after a failed write is
// dropped. wmu must be held.
func (c *conn) flushDone() {
	if c.pending != nil {
		putWriteBuf(c.pending)
		c.pending = nil
	}
	c.flushing = false
	c.flushed.Broadcast()
}

// waitFlushed waits until queued frames are written (or the write
// failed), so that closing the connection does not cut off a GOAWAY or a
// stream's trailers.
func (c *conn) waitFlushed() {
	c.wmu.Lock()
	for c.flushing {
		c.flushed.Wait()
	}
	c.wmu.Unlock()
}

// writeControl writes, in one write, a connection WINDOW_UPDATE (connInc),
// a stream WINDOW_UPDATE (sid, streamInc) and an RST_STREAM (rstID, code),
// each only if non-zero.
func (c *conn) writeControl(connInc int64, sid uint32, streamInc int64, rstID uint32, code http2.ErrCode) error {
	if connInc == 0 && streamInc == 0 && rstID == 0 {
		return nil
	}
	bp := getWriteBuf()
	b := *bp
	if connInc > 0 {
		b = appendWindowUpdate(b, 0, uint32(connInc))
	}
	if streamInc > 0 {
		b = appendWindowUpdate(b, sid, uint32(streamInc))
	}
	if rstID != 0 {
		b = appendRSTStream(b, rstID, code)
	}
	err := c.writeFrames(b)
	*bp = b
	putWriteBuf(bp)
	return err
}

func (c *conn) writeRST(sid uint32, code http2.ErrCode) error {
	return c.writeControl(0, 0, 0, sid, code)
}

func (c *conn) writeSettings() error {
	o := &c.srv.opts
	bp := getWriteBuf()
	b := *bp
	n := 3
	if o.InitialWindowSize != defaultWindow {
		n++
	}
	b = appendFrameHeader(b, 6*n, http2.FrameSettings, 0, 0)
	b = appendSetting(b, http2.SettingMaxConcurrentStreams, o.MaxConcurrentStreams)
	b = appendSetting(b, http2.SettingMaxHeaderListSize, o.MaxHeaderListSize)
	b = appendSetting(b, http2.SettingHeaderTableSize, 4096)
	if o.InitialWindowSize != defaultWindow {
		b = appendSetting(b, http2.SettingInitialWindowSize, uint32(o.InitialWindowSize))
	}
	if o.InitialConnWindowSize > defaultWindow {
		b = appendWindowUpdate(b, 0, uint32(o.InitialConnWindowSize-defaultWindow))
	}
	c.wmu.Lock()
	err := c.writeLocked(b)
	c.handshook = err == nil
	c.wmu.Unlock()
	*bp = b
	putWriteBuf(bp)
	return err
}

// drain starts a graceful shutdown of the connection: GOAWAY with the last
// stream id accepted; the connection closes when its last stream ends.
func (c *conn) drain() {
	c.mu.Lock()
	if c.closed || c.draining {
		c.mu.Unlock()
		return
	}
	c.draining = true
	c.goawayID = c.maxStreamID
	last := c.goawayID
	empty := len(c.streams) == 0
	c.mu.Unlock()
	c.wmu.Lock()
	hs := c.handshook
	if hs {
		bp := getWriteBuf()
		*bp = appendGoAway(*bp, last, http2.ErrCodeNo, "")
		c.writeLocked(*bp)
		putWriteBuf(bp)
	}
	c.wmu.Unlock()
	switch {
	case !hs:
		c.closeConn()
	case empty:
		c.wake()
	}
}

// closeConn closes nc, once no direct write (writeNow) is in progress,
// and keeps any from starting after. Every close of nc goes through it.
func (c *conn) closeConn() {
	c.fdMu.Lock()
	c.fdClosed = true
	c.fdMu.Unlock()
	c.nc.Close()
}

// aLongTimeAgo is a read deadline that makes Read return at once.
var aLongTimeAgo = time.Unix(1, 0)

// errDrained ends the reader of a connection that finished draining.
var errDrained = errors.New("lite: connection drained")

// wake makes the reader's pending (or next) Read return at once so that it
// checks whether a draining connection can now close. Only the reader
// closes a drained connection: it alone knows whether a header block (of a
// stream the client sent before our GOAWAY) is half-read.
func (c *conn) wake() { c.nc.SetReadDeadline(aLongTimeAgo) }

// drained is drainedLocked for the reader, which also checks that no header
// block is in progress.
func (c *conn) drained() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.contStream == 0 && c.drainedLocked()
}
