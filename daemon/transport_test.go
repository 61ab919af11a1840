package daemon

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
)

// TestLiteTransport runs the daemon's end-to-end tests again with the lite
// transport behind the gRPC listener (the default run uses grpc-go; CI
// also runs the whole package and the client's with
// PRESENCE_TEST_TRANSPORT=lite): sessions, REST and gRPC pushes, health,
// drain on shutdown, API keys through its interceptors, TLS, bad input.
func TestLiteTransport(t *testing.T) {
	if testTransport == TransportLite {
		t.Skip("the whole package runs on the lite transport")
	}
	testTransport = TransportLite
	defer func() { testTransport = "" }()
	for _, tc := range []struct {
		name string
		test func(*testing.T)
	}{
		{"RESTPushes", TestRESTPushes},
		{"RESTErrors", TestRESTErrors},
		{"ShutdownDrains", TestShutdownDrains},
		{"BackendNeedsAPIKey", TestBackendNeedsAPIKey},
		{"TLS", TestTLS},
		{"BadInput", TestBadInput},
		{"RESTPresence", TestRESTPresence},
		{"RESTWatchStreamsNDJSON", TestRESTWatchStreamsNDJSON},
		{"MetricsOverHTTP", TestMetricsOverHTTP},
		{"Reflection", testReflection},
		{"UndecodableFrame", testUndecodableFrame},
	} {
		t.Run(tc.name, tc.test)
	}
}

// testReflection lists the services over reflection, as grpcurl does.
func testReflection(t *testing.T) {
	d := start(t)
	if _, ok := d.public.gs.(*liteServer); !ok {
		t.Fatalf("the gRPC listener is served by %T, not the lite transport", d.public.gs)
	}
	stream, err := grpc_reflection_v1.NewServerReflectionClient(dial(t, d)).ServerReflectionInfo(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&grpc_reflection_v1.ServerReflectionRequest{
		MessageRequest: &grpc_reflection_v1.ServerReflectionRequest_ListServices{},
	}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, s := range resp.GetListServicesResponse().GetService() {
		got[s.GetName()] = true
	}
	for _, want := range []string{"presence.v1.PresenceService", "presence.v1.BackendService", "grpc.health.v1.Health"} {
		if !got[want] {
			t.Errorf("reflection lists %v; %s missing", got, want)
		}
	}
}

// rawCodec sends bytes as they are, to put a frame on the wire that is
// not a ConnectRequest.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return v.([]byte), nil }
func (rawCodec) Unmarshal(b []byte, v any) error {
	*(v.(*[]byte)) = append([]byte(nil), b...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

var _ encoding.Codec = rawCodec{}

// testUndecodableFrame sends bytes that are not a ConnectRequest: the
// stream ends with InvalidArgument saying so, and the server goes on.
func testUndecodableFrame(t *testing.T) {
	d := start(t)
	cc := dial(t, d)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	stream, err := cc.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true, ServerStreams: true},
		presencev1.PresenceService_Connect_FullMethodName, grpc.ForceCodec(rawCodec{}))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.SendMsg([]byte{0xff, 0xff, 0xff}); err != nil {
		t.Fatal(err)
	}
	var b []byte
	err = stream.RecvMsg(&b)
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("stream ended with %v; want InvalidArgument", err)
	}
	connect(t, cc, "after") // the server and the connection still serve
}
