package lite

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// EventHandler starts an event-driven stream. It is called on the
// connection's goroutine when the stream's HEADERS arrive; it must not
// block. It may call st.Finish (to reject the stream) and return nil.
type EventHandler func(st *Stream) Events

// Events receives a stream's messages on the connection's goroutine.
type Events interface {
	// Msg is one complete request message: the protobuf bytes without
	// gRPC's 5-byte prefix. b is valid only during the call. Msg may block
	// briefly (it holds up that connection's other frames). It must not
	// wait for a Send on this connection that could need a WINDOW_UPDATE
	// from the client: only this goroutine reads those.
	Msg(b []byte)
	// Closed says no more messages will come: io.EOF when the client
	// half-closed; a status error (codes.Canceled on RST_STREAM CANCEL,
	// codes.Unavailable when the connection broke or the server stopped,
	// codes.ResourceExhausted for a too-large message, codes.Internal for a
	// protocol error). Called at most once, never after Finish has
	// returned. After Closed(io.EOF) a later failure of the stream is seen
	// only through Context and Send's error.
	Closed(err error)
}

// Stream is one server stream: an event-driven stream (HandleEvents) or the
// transport of a RegisterService call. Its methods are safe for concurrent
// use, except that Sends must not run concurrently with each other.
type Stream struct {
	c       *conn
	id      uint32
	method  string
	ctx     context.Context
	cancel  context.CancelFunc
	ctProto bool       // reply with content-type application/grpc+proto
	ev      Events     // event streams; used on the connection goroutine only
	g       *grpcState // goroutine-backed streams

	// Message assembly, connection goroutine only.
	msgHdr  [5]byte
	msgHdrN uint8
	msgLen  uint32
	msg     []byte

	// Guarded by c.mu.
	recvAvail      int64 // what the client may still send on the stream
	recvUnacked    int64 // consumed, not yet returned with WINDOW_UPDATE
	sendWindow     int64
	remoteDone     bool // client sent END_STREAM (or RST_STREAM)
	ended          bool // Send must fail: finished, reset or connection gone
	finished       bool // Finish was called
	closedNotified bool // Closed was called (or no longer may be)
	endErr         error
	header         metadata.MD
	trailer        metadata.MD
	hdrSent        bool // written with c.wmu and c.mu held

	// Guarded by c.wmu.
	endSent bool
}

var (
	errFinished = status.Error(codes.Canceled, "lite: stream finished")
	errHdrSent  = status.Error(codes.Internal, "transport: the stream is done or WriteHeader was already called")
	statusOK    = status.New(codes.OK, "")
)

// Context carries the request metadata (metadata.FromIncomingContext, with
// "-bin" values decoded), the peer (peer.FromContext), the grpc-timeout
// deadline and the method (grpc.Method). It is done when the stream ends
// for any reason.
func (st *Stream) Context() context.Context { return st.ctx }

// Send sends one already-encoded protobuf message (response HEADERS first,
// once). It respects the client's flow-control windows and max frame size,
// blocking while a window is empty, and returns a status error
// (Unavailable, Canceled) once the stream ended or if Finish is called
// while it waits.
func (st *Stream) Send(msg []byte) error { return st.sendMsg(msg) }

// SetHeader merges md into the response headers; it fails once they were
// sent.
func (st *Stream) SetHeader(md metadata.MD) error {
	c := st.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if st.hdrSent || st.ended {
		return errHdrSent
	}
	st.header = metadata.Join(st.header, md)
	return nil
}

// sendHeader merges md and writes the response headers now.
func (st *Stream) sendHeader(md metadata.MD) error {
	if err := st.SetHeader(md); err != nil {
		return err
	}
	c := st.c
	maxFrame := c.maxFrame()
	bp := getWriteBuf()
	defer putWriteBuf(bp)
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if st.hdrSent || st.endSent {
		return errHdrSent
	}
	*bp = st.appendHeadersLocked(*bp, maxFrame)
	return c.writeLocked(*bp)
}

func (st *Stream) setTrailer(md metadata.MD) error {
	c := st.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if st.finished {
		return status.Error(codes.Internal, "lite: SetTrailer after the stream finished")
	}
	st.trailer = metadata.Join(st.trailer, md)
	return nil
}

// appendHeadersLocked appends the response HEADERS; c.wmu must be held.
func (st *Stream) appendHeadersLocked(b []byte, maxFrame int) []byte {
	c := st.c
	c.mu.Lock()
	md := st.header
	st.header = nil
	st.hdrSent = true
	c.mu.Unlock()
	c.resetPingStrikes.Store(true)
	return c.appendHeaderBlock(b, st.id, false, maxFrame, func() {
		c.encodeField(":status", "200")
		c.encodeField("content-type", contentTypeFor(st.ctProto))
		c.encodeMD(md)
	})
}

