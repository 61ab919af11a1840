package server

import (
	"context"
	"errors"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
)

// MaxSendUids bounds SendToUidsRequest.uids.
const MaxSendUids = 1000

// sendUidsParallel is how many uids of a SendToUids a cluster node works
// on at once.
const sendUidsParallel = 32

// SendToUid implements BackendService.SendToUid: it queues one push to every
// live session of the uid, in the uid's seq order, keeps it in the uid's
// history, and reports how many sessions took it. See the proto for
// store_for, ack_timeout and idempotency_key.
func (srv *Server) SendToUid(ctx context.Context, req *presencev1.SendToUidRequest) (*presencev1.SendToUidResponse, error) {
	if err := validateUid(req.GetUid()); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "uid: %v", err)
	}
	storeFor, err := srv.storeFor(req.GetStoreFor())
	if err != nil {
		return nil, err
	}
	ackTimeout, err := optionalDuration("ack_timeout", req.GetAckTimeout(), MaxAckTimeout)
	if err != nil {
		return nil, err
	}
	push, err := srv.newPush(req.GetData(), req.GetBinary())
	if err != nil {
		return nil, err
	}
	push.Scope = presencev1.PushScope_PUSH_SCOPE_UID
	push.AckRequired = ackTimeout > 0
	send := func() (*presencev1.SendToUidResponse, error) {
		return srv.sendToUid(ctx, req.GetUid(), push, storeFor, ackTimeout)
	}
	return idempotent(ctx, srv, "SendToUid", req.GetIdempotencyKey(), req, send, func(r *presencev1.SendToUidResponse) { r.Duplicate = true })
}

// idempotent runs send, once per idempotency key within the window when
// the request has one (see idempotency.do), and answers a retry with a
// copy of the first answer that mark sets duplicate on.
func idempotent[T proto.Message](ctx context.Context, srv *Server, method, key string, req proto.Message, send func() (T, error), mark func(T)) (T, error) {
	var none T
	if key == "" {
		return send()
	}
	if err := validateIdempotencyKey(key); err != nil {
		return none, err
	}
	newResp := func() proto.Message { return none.ProtoReflect().Type().New().Interface() }
	resp, dup, err := srv.idem.do(ctx, method, key, req, newResp, func() (proto.Message, error) { return send() })
	if err != nil {
		return none, err
	}
	first := resp.(T)
	if !dup {
		return first, nil
	}
	c := proto.CloneOf(first)
	mark(c)
	return c, nil
}

func (srv *Server) sendToUid(ctx context.Context, uid string, push *presencev1.Push, storeFor, ackTimeout time.Duration) (*presencev1.SendToUidResponse, error) {
	if srv.opts.Cluster != nil {
		return srv.sendToUidCluster(ctx, uid, push, storeFor, ackTimeout)
	}
	return srv.sendToUidLocal(ctx, uid, push, 0, storeFor, ackTimeout)
}

// sendToUidLocal is SendToUid on this node's sessions only; prev is the
// uid log's entry before push (see deliverHere).
func (srv *Server) sendToUidLocal(ctx context.Context, uid string, push *presencev1.Push, prev uint64, storeFor, ackTimeout time.Duration) (*presencev1.SendToUidResponse, error) {
	var w *ackWait
	if ackTimeout > 0 {
		w = srv.acks.start(push.Id, uid)
	}
	r, err := srv.deliverHere(ctx, push, uid, prev, storeFor)
	if err == nil && r.Offline {
		err = status.Errorf(codes.NotFound, "uid %q has no live session; nothing was sent (set store_for to keep the push until it connects)", uid)
	}
	if err != nil {
		if w != nil {
			srv.acks.cancel(push.Id)
		}
		return nil, err
	}
	resp := &presencev1.SendToUidResponse{
		PushId: push.Id, Seq: r.Seq, Delivered: r.Delivered, SentAt: push.SentAt, Epoch: r.Epoch, Stored: r.Stored,
	}
	if w != nil {
		srv.acks.expect(w, r.sessions)
		resp.AckedSessions, resp.UnackedSessions = srv.acks.wait(ctx, push.Id, w, ackTimeout)
	}
	return resp, nil
}

