package lite

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"
	rpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func TestUnaryHealth(t *testing.T) {
	s := NewServer(Options{})
	hs := health.NewServer()
	healthpb.RegisterHealthServer(s, hs)
	cc := dial(t, startServer(t, s))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	hc := healthpb.NewHealthClient(cc)

	resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("Check = %v, %v; want SERVING", resp, err)
	}
	hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	resp, err = hc.Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || resp.Status != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("Check = %v, %v; want NOT_SERVING", resp, err)
	}
	_, err = hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "nope"})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("Check(nope) = %v; want NotFound", err)
	}

	err = cc.Invoke(ctx, "/made.up.Service/Method", &emptypb.Empty{}, &emptypb.Empty{})
	if st := status.Convert(err); st.Code() != codes.Unimplemented || st.Message() != "unknown service made.up.Service" {
		t.Fatalf("unknown service: %v", err)
	}
	err = cc.Invoke(ctx, "/grpc.health.v1.Health/Nope", &emptypb.Empty{}, &emptypb.Empty{})
	if st := status.Convert(err); st.Code() != codes.Unimplemented || st.Message() != "unknown method Nope for service grpc.health.v1.Health" {
		t.Fatalf("unknown method: %v", err)
	}
}

// hdrDesc is a hand-made service whose unary handler sets a header and a
// trailer through the context, and whose server-streaming method uses the
// grpc.ServerStream API.
var hdrDesc = grpc.ServiceDesc{
	ServiceName: "lite.test.Hdr",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Get",
		Handler: func(srv any, ctx context.Context, dec func(any) error, ic grpc.UnaryServerInterceptor) (any, error) {
			in := new(wrapperspb.StringValue)
			if err := dec(in); err != nil {
				return nil, err
			}
			h := func(ctx context.Context, req any) (any, error) {
				if m, _ := grpc.Method(ctx); m != "/lite.test.Hdr/Get" {
					return nil, status.Errorf(codes.Internal, "grpc.Method = %q", m)
				}
				md, _ := metadata.FromIncomingContext(ctx)
				if err := grpc.SetHeader(ctx, metadata.Pairs("h1", "v1", "echo", firstOf(md["x-in"]))); err != nil {
					return nil, err
				}
				if err := grpc.SetTrailer(ctx, metadata.Pairs("t1", "v2", "t-bin", "\x00\x01")); err != nil {
					return nil, err
				}
				v := req.(*wrapperspb.StringValue).Value
				if v == "fail" {
					return nil, status.Error(codes.FailedPrecondition, "failed as asked")
				}
				return wrapperspb.String("re:" + v), nil
			}
			if ic == nil {
				return h(ctx, in)
			}
			return ic(ctx, in, &grpc.UnaryServerInfo{Server: srv, FullMethod: "/lite.test.Hdr/Get"}, h)
		},
	}},
	Streams: []grpc.StreamDesc{{
		StreamName:    "Count",
		ServerStreams: true,
		Handler: func(srv any, ss grpc.ServerStream) error {
			in := new(wrapperspb.Int32Value)
			if err := ss.RecvMsg(in); err != nil {
				return err
			}
			if err := ss.SendHeader(metadata.Pairs("sh", "1")); err != nil {
				return err
			}
			for i := range in.Value {
				if err := ss.SendMsg(wrapperspb.Int32(i)); err != nil {
					return err
				}
			}
			ss.SetTrailer(metadata.Pairs("st", "2"))
			return nil
		},
	}},
}