// Finish ends the stream with status err (nil is OK; a status error keeps
// its code; context errors map to Canceled/DeadlineExceeded like grpc-go;
// any other error is Unknown). It writes trailers (a trailers-only response
// if no HEADERS were sent) with END_STREAM, then RST_STREAM NO_ERROR if the
// client had not half-closed. It is idempotent, releases a blocked Send,
// and blocks at most about WriteTimeout.
func (st *Stream) Finish(err error) { st.finish(toStatus(err)) }

func toStatus(err error) *status.Status {
	if err == nil {
		return statusOK
	}
	if s, ok := status.FromError(err); ok {
		return s
	}
	return status.FromContextError(err)
}

func (st *Stream) finish(s *status.Status) {
	c := st.c
	c.mu.Lock()
	if st.finished {
		c.mu.Unlock()
		return
	}
	st.finished = true
	wasEnded := st.ended
	if !st.ended {
		st.ended = true
		st.endErr = errFinished
	}
	remoteDone := st.remoteDone
	trailer := st.trailer
	withHeader := !st.hdrSent && len(st.header) > 0
	maxFrame := c.peerMaxFrame
	c.cond.Broadcast()
	c.mu.Unlock()

	if !wasEnded {
		bp := getWriteBuf()
		c.wmu.Lock()
		if !st.endSent {
			b := *bp
			if withHeader && !st.hdrSent {
				b = st.appendHeadersLocked(b, maxFrame)
			}
			trailersOnly := !st.hdrSent
			b = c.appendHeaderBlock(b, st.id, true, maxFrame, func() {
				if trailersOnly {
					c.encodeField(":status", "200")
					c.encodeField("content-type", contentTypeFor(st.ctProto))
				}
				c.encodeStatus(s)
				c.encodeMD(trailer)
			})
			if !remoteDone {
				b = appendRSTStream(b, st.id, http2.ErrCodeNo)
			}
			c.mu.Lock()
			st.hdrSent = true
			// Free the stream's slot before the trailers can reach the
			// client: the client may open its next stream as soon as it
			// reads them, and must not find MaxConcurrentStreams still full.
			if c.streams[st.id] == st {
				delete(c.streams, st.id)
			}
			c.mu.Unlock()
			st.endSent = true
			c.resetPingStrikes.Store(true)
			c.writeLocked(b)
			*bp = b
		}
		c.wmu.Unlock()
		putWriteBuf(bp)
	}

	c.mu.Lock()
	if c.streams[st.id] == st {
		delete(c.streams, st.id)
	}
	closeConn := c.drainedLocked()
	c.mu.Unlock()
	st.cancel()
	if closeConn {
		c.wake()
	}
}

// notifyClosed tells the stream's handler that no more messages will come.
// It runs on the connection goroutine.
func (st *Stream) notifyClosed(err error) {
	if st.g != nil {
		st.g.fail(st, err)
		return
	}
	if st.ev != nil {
		st.ev.Closed(err)
	}
}

// transportStream is Stream as a grpc.ServerTransportStream, so that
// grpc.Method, grpc.SetHeader, grpc.SendHeader and grpc.SetTrailer work on
// its context.
type transportStream Stream

func (ts *transportStream) Method() string { return ts.method }

func (ts *transportStream) SetHeader(md metadata.MD) error { return (*Stream)(ts).SetHeader(md) }

func (ts *transportStream) SendHeader(md metadata.MD) error { return (*Stream)(ts).sendHeader(md) }

func (ts *transportStream) SetTrailer(md metadata.MD) error { return (*Stream)(ts).setTrailer(md) }

var _ grpc.ServerTransportStream = (*transportStream)(nil)

