package server

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
)

// Connect implements PresenceService.Connect.
func (srv *Server) Connect(stream presencev1.PresenceService_ConnectServer) error {
	return srv.Serve(newGRPCConn(stream))
}

// Serve runs one session over conn until it ends and returns the status it
// ended with (nil when the client closed its side). Transports other than
// gRPC call it with their own Conn.
//
// The calling goroutine never blocks in Recv or Send: a reader goroutine
// receives, a writer sends, and this one waits for the session's context
// and returns the status for its cause. Returning is what ends a gRPC
// stream, and that releases a reader or writer stuck on the wire.
func (srv *Server) Serve(conn Conn) error {
	if !srv.enter() {
		return status.Error(codes.Unavailable, "the server is shutting down; reconnect in a few seconds")
	}
	defer srv.leave()

	ctx, cancel := context.WithCancelCause(conn.Context())
	defer cancel(nil)
	s := &session{
		srv:        srv,
		conn:       conn,
		ctx:        ctx,
		cancel:     func(e error) { cancel(e) },
		identified: make(chan struct{}),
	}
	first := make(chan *presencev1.ConnectRequest, 1)
	go s.readLoop(first)

	// Phase 1: the first frame must be Identify, within the timeout.
	timer := time.NewTimer(srv.opts.IdentifyTimeout)
	var req *presencev1.ConnectRequest
	select {
	case req = <-first:
		timer.Stop()
	case <-timer.C:
		s.end(endf(ReasonIdentifyTimeout, "no Identify within %v of opening the stream; send Identify as the first frame", srv.opts.IdentifyTimeout))
	case <-ctx.Done():
		timer.Stop()
	case <-srv.draining:
		timer.Stop()
		s.end(&EndError{Reason: ReasonShutdown, Msg: "the server is shutting down; reconnect in a few seconds"})
	}
	if req == nil {
		return srv.endStatus(nil, asEndError(context.Cause(ctx)))
	}
	id, err := srv.checkIdentify(req)
	if err != nil {
		s.end(err)
		return srv.endStatus(nil, err)
	}

	// Phase 2: identified. Register, then unregister on the way out.
	now := time.Now()
	s.id, s.uid, s.labels, s.connectedAt = newID(), id.uid, id.labels, now
	s.touch(now)
	if n := srv.total.Add(1); n > int64(srv.opts.MaxSessions) {
		srv.total.Add(-1)
		err := endf(ReasonLimit, "the server is full (%d sessions); reconnect later or to another server", srv.opts.MaxSessions)
		s.end(err)
		return srv.endStatus(nil, err)
	}
	defer srv.total.Add(-1)
	replaced, refused := srv.reg.add(s, srv.opts.MaxSessionsPerUid, srv.opts.SessionsPerUidPolicy)
	if refused {
		err := endf(ReasonLimit, "uid %q already has %d sessions, the limit; close one first", s.uid, srv.opts.MaxSessionsPerUid)
		s.end(err)
		return srv.endStatus(nil, err)
	}
	defer srv.reg.remove(s)
	if replaced != nil {
		replaced.end(endf(ReasonReplaced, "a newer session of uid %q replaced this one (the limit is %d sessions per uid); do not reconnect automatically", s.uid, srv.opts.MaxSessionsPerUid))
	}
	if srv.isDraining() {
		// Shutdown may have swept the registry before add; end here.
		s.end(srv.shutdownCause())
	}
	if !id.expiresAt.IsZero() {
		s.armExpiry(id.expiresAt)
		defer s.stopExpiry()
	}
	s.enqueue(s.identifiedFrame())
	close(s.identified)
	srv.log.LogAttrs(ctx, slog.LevelInfo, "session started",
		slog.String("session", s.id), slog.String("uid", s.uid), slog.Any("labels", s.labels))

	<-ctx.Done()
	cause := asEndError(context.Cause(ctx))
	s.finish(cause)
	return srv.endStatus(s, cause)
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
	if srv.hooks.ended != nil {
		srv.hooks.ended(s, cause)
	}
	if cause.Reason == ReasonClientClosed {
		return nil
	}
	return status.Error(cause.Reason.Code(), cause.Msg)
}

// identity is who a valid Identify says the client is.
type identity struct {
	uid       string
	labels    map[string]string
	expiresAt time.Time // zero: no expiry (no token, or a token without exp)
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
	who := identity{uid: id.GetUid(), labels: id.GetLabels()}
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

// readLoop is the session's only caller of Recv. It hands the first frame
// to the handler, waits until the session is identified, then handles
// frames until the stream ends.
func (s *session) readLoop(first chan<- *presencev1.ConnectRequest) {
	req, err := s.conn.Recv()
	if err != nil {
		s.end(recvError(err))
		return
	}
	first <- req
	select {
	case <-s.identified:
	case <-s.ctx.Done():
		return
	}
	limit := newFrameLimiter(s.srv.opts.MaxFrameRate, s.srv.opts.FrameBurst, time.Now())
	for {
		req, err := s.conn.Recv()
		if err != nil {
			s.end(recvError(err))
			return
		}
		now := time.Now()
		s.touch(now)
		if !limit.allow(now) {
			s.end(endf(ReasonLimit, "more than %g frames/s (bursts of %d) from the client; send Ping every heartbeat interval, not faster",
				s.srv.opts.MaxFrameRate, s.srv.opts.FrameBurst))
			return
		}
		switch f := req.GetFrame().(type) {
		case *presencev1.ConnectRequest_RefreshToken:
			if err := s.refresh(f.RefreshToken.GetToken()); err != nil {
				s.end(err)
				return
			}
		case *presencev1.ConnectRequest_Ping:
			s.enqueue(newFrame(&presencev1.ConnectResponse{Frame: &presencev1.ConnectResponse_Pong{Pong: &presencev1.Pong{
				Seq: f.Ping.GetSeq(), ServerTime: timestamppb.New(now),
			}}}))
		case *presencev1.ConnectRequest_Identify:
			s.end(endf(ReasonProtocol, "Identify was sent twice; send it once, as the first frame"))
			return
		default:
			s.end(frameError(req))
			return
		}
	}
}

// frameError explains a frame with no known field set.
func frameError(req *presencev1.ConnectRequest) *EndError {
	if len(req.ProtoReflect().GetUnknown()) > 0 {
		return endf(ReasonUnknownFrame, "this server does not know the frame sent (a newer protocol?); upgrade the server or stop sending it")
	}
	return endf(ReasonInvalidFrame, "empty frame: set exactly one of identify, ping or refresh_token")
}

func frameName(req *presencev1.ConnectRequest) string {
	switch req.GetFrame().(type) {
	case *presencev1.ConnectRequest_Ping:
		return "Ping"
	case *presencev1.ConnectRequest_Identify:
		return "Identify"
	case *presencev1.ConnectRequest_RefreshToken:
		return "RefreshToken"
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
	}
	return &EndError{Reason: ReasonTransport, Msg: "receiving from the client failed: " + err.Error()}
}
