package server

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
)

// Connect implements PresenceService.Connect.
func (srv *Server) Connect(stream presencev1.PresenceService_ConnectServer) error {
	return srv.Serve(newGRPCConn(stream))
}

// Serve runs one session over conn, a transport that blocks in Recv (gRPC,
// WebSocket), until it ends, and returns the status it ended with (nil when
// the client closed its side).
//
// The calling goroutine never blocks in Recv or Send: a reader goroutine
// receives and hands each frame to the session, a writer sends, and this
// one waits for the session's end and returns its status. Returning is what
// ends a gRPC stream, and that releases a reader or writer stuck on the
// wire.
func (srv *Server) Serve(conn Conn) error {
	ended := make(chan error, 1)
	in, err := srv.Attach(conn, func(err error) { ended <- err })
	if err != nil {
		return err
	}
	go func() {
		for {
			req, err := conn.Recv()
			if err != nil {
				in.Closed(err)
				return
			}
			if !in.Frame(req) {
				return
			}
		}
	}()
	return <-ended
}

// Attach starts a session on a stream whose client frames the transport
// delivers itself, through the returned Inbound, so that an idle session
// needs no goroutine of the server's (the lite transport reads every
// stream of a connection on one goroutine). The session's writer sends on
// out. Once the session has ended and flushed its Goodbye, ended is called
// once, on a goroutine of the server's, with the status to end the stream
// with (nil: the client closed its side); the transport then ends the
// stream. Attach fails, with the status to refuse the stream with, only
// when the server is shutting down.
func (srv *Server) Attach(out Sender, ended func(error)) (*Inbound, error) {
	if !srv.enter() {
		return nil, status.Error(codes.Unavailable, "the server is shutting down; reconnect in a few seconds")
	}
	ctx, cancel := context.WithCancelCause(out.Context())
	direct, _ := out.(DirectSender)
	s := &session{
		srv:        srv,
		conn:       out,
		direct:     direct,
		ctx:        ctx,
		cancel:     func(e error) { cancel(e) },
		identified: make(chan struct{}),
	}
	in := &Inbound{s: s}
	// Phase 1: the first frame must be Identify, within the timeout.
	in.identifyTimer = time.AfterFunc(srv.opts.IdentifyTimeout, func() {
		s.end(endf(ReasonIdentifyTimeout, "no Identify within %v of opening the stream; send Identify as the first frame", srv.opts.IdentifyTimeout))
	})
	in.stopDrain = context.AfterFunc(srv.drainCtx, func() {
		// Shutdown's own cause, with its reconnect hint: this hook also
		// wins for a session whose Identified is out but whose open has
		// not yet stopped the hook, and that session gets a Goodbye. One
		// still unidentified gets only the status, whose message cannot
		// point at a hint.
		cause := srv.shutdownCause()
		cause.Msg = "the server is shutting down; reconnect in a few seconds"
		s.end(cause)
	})
	context.AfterFunc(ctx, func() {
		ended(in.end())
		srv.leave()
	})
	return in, nil
}

// Inbound takes a session's client frames from its transport. Frame and
// Closed are called by one goroutine at a time (the transport's reader).
type Inbound struct {
	s *session

	// Set by Attach, read-only after (both are safe to stop concurrently).
	identifyTimer *time.Timer // ends the session without Identify; stopped by the first frame
	stopDrain     func() bool // stops ending an unidentified session at shutdown

	// Owned by the reader.
	first bool          // the first frame has come
	limit *frameLimiter // made once identified

	mu      sync.Mutex
	opening bool          // open has started; guarded by mu
	opened  chan struct{} // closed when open has returned; set with opening
	openErr *EndError     // written by open's goroutine before it closes opened
}

// Frame handles one client frame and reports whether the transport
// should go on reading: false once the session is ending. A frame that
// comes while Identify is being checked waits for it.
func (in *Inbound) Frame(req *presencev1.ConnectRequest) bool {
	s := in.s
	s.srv.metrics.frameIn(req)
	if !in.first {
		in.first = true
		in.identifyTimer.Stop()
		in.mu.Lock()
		if s.ctx.Err() != nil {
			// Ended already (timeout, shutdown): end will not wait for open.
			in.mu.Unlock()
			return false
		}
		in.opening, in.opened = true, make(chan struct{})
		in.mu.Unlock()
		// Phase 2, on a goroutine of its own: see open.
		go func() {
			defer close(in.opened)
			in.openErr = s.srv.open(s, req)
			if in.openErr == nil {
				in.stopDrain()
			}
		}()
		return true
	}
	if in.limit == nil {
		select {
		case <-s.identified:
		case <-s.ctx.Done():
			return false
		}
		in.limit = newFrameLimiter(s.srv.opts.MaxFrameRate, s.srv.opts.FrameBurst, time.Now())
	}
	return s.handle(req, in.limit)
}