// startStream validates a new request's headers and starts its stream.
func (c *conn) startStream(hs *headerState) error {
	sid := hs.sid
	rst := !hs.endStream
	o := &c.srv.opts
	if hs.tooLarge {
		return c.writeRST(sid, http2.ErrCodeFrameSize)
	}
	if hs.malformed || hs.method == "" || hs.path == "" {
		return c.writeRST(sid, http2.ErrCodeProtocol)
	}
	c.mu.Lock()
	refuse := c.peerGoaway || (c.draining && sid > c.goawayID) || uint32(len(c.streams)) >= o.MaxConcurrentStreams
	c.mu.Unlock()
	if refuse {
		return c.writeRST(sid, http2.ErrCodeRefusedStream)
	}
	md := hs.md
	if len(md[":authority"]) > 1 || len(md["host"]) > 1 {
		return c.earlyAbort(sid, hs.ctProto, 400, status.Newf(codes.Internal,
			"num values of :authority: %v, num values of host: %v, both must only have 1 value as per HTTP/2 spec",
			len(md[":authority"]), len(md["host"])), rst)
	}
	if !hs.isGRPC {
		return c.earlyAbort(sid, false, 415, status.Newf(codes.InvalidArgument, "invalid gRPC request content-type %q", hs.contentType), rst)
	}
	if hs.hdrErr != "" {
		return c.earlyAbort(sid, hs.ctProto, 400, status.New(codes.Internal, hs.hdrErr), rst)
	}
	if len(md[":authority"]) == 0 {
		if host, ok := md["host"]; ok {
			md[":authority"] = host
		}
	}
	delete(md, "host")
	if len(md[":authority"]) == 0 {
		return c.earlyAbort(sid, hs.ctProto, 400, status.New(codes.Internal, "no host or :authority header present"), rst)
	}
	if hs.method != "POST" {
		return c.earlyAbort(sid, hs.ctProto, 405, status.Newf(codes.Internal, "Received a HEADERS frame with :method %q which should be POST", hs.method), rst)
	}
	if hs.encoding != "" && hs.encoding != "identity" {
		return c.earlyAbort(sid, hs.ctProto, 200, status.Newf(codes.Unimplemented, "grpc: Decompressor is not installed for grpc-encoding %q", hs.encoding), rst)
	}
	h := c.srv.handlers[hs.path]
	if h == nil {
		return c.earlyAbort(sid, hs.ctProto, 200, status.New(codes.Unimplemented, c.srv.unknownMethod(hs.path)), rst)
	}
	if hs.hasTimeout && hs.timeout <= 0 {
		return c.earlyAbort(sid, hs.ctProto, 200, status.New(codes.DeadlineExceeded, context.DeadlineExceeded.Error()), rst)
	}

	st := &Stream{c: c, id: sid, method: hs.path, ctProto: hs.ctProto, recvAvail: int64(o.InitialWindowSize)}
	ctx := metadata.NewIncomingContext(context.Background(), md)
	ctx = peer.NewContext(ctx, c.peer)
	ctx = grpc.NewContextWithServerTransportStream(ctx, (*transportStream)(st))
	if hs.hasTimeout {
		st.ctx, st.cancel = context.WithTimeout(ctx, hs.timeout)
	} else {
		st.ctx, st.cancel = context.WithCancel(ctx)
	}
	if h.kind != kindEvents {
		st.g = &grpcState{ready: make(chan struct{}, 1)}
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		st.cancel()
		return nil
	}
	st.sendWindow = c.peerInitWin
	c.streams[sid] = st
	c.mu.Unlock()

	switch h.kind {
	case kindEvents:
		ev := h.events(st)
		st.ev = ev
		if ev == nil {
			st.finish(status.New(codes.Internal, "lite: the event handler returned no Events"))
			return nil
		}
	case kindUnary, kindStream:
		c.waitHandlerSlot()
		c.srv.handlerWG.Add(1)
		if h.kind == kindUnary {
			go c.runUnary(st, h)
		} else {
			go c.runStream(st, h)
		}
	}
	if hs.endStream {
		c.halfClose(st)
	}
	return nil
}

// earlyAbort answers a request that gets no stream: one HEADERS with
// :status, content-type and the gRPC status, END_STREAM, then RST_STREAM
// NO_ERROR if the client has not half-closed.
func (c *conn) earlyAbort(sid uint32, ctProto bool, httpStatus int, s *status.Status, rst bool) error {
	c.debug("lite: rejecting stream", "stream", sid, "http_status", httpStatus, "code", s.Code(), "msg", s.Message())
	maxFrame := c.maxFrame()
	bp := getWriteBuf()
	defer putWriteBuf(bp)
	c.wmu.Lock()
	defer c.wmu.Unlock()
	b := c.appendHeaderBlock(*bp, sid, true, maxFrame, func() {
		c.encodeField(":status", strconv.Itoa(httpStatus))
		c.encodeField("content-type", contentTypeFor(ctProto))
		c.encodeStatus(s)
	})
	if rst {
		b = appendRSTStream(b, sid, http2.ErrCodeNo)
	}
	*bp = b
	return c.writeLocked(b)
}

// unknownMethod is grpc-go's message for a method nobody serves.
func (s *Server) unknownMethod(path string) string {
	sm := strings.TrimPrefix(path, "/")
	pos := strings.LastIndex(sm, "/")
	if pos == -1 {
		return fmt.Sprintf("malformed method name: %q", path)
	}
	service, method := sm[:pos], sm[pos+1:]
	if _, ok := s.services[service]; ok {
		return fmt.Sprintf("unknown method %v for service %v", method, service)
	}
	return fmt.Sprintf("unknown service %v", service)
}