// deliverHere queues a push to uid's sessions here: numbered in this
// node's sequence for the uid (pushToUid), or, in a cluster that numbers
// uid pushes in its log, in the log's order (deliverLogged; a push the log
// could not take, seq 0, goes out unnumbered).
func (srv *Server) deliverHere(ctx context.Context, push *presencev1.Push, uid string, prev uint64, storeFor time.Duration) (uidDelivery, error) {
	if srv.uidLogEpoch() != "" {
		if push.GetSeq() == 0 {
			return srv.queueUnlogged(push, uid), nil
		}
		return srv.deliverLogged(ctx, uid, push, prev), nil
	}
	return srv.pushToUid(push, uid, storeFor)
}

// uidDelivery is the outcome of a push to one uid.
type uidDelivery struct {
	*presencev1.UidDelivery
	sessions []string // the sessions it was queued to
}

// pushToUid numbers a copy of tmpl in uid's sequence, keeps it in the
// uid's history, and queues it to the uid's live sessions, all under the
// uid's shard lock, so every session sees the uid's pushes in seq order and
// a session joining gets each one by replay or live, exactly once. With no
// live session it stores the push when storeFor is set, else reports
// offline and numbers nothing.
func (srv *Server) pushToUid(tmpl *presencev1.Push, uid string, storeFor time.Duration) (uidDelivery, error) {
	r := uidDelivery{UidDelivery: &presencev1.UidDelivery{Uid: uid}}
	var err error
	now := time.Now()
	srv.reg.withUid(uid, storeFor > 0, func(e *uidEntry) {
		if e == nil || (len(e.sessions) == 0 && storeFor == 0) {
			r.Offline = true
			return
		}
		online := len(e.sessions) > 0
		p := pushCopy(tmpl)
		e.seq++
		p.Seq, p.Epoch = e.seq, e.epoch
		f := pushFrame(p)
		var storeUntil time.Time
		if !online {
			storeUntil = now.Add(storeFor)
		}
		expired, herr := e.hist.add(p, f.Size(), now, storeUntil, srv.hist)
		if expired > 0 {
			srv.storedExpired.Add(int64(expired))
		}
		if herr != nil {
			e.seq-- // nothing carries this seq
			err = status.Errorf(codes.ResourceExhausted, "uid %q: %v; nothing was stored", uid, herr)
			return
		}
		r.Seq, r.Epoch = p.Seq, p.Epoch
		if !online {
			r.Stored = true
			return
		}
		srv.queueUidLocked(e, f, p.AckRequired, &r, 0)
	})
	return r, err
}

// queueUidLocked queues f to e's sessions, but those that got the push's
// log seq at Identify (uidFloor at or past seq; seq 0: none skipped), and
// counts them in r. The uid's shard lock must be held.
func (srv *Server) queueUidLocked(e *uidEntry, f *Frame, ackRequired bool, r *uidDelivery, seq uint64) {
	for _, s := range e.sessions {
		if seq != 0 && s.uidFloor >= seq {
			continue
		}
		if s.enqueue(f) {
			r.Delivered++
			r.sessions = append(r.sessions, s.id)
			if ackRequired {
				s.pendingAcks.Add(1)
			}
		}
	}
	srv.metrics.pushed(presencev1.PushScope_PUSH_SCOPE_UID, r.Delivered)
}

// SendToUids implements BackendService.SendToUids: one push, numbered in
// each uid's own sequence, with a result per uid.
func (srv *Server) SendToUids(ctx context.Context, req *presencev1.SendToUidsRequest) (*presencev1.SendToUidsResponse, error) {
	uids := req.GetUids()
	if len(uids) == 0 || len(uids) > MaxSendUids {
		return nil, status.Errorf(codes.InvalidArgument, "%d uids; send to 1 to %d uids per call", len(uids), MaxSendUids)
	}
	seen := make(map[string]bool, len(uids))
	for _, uid := range uids {
		if err := validateUid(uid); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "uids: %q: %v", uid, err)
		}
		if seen[uid] {
			return nil, status.Errorf(codes.InvalidArgument, "uids: %q is listed twice; list each uid once", uid)
		}
		seen[uid] = true
	}
	storeFor, err := srv.storeFor(req.GetStoreFor())
	if err != nil {
		return nil, err
	}
	push, err := srv.newPush(req.GetData(), req.GetBinary())
	if err != nil {
		return nil, err
	}
	push.Scope = presencev1.PushScope_PUSH_SCOPE_UID
	send := func() (*presencev1.SendToUidsResponse, error) {
		resp := &presencev1.SendToUidsResponse{PushId: push.Id, SentAt: push.SentAt, Results: make([]*presencev1.UidDelivery, 0, len(uids))}
		results := make([]uidDelivery, len(uids))
		errsAt := make([]error, len(uids))
		if srv.opts.Cluster != nil {
			// Each uid costs network round trips (its log, other nodes):
			// a few at a time, not one after another.
			var wg sync.WaitGroup
			slots := make(chan struct{}, sendUidsParallel)
			for i, uid := range uids {
				slots <- struct{}{}
				wg.Go(func() {
					defer func() { <-slots }()
					results[i], errsAt[i] = srv.pushToUidCluster(ctx, push, uid, storeFor)
				})
			}
			wg.Wait()
		} else {
			for i, uid := range uids {
				results[i], errsAt[i] = srv.pushToUid(push, uid, storeFor)
			}
		}
		var errs []error
		for i, r := range results {
			err := errsAt[i]
			if err != nil && status.Code(err) == codes.Unavailable {
				errs = append(errs, err)
				err = nil
			}
			if err != nil {
				// Only a store can fail, and only for this uid: say so in
				// its result rather than failing the uids already sent.
				r.Offline, r.Error = true, status.Convert(err).Message()
			}
			resp.Delivered += r.Delivered
			resp.Results = append(resp.Results, r.UidDelivery)
		}
		if len(errs) > 0 {
			return nil, status.Errorf(codes.Unavailable, "sent to %d sessions, but some nodes could not be reached: %v", resp.Delivered, errors.Join(errs...))
		}
		return resp, nil
	}
	return idempotent(ctx, srv, "SendToUids", req.GetIdempotencyKey(), req, send, func(r *presencev1.SendToUidsResponse) { r.Duplicate = true })
}