// Closed says no more frames will come: err is io.EOF when the client
// closed its side, or why the transport failed (a gRPC status or another
// error), as Recv reports it. It ends the session.
func (in *Inbound) Closed(err error) { in.s.end(recvError(err)) }

// end runs once the session's context is done: it waits for a running
// open, flushes the Goodbye, undoes the registration, logs, and returns
// the stream's status.
func (in *Inbound) end() error {
	s, srv := in.s, in.s.srv
	in.identifyTimer.Stop()
	in.stopDrain()
	cause := asEndError(context.Cause(s.ctx))
	in.mu.Lock()
	opening := in.opening
	in.mu.Unlock()
	if !opening {
		return srv.endStatus(nil, cause)
	}
	<-in.opened
	if in.openErr != nil {
		return srv.endStatus(nil, in.openErr)
	}
	s.finish(cause)
	err := srv.endStatus(s, cause)
	srv.close(s)
	return err
}

// open identifies and registers s from its Identify frame: it checks the
// token, counts the session, joins the registry (queueing Identified and
// any replay), arms the token expiry and logs the start. On an error the
// session has been ended with it and nothing is left to undo; on success
// close undoes it when the session ends.
//
// Inbound.Frame runs open on a short-lived goroutine of its own. Token
// verification, protobuf, the registry and logging need several KiB of
// stack; run on the reader's goroutine (or the lite transport's connection
// goroutine) they would grow its stack to 8 KiB, and Go keeps a grown
// stack while the goroutine waits (it shrinks one only when under a
// quarter of it is in use, and the transport's frames under a waiting
// reader are ≈1.5 KiB of it). The reader then waits, for the life of the
// session, on a stack that never grew: 4 KiB less per idle session
// (BENCHMARKS.md, "idle").
func (srv *Server) open(s *session, req *presencev1.ConnectRequest) *EndError {
	id, err := srv.checkIdentify(req)
	if err != nil {
		s.end(err)
		return err
	}

	now := time.Now()
	s.id, s.uid, s.labels, s.connectedAt = newID(), id.uid, id.labels, now
	s.touch(now)
	if n := srv.total.Add(1); n > int64(srv.opts.MaxSessions) {
		srv.total.Add(-1)
		err := endf(ReasonLimit, "the server is full (%d sessions); reconnect later or to another server", srv.opts.MaxSessions)
		s.end(err)
		return err
	}
	var ul *uidLogRead
	if srv.uidLogEpoch() != "" {
		ul = srv.readUidLog(s.ctx, id.uid, id.resume)
	}
	replaced, elsewhere, refused := srv.join(s, id.resume, ul)
	if refused {
		srv.total.Add(-1)
		err := endf(ReasonLimit, "uid %q already has %d sessions, the limit; close one first", s.uid, srv.opts.MaxSessionsPerUid)
		s.end(err)
		return err
	}
	if replaced != nil {
		replaced.end(endf(ReasonReplaced, replacedMsg, s.uid, srv.opts.MaxSessionsPerUid))
	}
	if srv.isDraining() {
		// Shutdown may have swept the registry before add; end here.
		s.end(srv.shutdownCause())
	}
	if !id.expiresAt.IsZero() {
		s.armExpiry(id.expiresAt)
	}
	close(s.identified)
	srv.log.LogAttrs(s.ctx, slog.LevelInfo, "session started",
		slog.String("session", s.id), slog.String("uid", s.uid), slog.Any("labels", s.labels))
	if elsewhere {
		srv.replaceElsewhere(s.ctx, s.uid)
	}
	if srv.shared != nil {
		// Pushes stored while the uid was offline on every node.
		if err := srv.deliverStored(s.ctx, s.uid); err != nil {
			srv.log.Warn("could not take the uid's stored pushes; they wait for its next Identify or their time", "uid", s.uid, "err", err)
		}
	}
	if srv.hooks.opened != nil {
		srv.hooks.opened(s)
	}
	return nil
}

// close undoes a successful open once the session has ended: the expiry
// timer, the registry entry and the count.
func (srv *Server) close(s *session) {
	s.stopExpiry()
	srv.reg.remove(s)
	srv.total.Add(-1)
}

