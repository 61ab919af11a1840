package daemon

import (
	"context"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
)

// inProcessBackend is the REST facade's BackendServiceClient. Its unary
// methods call the backend API's implementation directly, through the
// same unary interceptors the backend gRPC server runs (the API key
// check and its counter), with the request's metadata as incoming
// metadata, as a gRPC call would have it. A REST push so skips a gRPC
// client and server: protobuf encoding both ways, HTTP/2 framing, and
// four goroutine hand-offs, each of which waits behind whatever else the
// one CPU has queued. WatchPresence, a server stream, still goes through
// the embedded gRPC client (over the in-memory listener).
type inProcessBackend struct {
	presencev1.BackendServiceClient                                 // WatchPresence
	srv                             presencev1.BackendServiceServer // everything else
	unary                           grpc.UnaryServerInterceptor     // nil: none
}

var backendMethodPrefix = "/" + presencev1.BackendService_ServiceDesc.ServiceName + "/"

// callInProcess runs h as the gRPC server would run the unary method
// named method, and fills the grpc.Header and grpc.Trailer call options
// (the gateway turns them into HTTP headers) from what h set.
func callInProcess[Req, Resp any](ctx context.Context, b *inProcessBackend, method string, req Req, h func(context.Context, Req) (Resp, error), opts []grpc.CallOption) (Resp, error) {
	md, _ := metadata.FromOutgoingContext(ctx)
	ctx = metadata.NewIncomingContext(ctx, md)
	var sts runtime.ServerTransportStream
	ctx = grpc.NewContextWithServerTransportStream(ctx, &sts)
	var resp Resp
	var err error
	if b.unary == nil {
		resp, err = h(ctx, req)
	} else {
		var r any
		r, err = b.unary(ctx, req, &grpc.UnaryServerInfo{Server: b.srv, FullMethod: backendMethodPrefix + method},
			func(ctx context.Context, req any) (any, error) { return h(ctx, req.(Req)) })
		if r != nil {
			resp = r.(Resp)
		}
	}
	for _, o := range opts {
		switch o := o.(type) {
		case grpc.HeaderCallOption:
			joinMD(o.HeaderAddr, sts.Header())
		case grpc.TrailerCallOption:
			joinMD(o.TrailerAddr, sts.Trailer())
		}
	}
	return resp, err
}

// joinMD adds md to *dst, allocating only when both have something.
func joinMD(dst *metadata.MD, md metadata.MD) {
	switch {
	case len(md) == 0:
	case len(*dst) == 0:
		*dst = md
	default:
		*dst = metadata.Join(*dst, md)
	}
}

func (b *inProcessBackend) SendToUid(ctx context.Context, in *presencev1.SendToUidRequest, opts ...grpc.CallOption) (*presencev1.SendToUidResponse, error) {
	return callInProcess(ctx, b, "SendToUid", in, b.srv.SendToUid, opts)
}

func (b *inProcessBackend) Broadcast(ctx context.Context, in *presencev1.BroadcastRequest, opts ...grpc.CallOption) (*presencev1.BroadcastResponse, error) {
	return callInProcess(ctx, b, "Broadcast", in, b.srv.Broadcast, opts)
}

func (b *inProcessBackend) SendToUids(ctx context.Context, in *presencev1.SendToUidsRequest, opts ...grpc.CallOption) (*presencev1.SendToUidsResponse, error) {
	return callInProcess(ctx, b, "SendToUids", in, b.srv.SendToUids, opts)
}

func (b *inProcessBackend) GetPresence(ctx context.Context, in *presencev1.GetPresenceRequest, opts ...grpc.CallOption) (*presencev1.GetPresenceResponse, error) {
	return callInProcess(ctx, b, "GetPresence", in, b.srv.GetPresence, opts)
}

func (b *inProcessBackend) BatchGetPresence(ctx context.Context, in *presencev1.BatchGetPresenceRequest, opts ...grpc.CallOption) (*presencev1.BatchGetPresenceResponse, error) {
	return callInProcess(ctx, b, "BatchGetPresence", in, b.srv.BatchGetPresence, opts)
}

func (b *inProcessBackend) ListOnline(ctx context.Context, in *presencev1.ListOnlineRequest, opts ...grpc.CallOption) (*presencev1.ListOnlineResponse, error) {
	return callInProcess(ctx, b, "ListOnline", in, b.srv.ListOnline, opts)
}

func (b *inProcessBackend) GetCounts(ctx context.Context, in *presencev1.GetCountsRequest, opts ...grpc.CallOption) (*presencev1.GetCountsResponse, error) {
	return callInProcess(ctx, b, "GetCounts", in, b.srv.GetCounts, opts)
}

func (b *inProcessBackend) Kick(ctx context.Context, in *presencev1.KickRequest, opts ...grpc.CallOption) (*presencev1.KickResponse, error) {
	return callInProcess(ctx, b, "Kick", in, b.srv.Kick, opts)
}
