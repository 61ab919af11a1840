package client

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/presence-dev/presence/daemon"
	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
	"github.com/presence-dev/presence/server"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// waitTimeout bounds every wait in these tests.
const waitTimeout = 5 * time.Second

// quiet discards daemon logs.
var quiet = slog.New(slog.DiscardHandler)

// fastServer is server.Options with short, real heartbeat timers.
func fastServer() server.Options {
	return server.Options{
		HeartbeatInterval:       200 * time.Millisecond,
		HeartbeatTimeout:        600 * time.Millisecond,
		ReapInterval:            100 * time.Millisecond,
		GoodbyeTimeout:          500 * time.Millisecond,
		ShutdownReconnectMin:    300 * time.Millisecond,
		ShutdownReconnectJitter: time.Nanosecond,
		Logger:                  quiet,
	}
}

// fastBackoff keeps retries quick.
var fastBackoff = Backoff{Min: 20 * time.Millisecond, Max: 200 * time.Millisecond}

// testTransport is the transport startDaemon's daemons serve gRPC with:
// PRESENCE_TEST_TRANSPORT ("grpc" or "lite"; empty: the default). CI runs
// this package once with each.
var testTransport = os.Getenv("PRESENCE_TEST_TRANSPORT")

// startDaemon starts a real presence daemon on addr (gRPC only); cleanup
// shuts it down (Shutdown is idempotent, so a test may do it first).
func startDaemon(t *testing.T, addr string, opts server.Options) *daemon.Daemon {
	t.Helper()
	d, err := daemon.Start(daemon.Config{GRPCAddr: addr, HTTPAddr: "off", Transport: testTransport, Server: opts, Logger: quiet})
	if err != nil {
		t.Fatalf("daemon.Start(%s): %v", addr, err)
	}
	t.Cleanup(func() { shutdown(t, d) })
	return d
}

// shutdown stops d within waitTimeout.
func shutdown(t *testing.T, d *daemon.Daemon) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := d.Shutdown(ctx); err != nil {
		t.Errorf("daemon Shutdown: %v", err)
	}
}

// backend returns a BackendService client for addr; cleanup closes it.
func backend(t *testing.T, addr string) presencev1.BackendServiceClient {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("grpc.NewClient(%s): %v", addr, err)
	}
	t.Cleanup(func() { cc.Close() })
	return presencev1.NewBackendServiceClient(cc)
}

// sendText pushes text to uid and returns the response.
func sendText(t *testing.T, b presencev1.BackendServiceClient, uid, text string) *presencev1.SendToUidResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	resp, err := b.SendToUid(ctx, &presencev1.SendToUidRequest{
		Uid: uid, Payload: &presencev1.SendToUidRequest_Data{Data: structpb.NewStringValue(text)},
	})
	if err != nil {
		t.Fatalf("SendToUid(%q, %q): %v", uid, text, err)
	}
	return resp
}

// recorder collects what a client reports, for tests to wait on.
type recorder struct {
	mu      sync.Mutex
	states  []StateChange // guarded by mu
	pushes  []*Push       // guarded by mu
	changed chan struct{} // signalled (without blocking) on every append

	// Owned by the test goroutine: how far next* have read.
	stateAt, pushAt int
}

func newRecorder() *recorder { return &recorder{changed: make(chan struct{}, 1)} }

func (r *recorder) onState(s StateChange) {
	r.mu.Lock()
	r.states = append(r.states, s)
	r.mu.Unlock()
	r.signal()
}

func (r *recorder) onPush(p *Push) {
	r.mu.Lock()
	r.pushes = append(r.pushes, p)
	r.mu.Unlock()
	r.signal()
}

func (r *recorder) signal() {
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

// waitFor waits until cond (called under r.mu) is true, or fails the test.
func (r *recorder) waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		ok := cond()
		r.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-r.changed:
		case <-deadline.C:
			t.Fatalf("no %s within %v; states so far: %v", what, waitTimeout, r.allStates())
		}
	}
}

// nextState returns the next state change, waiting for it.
func (r *recorder) nextState(t *testing.T) StateChange {
	t.Helper()
	var s StateChange
	r.waitFor(t, "state change", func() bool {
		if r.stateAt < len(r.states) {
			s = r.states[r.stateAt]
			r.stateAt++
			return true
		}
		return false
	})
	return s
}