// endStatus logs a session's end and returns the stream status for cause.
func (srv *Server) endStatus(s *session, cause *EndError) error {
	code := cause.Reason.Code()
	if cause.Reason == ReasonClientClosed {
		code = codes.OK
	}
	attrs := []slog.Attr{slog.String("reason", cause.Reason.String()), slog.String("code", code.String())}
	if s != nil {
		attrs = append(attrs, slog.String("session", s.id), slog.String("uid", s.uid),
			slog.Duration("duration", time.Since(s.connectedAt).Round(time.Millisecond)))
	}
	attrs = append(attrs, slog.String("message", cause.Msg))
	msg := "session ended"
	if s == nil {
		msg = "stream refused"
	}
	srv.log.LogAttrs(context.Background(), slog.LevelInfo, msg, attrs...)
	srv.metrics.streamEnded(s != nil, cause.Reason)
	if srv.hooks.ended != nil {
		srv.hooks.ended(s, cause)
	}
	if cause.Reason == ReasonClientClosed {
		return nil
	}
	return status.Error(cause.Reason.Code(), cause.Msg)
}

// join registers s and queues its Identified and replayed pushes, in one
// step with respect to pushes: under bcastMu (so each broadcast reaches s
// by replay or live, exactly once) and the uid's shard lock (the same for
// the uid's pushes).
func (srv *Server) join(s *session, resume *presencev1.ResumeFrom, ul *uidLogRead) (replaced *session, elsewhere, refused bool) {
	srv.bcastMu.Lock()
	defer srv.bcastMu.Unlock()
	bcastResult, bcastFrames := srv.resumeBroadcasts(resume)
	return srv.reg.add(s, srv.opts.MaxSessionsPerUid, srv.opts.SessionsPerUidPolicy, func(e *uidEntry) {
		if n := e.hist.trim(time.Now(), srv.hist); n > 0 {
			srv.storedExpired.Add(int64(n))
		}
		uidResult := presencev1.ResumeResult_RESUME_RESULT_UNSPECIFIED
		var uidFrames []*Frame
		uidEpoch, uidSeq := e.epoch, e.seq
		switch {
		case ul != nil:
			uidResult, uidFrames, uidEpoch, uidSeq = srv.joinLogged(e, s, ul, resume)
		case resume.GetUidEpoch() == "":
			uidFrames = e.hist.replayFrames(nil, 0, false) // stored pushes only
		case resume.GetUidEpoch() == e.epoch && e.hist.covers(resume.GetUidSeq(), e.seq):
			uidResult = presencev1.ResumeResult_RESUME_RESULT_RESUMED
			uidFrames = e.hist.replayFrames(nil, resume.GetUidSeq(), true)
		default:
			uidResult = presencev1.ResumeResult_RESUME_RESULT_LOST
			uidFrames = e.hist.replayFrames(nil, 0, false)
		}
		id := s.identifiedMsg()
		id.UidEpoch, id.UidSeq = uidEpoch, uidSeq
		id.BroadcastEpoch, id.BroadcastSeq = srv.epoch, srv.bcastSeq
		id.UidResume, id.BroadcastResume = uidResult, bcastResult
		id.Replayed = uint32(len(uidFrames) + len(bcastFrames))
		s.enqueueFirst(newFrame(&presencev1.ConnectResponse{Frame: &presencev1.ConnectResponse_Identified{Identified: id}}),
			uidFrames, bcastFrames)
	})
}

// resumeBroadcasts answers the broadcast half of a resume. srv.bcastMu
// must be held.
func (srv *Server) resumeBroadcasts(resume *presencev1.ResumeFrom) (presencev1.ResumeResult, []*Frame) {
	switch {
	case resume.GetBroadcastEpoch() == "":
		return presencev1.ResumeResult_RESUME_RESULT_UNSPECIFIED, nil
	case resume.GetBroadcastEpoch() == srv.epoch && srv.bcastHist.covers(resume.GetBroadcastSeq(), srv.bcastSeq):
		return presencev1.ResumeResult_RESUME_RESULT_RESUMED, srv.bcastHist.replayFrames(nil, resume.GetBroadcastSeq(), true)
	default:
		return presencev1.ResumeResult_RESUME_RESULT_LOST, nil
	}
}

// identity is who a valid Identify says the client is.
type identity struct {
	uid       string
	labels    map[string]string
	expiresAt time.Time // zero: no expiry (no token, or a token without exp)
	resume    *presencev1.ResumeFrom
}

