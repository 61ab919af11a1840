package daemon

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
)

// TestGRPCTransport runs the daemon's end-to-end tests again with
// grpc-go behind the gRPC listener (--transport grpc; the rest of the
// package runs on the default, lite; CI also runs the whole package and
// the client's with PRESENCE_TEST_TRANSPORT=grpc): sessions, REST and gRPC
// pushes, health, drain on shutdown, API keys through the interceptors,
// TLS, bad input, presence, watch, metrics, reflection.
func TestGRPCTransport(t *testing.T) {
	if testTransport != "" {
		t.Skipf("the whole package runs on the %s transport", testTransport)
	}
	testTransport = TransportGRPC
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
		{"Reflection", TestReflection},
		{"UndecodableFrame", TestUndecodableFrame},
	} {
		t.Run(tc.name, tc.test)
	}
}

// TestReflection lists the services over reflection, as grpcurl does,
// on the transport the test asks for.
func TestReflection(t *testing.T) {
	d := start(t)
	if _, lite := d.public.gs.(*liteServer); lite != (testTransport != TransportGRPC) {
		t.Fatalf("the gRPC listener is served by %T; PRESENCE_TEST_TRANSPORT is %q", d.public.gs, testTransport)
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

// TestUndecodableFrame sends bytes that are not a ConnectRequest: the
// stream ends with InvalidArgument saying so (grpc-go: Internal, from its
// own decoding), and the server goes on.
func TestUndecodableFrame(t *testing.T) {
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
	want := codes.InvalidArgument
	if testTransport == TransportGRPC {
		want = codes.Internal
	}
	if status.Code(err) != want {
		t.Fatalf("stream ended with %v; want %v", err, want)
	}
	connect(t, cc, "after") // the server and the connection still serve
}

// TestTransportChecks: an unknown transport, and keepalive settings the
// lite transport does not have, fail Start instead of being ignored.
func TestTransportChecks(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"unknown transport", func(c *Config) { c.Transport = "quic" }, `transport "quic"`},
		{"lite with MaxConnectionAge", func(c *Config) {
			c.Transport = TransportLite
			c.Keepalive = keepalive.ServerParameters{Time: time.Minute, MaxConnectionAge: time.Hour}
		}, "MaxConnectionAge"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			tc.mod(&cfg)
			d, err := Start(cfg)
			if err == nil {
				d.Shutdown(context.Background())
				t.Fatal("Start succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Start: %v; want it to name %s", err, tc.want)
			}
		})
	}
}
