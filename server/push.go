package server

import (
	"context"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
)

// SendToUid implements BackendService.SendToUid: it queues one push to every
// live session of the uid, in the uid's seq order, and reports how many
// sessions took it.
func (srv *Server) SendToUid(ctx context.Context, req *presencev1.SendToUidRequest) (*presencev1.SendToUidResponse, error) {
	if err := validateUid(req.GetUid()); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "uid: %v", err)
	}
	push, err := srv.newPush(req.GetData(), req.GetBinary())
	if err != nil {
		return nil, err
	}
	push.Scope = presencev1.PushScope_PUSH_SCOPE_UID
	var delivered uint32
	found := false
	srv.reg.withUid(req.GetUid(), func(e *uidEntry) {
		if e == nil {
			return
		}
		found = true
		e.seq++
		push.Seq, push.Epoch = e.seq, e.epoch
		f := pushFrame(push)
		for _, s := range e.sessions {
			if s.enqueue(f) {
				delivered++
			}
		}
	})
	if !found {
		return nil, status.Errorf(codes.NotFound, "uid %q has no live session; nothing was sent", req.GetUid())
	}
	return &presencev1.SendToUidResponse{
		PushId: push.Id, Seq: push.Seq, Delivered: delivered, SentAt: push.SentAt, Epoch: push.Epoch,
	}, nil
}

// Broadcast implements BackendService.Broadcast: one push, encoded once,
// queued to every identified session. The registry is copied shard by
// shard; no registry lock is held while queueing.
func (srv *Server) Broadcast(ctx context.Context, req *presencev1.BroadcastRequest) (*presencev1.BroadcastResponse, error) {
	push, err := srv.newPush(req.GetData(), req.GetBinary())
	if err != nil {
		return nil, err
	}
	push.Scope = presencev1.PushScope_PUSH_SCOPE_BROADCAST
	push.Epoch = srv.epoch
	delivered := srv.broadcast(push)
	return &presencev1.BroadcastResponse{
		PushId: push.Id, Seq: push.Seq, Delivered: delivered, SentAt: push.SentAt, Epoch: push.Epoch,
	}, nil
}

// broadcast numbers push and queues it to every session.
func (srv *Server) broadcast(push *presencev1.Push) uint32 {
	targets := srv.reg.appendAll(make([]*session, 0, 64))
	srv.bcastMu.Lock()
	defer srv.bcastMu.Unlock()
	srv.bcastSeq++
	push.Seq = srv.bcastSeq
	f := pushFrame(push)
	var delivered uint32
	for _, s := range targets {
		if s.enqueue(f) {
			delivered++
		}
	}
	return delivered
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

func pushFrame(p *presencev1.Push) *Frame {
	return newSharedFrame(&presencev1.ConnectResponse{Frame: &presencev1.ConnectResponse_Push{Push: p}})
}