// Broadcast implements BackendService.Broadcast: one push, encoded once,
// queued to every identified session and kept in the broadcast history.
func (srv *Server) Broadcast(ctx context.Context, req *presencev1.BroadcastRequest) (*presencev1.BroadcastResponse, error) {
	push, err := srv.newPush(req.GetData(), req.GetBinary())
	if err != nil {
		return nil, err
	}
	push.Scope = presencev1.PushScope_PUSH_SCOPE_BROADCAST
	send := func() (*presencev1.BroadcastResponse, error) {
		var delivered uint32
		if srv.shared != nil {
			// A cluster numbers broadcasts in its log, so that every node
			// delivers them in one order and a client resumes on any node.
			seq, err := srv.shared.AppendBroadcast(ctx, push)
			if err != nil {
				return nil, status.Errorf(codes.Unavailable, "broadcasts are numbered in the cluster's log (NATS JetStream), which cannot be reached (%v); nothing was sent", err)
			}
			push.Seq = seq
			delivered = srv.broadcastNumbered(ctx, push)
		} else {
			delivered = srv.broadcast(push)
		}
		if srv.opts.Cluster != nil {
			var err error
			if delivered, err = srv.broadcastCluster(ctx, push, delivered); err != nil {
				return nil, err
			}
		}
		return &presencev1.BroadcastResponse{
			PushId: push.Id, Seq: push.Seq, Delivered: delivered, SentAt: push.SentAt, Epoch: push.Epoch,
		}, nil
	}
	return idempotent(ctx, srv, "Broadcast", req.GetIdempotencyKey(), req, send, func(r *presencev1.BroadcastResponse) { r.Duplicate = true })
}

// broadcast numbers push, keeps it, and queues it to every session. It
// holds bcastMu throughout, so sessions joining meanwhile get it by
// replay instead (see join); shard locks are taken one at a time to copy
// the sessions, never while queueing.
func (srv *Server) broadcast(push *presencev1.Push) uint32 {
	srv.bcastMu.Lock()
	defer srv.bcastMu.Unlock()
	push.Seq = srv.bcastSeq + 1
	return srv.deliverBroadcastLocked(push)
}

// deliverBroadcastLocked keeps push (numbered bcastSeq+1) and queues it
// to every session. srv.bcastMu must be held.
func (srv *Server) deliverBroadcastLocked(push *presencev1.Push) uint32 {
	start := time.Now()
	targets := srv.reg.appendAll(srv.bcastTargets[:0])
	srv.bcastSeq = push.Seq
	push.Epoch = srv.epoch
	f := pushFrame(push)
	srv.bcastHist.add(push, f.Size(), time.Now(), time.Time{}, srv.hist)
	var delivered uint32
	for _, s := range targets {
		if s.enqueue(f) {
			delivered++
		}
	}
	clear(targets)
	srv.bcastTargets = targets[:0]
	srv.metrics.broadcastDone(start, delivered)
	return delivered
}