func firstOf(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

func TestUnaryHeadersTrailers(t *testing.T) {
	var intercepted, streamIntercepted int
	s := NewServer(Options{
		UnaryInterceptor: func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			intercepted++
			return h(ctx, req)
		},
		StreamInterceptor: func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			if info.FullMethod != "/lite.test.Hdr/Count" || info.IsClientStream || !info.IsServerStream {
				t.Errorf("StreamServerInfo = %+v", info)
			}
			streamIntercepted++
			return h(srv, ss)
		},
	})
	s.RegisterService(&hdrDesc, struct{}{})
	cc := dial(t, startServer(t, s))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "x-in", "hello")

	var hdr, trl metadata.MD
	out := new(wrapperspb.StringValue)
	if err := cc.Invoke(ctx, "/lite.test.Hdr/Get", wrapperspb.String("x"), out, grpc.Header(&hdr), grpc.Trailer(&trl)); err != nil {
		t.Fatal(err)
	}
	if out.Value != "re:x" {
		t.Errorf("reply %q", out.Value)
	}
	if firstOf(hdr["h1"]) != "v1" || firstOf(hdr["echo"]) != "hello" {
		t.Errorf("header = %v", hdr)
	}
	if firstOf(trl["t1"]) != "v2" || firstOf(trl["t-bin"]) != "\x00\x01" {
		t.Errorf("trailer = %v", trl)
	}
	if intercepted != 1 {
		t.Errorf("unary interceptor ran %d times", intercepted)
	}

	// An error still carries the trailer; headers were never sent.
	hdr, trl = nil, nil
	err := cc.Invoke(ctx, "/lite.test.Hdr/Get", wrapperspb.String("fail"), out, grpc.Header(&hdr), grpc.Trailer(&trl))
	if st := status.Convert(err); st.Code() != codes.FailedPrecondition || st.Message() != "failed as asked" {
		t.Errorf("err = %v", err)
	}
	if firstOf(trl["t1"]) != "v2" || firstOf(hdr["h1"]) != "v1" {
		t.Errorf("after error: header %v trailer %v", hdr, trl)
	}

	// Server streaming through grpc.ServerStream.
	cs, err := cc.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, "/lite.test.Hdr/Count")
	if err != nil {
		t.Fatal(err)
	}
	if err := cs.SendMsg(wrapperspb.Int32(5)); err != nil {
		t.Fatal(err)
	}
	cs.CloseSend()
	h, err := cs.Header()
	if err != nil || firstOf(h["sh"]) != "1" {
		t.Fatalf("Header = %v, %v", h, err)
	}
	for i := range int32(5) {
		m := new(wrapperspb.Int32Value)
		if err := cs.RecvMsg(m); err != nil || m.Value != i {
			t.Fatalf("RecvMsg = %v, %v; want %d", m, err, i)
		}
	}
	if err := cs.RecvMsg(new(wrapperspb.Int32Value)); err == nil || err.Error() != "EOF" {
		t.Fatalf("final RecvMsg = %v", err)
	}
	if firstOf(cs.Trailer()["st"]) != "2" {
		t.Errorf("stream trailer = %v", cs.Trailer())
	}
	if streamIntercepted != 1 {
		t.Errorf("stream interceptor ran %d times", streamIntercepted)
	}
}

func TestServerStreamingWatch(t *testing.T) {
	s := NewServer(Options{})
	hs := health.NewServer()
	healthpb.RegisterHealthServer(s, hs)
	cc := dial(t, startServer(t, s))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w, err := healthpb.NewHealthClient(cc).Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	r, err := w.Recv()
	if err != nil || r.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("first Watch = %v, %v", r, err)
	}
	hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	r, err = w.Recv()
	if err != nil || r.Status != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("second Watch = %v, %v", r, err)
	}
	cancel()
	if _, err := w.Recv(); status.Code(err) != codes.Canceled {
		t.Fatalf("after cancel: %v", err)
	}
}

func TestReflectionBidi(t *testing.T) {
	s := NewServer(Options{})
	healthpb.RegisterHealthServer(s, health.NewServer())
	reflection.Register(s)
	cc := dial(t, startServer(t, s))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rs, err := rpb.NewServerReflectionClient(cc).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 { // the same bidi stream, several round trips
		if err := rs.Send(&rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_ListServices{}}); err != nil {
			t.Fatal(err)
		}
		resp, err := rs.Recv()
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, sv := range resp.GetListServicesResponse().GetService() {
			names = append(names, sv.Name)
		}
		slices.Sort(names)
		want := []string{"grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"}
		if !slices.Equal(names, want) {
			t.Fatalf("services = %v, want %v", names, want)
		}
	}
	if err := rs.Send(&rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: "grpc.health.v1.Health"}}); err != nil {
		t.Fatal(err)
	}
	resp, err := rs.Recv()
	if err != nil || len(resp.GetFileDescriptorResponse().GetFileDescriptorProto()) == 0 {
		t.Fatalf("FileContainingSymbol = %v, %v", resp, err)
	}
	rs.CloseSend()
	if _, err := rs.Recv(); err == nil || err.Error() != "EOF" {
		t.Fatalf("after CloseSend: %v", err)
	}
}

// A RegisterService bidi stream (grpc.ServerStream path) carrying more than
// a window's worth of messages in both directions, read slowly.
func TestGoroutineStreamFlowControl(t *testing.T) {
	s := NewServer(Options{})
	s.RegisterService(&echoDesc, struct{}{})
	cc := dial(t, startServer(t, s), grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cs := newChat(t, ctx, cc)
	const n = 300
	big := strings.Repeat("q", 60<<10)
	errc := make(chan error, 1)
	go func() {
		for i := range n {
			if err := cs.SendMsg(wrapperspb.String(fmt.Sprint(i, big))); err != nil {
				errc <- err
				return
			}
		}
		errc <- cs.CloseSend()
	}()
	time.Sleep(200 * time.Millisecond) // let the server's queue and windows fill up
	for i := range n {
		if got := recvString(t, cs); got != fmt.Sprint(i, big) {
			t.Fatalf("message %d wrong (len %d)", i, len(got))
		}
	}
	if err := cs.RecvMsg(new(wrapperspb.StringValue)); err != io.EOF {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}