// skipTo returns the next state change in state want, waiting for it and
// skipping others.
func (r *recorder) skipTo(t *testing.T, want State) StateChange {
	t.Helper()
	for {
		if s := r.nextState(t); s.State == want {
			return s
		}
	}
}

// nextPush returns the next push, waiting for it.
func (r *recorder) nextPush(t *testing.T) *Push {
	t.Helper()
	var p *Push
	r.waitFor(t, "push", func() bool {
		if r.pushAt < len(r.pushes) {
			p = r.pushes[r.pushAt]
			r.pushAt++
			return true
		}
		return false
	})
	return p
}

// allStates is a copy of every state change so far.
func (r *recorder) allStates() []StateChange {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]StateChange(nil), r.states...)
}

// startClient starts a client reporting to a new recorder; cleanup closes
// it.
func startClient(t *testing.T, cfg Config) (*Client, *recorder) {
	t.Helper()
	r := newRecorder()
	cfg.OnState, cfg.OnPush = r.onState, r.onPush
	if cfg.Backoff == (Backoff{}) {
		cfg.Backoff = fastBackoff
	}
	if cfg.HandshakeTimeout == 0 {
		cfg.HandshakeTimeout = 2 * time.Second
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(c.Close)
	return c, r
}

// connected waits for the next StateConnected and returns its session id.
func connected(t *testing.T, r *recorder) string {
	t.Helper()
	s := r.skipTo(t, StateConnected)
	if s.SessionID == "" {
		t.Fatalf("StateConnected has no session id")
	}
	return s.SessionID
}

// fakeServer is a scripted PresenceService on 127.0.0.1, for endings the
// real server cannot produce yet (REPLACED, KICKED) and for checking what
// the client sends.
type fakeServer struct {
	presencev1.UnimplementedPresenceServiceServer
	addr    string
	calls   atomic.Int32 // Connect calls so far
	script  func(call int, id *presencev1.Identify, stream presencev1.PresenceService_ConnectServer) error
	mu      sync.Mutex
	idents  []*presencev1.Identify // guarded by mu
	headers []metadata.MD          // guarded by mu
}

// startFake serves script on 127.0.0.1:0. Each Connect reads Identify,
// answers Identified (heartbeat 200 ms / 600 ms) and runs script with the
// call's number (from 1); cleanup stops the server.
func startFake(t *testing.T, script func(call int, id *presencev1.Identify, stream presencev1.PresenceService_ConnectServer) error) *fakeServer {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	f := &fakeServer{addr: lis.Addr().String(), script: script}
	gs := grpc.NewServer()
	presencev1.RegisterPresenceServiceServer(gs, f)
	served := make(chan struct{})
	go func() { defer close(served); gs.Serve(lis) }()
	t.Cleanup(func() { gs.Stop(); <-served })
	return f
}

// Connect implements PresenceServiceServer.
func (f *fakeServer) Connect(stream presencev1.PresenceService_ConnectServer) error {
	call := int(f.calls.Add(1))
	req, err := stream.Recv()
	if err != nil {
		return err
	}
	md, _ := metadata.FromIncomingContext(stream.Context())
	f.mu.Lock()
	f.idents = append(f.idents, req.GetIdentify())
	f.headers = append(f.headers, md)
	f.mu.Unlock()
	err = stream.Send(&presencev1.ConnectResponse{Frame: &presencev1.ConnectResponse_Identified{Identified: &presencev1.Identified{
		SessionId:         fmt.Sprintf("fake-%d", call),
		Uid:               cmp.Or(req.GetIdentify().GetUid(), "sub-of-"+req.GetIdentify().GetToken()),
		HeartbeatInterval: durationpb.New(200 * time.Millisecond),
		HeartbeatTimeout:  durationpb.New(600 * time.Millisecond),
	}}})
	if err != nil {
		return err
	}
	return f.script(call, req.GetIdentify(), stream)
}

// identifies returns every Identify the server got, in order.
func (f *fakeServer) identifies() []*presencev1.Identify {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*presencev1.Identify(nil), f.idents...)
}

// untilClientGoes keeps a fake session open, answering nothing, until the
// client ends the stream. Any Ping keeps coming in the background.
func untilClientGoes(stream presencev1.PresenceService_ConnectServer) error {
	for {
		if _, err := stream.Recv(); err != nil {
			return nil
		}
	}
}