// broadcastNumbered delivers a broadcast the cluster's log numbered, in
// the log's order: one this node already has (it filled a gap with it) is
// not queued again, and a gap before it is filled from the log first
// (broadcasts through two nodes at once can arrive in either order).
func (srv *Server) broadcastNumbered(ctx context.Context, push *presencev1.Push) uint32 {
	for {
		srv.bcastMu.Lock()
		switch {
		case push.Seq <= srv.bcastSeq:
			// Delivered here already, to the sessions there are.
			_, n := srv.reg.counts()
			srv.bcastMu.Unlock()
			return uint32(n)
		case push.Seq == srv.bcastSeq+1:
			d := srv.deliverBroadcastLocked(push)
			srv.bcastMu.Unlock()
			return d
		}
		from := srv.bcastSeq + 1
		srv.bcastMu.Unlock()
		srv.fillBroadcasts(ctx, from, push.Seq-1)
	}
}

// fillBroadcasts delivers the broadcasts from..to of the cluster's log
// that this node missed. Those it cannot read again (gone from the log,
// or the log unreachable) are missed for good: every session here is
// ended with Goodbye SLOW_CONSUMER, so that its client resumes and is
// told LOST, never left with a silent gap.
func (srv *Server) fillBroadcasts(ctx context.Context, from, to uint64) {
	missed, err := srv.shared.ReadBroadcasts(ctx, from, to)
	srv.bcastMu.Lock()
	defer srv.bcastMu.Unlock()
	for _, m := range missed {
		if m.GetSeq() == srv.bcastSeq+1 {
			srv.deliverBroadcastLocked(m)
		}
	}
	if srv.bcastSeq >= to {
		return
	}
	srv.log.Warn("broadcasts missed for good: they are gone from the cluster's log, or it cannot be read; this node's sessions are ended so that their clients resume and learn it",
		"from", srv.bcastSeq+1, "to", to, "err", err)
	srv.bcastHist.skip(to, srv.hist.budget)
	srv.bcastSeq = to
	srv.reg.each(func(s *session) {
		s.end(endf(ReasonSlowConsumer, "this node missed broadcasts %d to %d and cannot get them again; reconnect with resume (it will say LOST)", from, to))
	})
}

// storeFor validates SendToUidRequest.store_for.
func (srv *Server) storeFor(d *durationpb.Duration) (time.Duration, error) {
	return optionalDuration("store_for", d, srv.opts.StoreMax)
}

// optionalDuration validates an optional positive duration up to max.
func optionalDuration(name string, d *durationpb.Duration, max time.Duration) (time.Duration, error) {
	if d == nil {
		return 0, nil
	}
	if err := d.CheckValid(); err != nil {
		return 0, status.Errorf(codes.InvalidArgument, "%s: %v", name, err)
	}
	v := d.AsDuration()
	if v <= 0 || v > max {
		return 0, status.Errorf(codes.InvalidArgument, "%s is %v; it must be more than 0 and at most %v", name, v, max)
	}
	return v, nil
}

// newPush validates a payload and returns a Push with id and time set.
func (srv *Server) newPush(data *structpb.Value, bin *presencev1.BinaryPayload) (*presencev1.Push, error) {
	p := &presencev1.Push{Id: newID(), SentAt: timestamppb.New(time.Now())}
	var size int
	switch {
	case data != nil:
		p.Payload = &presencev1.Push_Data{Data: data}
		size = proto.Size(data)
	case bin != nil:
		p.Payload = &presencev1.Push_Binary{Binary: bin}
		size = len(bin.GetData())
	default:
		return nil, status.Error(codes.InvalidArgument, `payload missing: set "data" (any JSON value) or "binary"`)
	}
	if size > srv.opts.MaxPayloadBytes {
		return nil, status.Errorf(codes.InvalidArgument, "payload is %d bytes; the limit is %d bytes", size, srv.opts.MaxPayloadBytes)
	}
	return p, nil
}

// pushCopy is a new Push with tmpl's content and none of its numbering
// (seq, epoch), for a template sent to several uids or sequences. The
// payload is shared: pushes are never modified once built.
func pushCopy(tmpl *presencev1.Push) *presencev1.Push {
	return &presencev1.Push{Id: tmpl.Id, Scope: tmpl.Scope, SentAt: tmpl.SentAt, Payload: tmpl.Payload, AckRequired: tmpl.AckRequired, Replay: tmpl.Replay}
}

func pushFrame(p *presencev1.Push) *Frame {
	return newSharedFrame(&presencev1.ConnectResponse{Frame: &presencev1.ConnectResponse_Push{Push: p}})
}