// checkIdentify validates the first frame and, unless in open development
// mode, its token.
func (srv *Server) checkIdentify(req *presencev1.ConnectRequest) (identity, *EndError) {
	var id *presencev1.Identify
	switch f := req.GetFrame().(type) {
	case *presencev1.ConnectRequest_Identify:
		id = f.Identify
	case nil:
		return identity{}, frameError(req)
	default:
		return identity{}, endf(ReasonProtocol, "the first frame must be Identify, not %s; send Identify first", frameName(req))
	}
	who := identity{uid: id.GetUid(), labels: id.GetLabels(), resume: id.GetResume()}
	if err := validateLabels(who.labels); err != nil {
		return identity{}, endf(ReasonInvalidFrame, "Identify.labels: %v", err)
	}
	if srv.opts.Tokens != nil {
		claims, err := srv.opts.Tokens.Verify(id.GetToken())
		if err != nil {
			return identity{}, endf(ReasonUnauthenticated, "Identify.token: %v; get a new token and reconnect", err)
		}
		if who.uid == "" {
			who.uid = claims.Subject
		} else if who.uid != claims.Subject {
			return identity{}, endf(ReasonPermissionDenied, "Identify.uid %q is not the token's subject %q; identify as the token's uid", who.uid, claims.Subject)
		}
		who.expiresAt = claims.ExpiresAt
	}
	if err := validateUid(who.uid); err != nil {
		return identity{}, endf(ReasonInvalidFrame, "Identify.uid: %v", err)
	}
	return who, nil
}

// handle handles one client frame after Identify and reports whether
// the session goes on.
func (s *session) handle(req *presencev1.ConnectRequest, limit *frameLimiter) bool {
	now := time.Now()
	s.touch(now)
	if ack, ok := req.GetFrame().(*presencev1.ConnectRequest_Ack); ok && s.takeAck() {
		// Acks answer pushes; they are not held to the frame rate.
		s.srv.acks.ack(ack.Ack.GetPushId(), s.uid, s.id)
		return true
	}
	if !limit.allow(now) {
		s.end(endf(ReasonLimit, "more than %g frames/s (bursts of %d) from the client; send Ping every heartbeat interval, not faster",
			s.srv.opts.MaxFrameRate, s.srv.opts.FrameBurst))
		return false
	}
	switch f := req.GetFrame().(type) {
	case *presencev1.ConnectRequest_RefreshToken:
		if err := s.refresh(f.RefreshToken.GetToken()); err != nil {
			s.end(err)
			return false
		}
	case *presencev1.ConnectRequest_Ping:
		s.enqueue(newPong(f.Ping.GetSeq(), now))
	case *presencev1.ConnectRequest_Identify:
		s.end(endf(ReasonProtocol, "Identify was sent twice; send it once, as the first frame"))
		return false
	case *presencev1.ConnectRequest_Ack:
		// More acks than pushes asked for: late or repeated, harmless.
		s.srv.acks.ack(f.Ack.GetPushId(), s.uid, s.id)
	default:
		s.end(frameError(req))
		return false
	}
	return true
}

// frameError explains a frame with no known field set.
func frameError(req *presencev1.ConnectRequest) *EndError {
	if len(req.ProtoReflect().GetUnknown()) > 0 {
		return endf(ReasonUnknownFrame, "this server does not know the frame sent (a newer protocol?); upgrade the server or stop sending it")
	}
	return endf(ReasonInvalidFrame, "empty frame: set exactly one of identify, ping, refresh_token or ack")
}

func frameName(req *presencev1.ConnectRequest) string {
	switch req.GetFrame().(type) {
	case *presencev1.ConnectRequest_Ping:
		return "Ping"
	case *presencev1.ConnectRequest_Identify:
		return "Identify"
	case *presencev1.ConnectRequest_RefreshToken:
		return "RefreshToken"
	case *presencev1.ConnectRequest_Ack:
		return "Ack"
	default:
		return "an unknown frame"
	}
}

// recvError maps a Recv error to why the session ends.
func recvError(err error) *EndError {
	if errors.Is(err, io.EOF) {
		return &EndError{Reason: ReasonClientClosed, Msg: "the client closed its side of the stream"}
	}
	switch status.Code(err) {
	case codes.Canceled, codes.DeadlineExceeded:
		return &EndError{Reason: ReasonClientClosed, Msg: "the client cancelled the stream"}
	case codes.ResourceExhausted:
		return &EndError{Reason: ReasonLimit, Msg: status.Convert(err).Message() + "; send smaller frames"}
	case codes.InvalidArgument:
		// A transport that decodes frames itself (the WebSocket bridge)
		// reports a malformed one this way.
		return &EndError{Reason: ReasonInvalidFrame, Msg: status.Convert(err).Message()}
	}
	return &EndError{Reason: ReasonTransport, Msg: "receiving from the client failed: " + err.Error()}
}

// takeAck reports whether an Ack answers a push queued to s that asked for
// one, counting it off.
func (s *session) takeAck() bool {
	for {
		n := s.pendingAcks.Load()
		if n <= 0 {
			return false
		}
		if s.pendingAcks.CompareAndSwap(n, n-1) {
			return true
		}
	}
}
