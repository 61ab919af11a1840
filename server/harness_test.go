package server

import (
	"context"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fastOptions are test options: heartbeats long enough that a busy
// machine never evicts a test client that does not ping (see
// shortHeartbeat for the reaper's tests).
func fastOptions() Options {
	return Options{
		HeartbeatInterval:       10 * time.Second,
		HeartbeatTimeout:        30 * time.Second,
		ReapInterval:            100 * time.Millisecond,
		IdentifyTimeout:         2 * time.Second,
		GoodbyeTimeout:          500 * time.Millisecond,
		ShutdownReconnectMin:    time.Second,
		ShutdownReconnectJitter: 2 * time.Second,
		Logger:                  slog.New(slog.DiscardHandler),
	}
}

// shortHeartbeat sets short, real heartbeat timers for the reaper's tests.
func shortHeartbeat(o Options) Options {
	o.HeartbeatInterval = 100 * time.Millisecond
	o.HeartbeatTimeout = 600 * time.Millisecond
	o.ReapInterval = 100 * time.Millisecond
	return o
}

// testServer is a real gRPC server on 127.0.0.1 with the presence services.
type testServer struct {
	srv  *Server
	gs   *grpc.Server
	addr string
}

// startServer starts srv on a real loopback listener; cleanup shuts it down.
func startServer(t *testing.T, opts Options, gopts ...grpc.ServerOption) *testServer {
	t.Helper()
	srv, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	gs := grpc.NewServer(gopts...)
	srv.Register(gs)
	served := make(chan struct{})
	go func() { defer close(served); gs.Serve(lis) }()
	ts := &testServer{srv: srv, gs: gs, addr: lis.Addr().String()}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		gs.Stop()
		<-served
	})
	return ts
}

// dial returns a client connection to ts; cleanup closes it.
func (ts *testServer) dial(t *testing.T, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	opts = append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)
	cc, err := grpc.NewClient(ts.addr, opts...)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func (ts *testServer) backend(t *testing.T) presencev1.BackendServiceClient {
	return presencev1.NewBackendServiceClient(ts.dial(t))
}

// testClient is one Connect stream whose frames are read by a goroutine
// into a channel, so tests can wait with a timeout.
type testClient struct {
	t      *testing.T
	stream presencev1.PresenceService_ConnectClient
	cancel context.CancelFunc
	frames chan *presencev1.ConnectResponse
	err    chan error // the stream's final status; io.EOF means OK
}

// open opens a Connect stream on cc and starts reading it (unless
// noRead, for a client that never reads).
func open(t *testing.T, cc *grpc.ClientConn, noRead bool) *testClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := presencev1.NewPresenceServiceClient(cc).Connect(ctx)
	if err != nil {
		cancel()
		t.Fatalf("Connect: %v", err)
	}
	c := &testClient{t: t, stream: stream, cancel: cancel,
		frames: make(chan *presencev1.ConnectResponse, 1024), err: make(chan error, 1)}
	if !noRead {
		c.startReading()
	}
	t.Cleanup(func() {
		cancel()
		if noRead {
			return
		}
		select {
		case <-c.err:
		case <-time.After(5 * time.Second):
			t.Errorf("client reader did not stop")
		}
	})
	return c
}

// startReading reads every frame into c.frames until the stream ends.
func (c *testClient) startReading() {
	go func() {
		for {
			f, err := c.stream.Recv()
			if err != nil {
				c.err <- err
				return
			}
			c.frames <- f
		}
	}()
}

// connect opens a stream and identifies as uid.
func connect(t *testing.T, cc *grpc.ClientConn, uid string) (*testClient, *presencev1.Identified) {
	t.Helper()
	c := open(t, cc, false)
	c.send(identify(uid))
	f := c.next()
	id := f.GetIdentified()
	if id == nil {
		t.Fatalf("first frame = %v; want Identified", f)
	}
	return c, id
}

func identify(uid string) *presencev1.ConnectRequest {
	return &presencev1.ConnectRequest{Frame: &presencev1.ConnectRequest_Identify{Identify: &presencev1.Identify{Uid: uid}}}
}

func ping(seq uint64) *presencev1.ConnectRequest {
	return &presencev1.ConnectRequest{Frame: &presencev1.ConnectRequest_Ping{Ping: &presencev1.Ping{Seq: seq}}}
}

func (c *testClient) send(req *presencev1.ConnectRequest) {
	c.t.Helper()
	if err := c.stream.Send(req); err != nil {
		c.t.Fatalf("Send(%v): %v", req, err)
	}
}

// next returns the next frame, failing the test after 5 s.
func (c *testClient) next() *presencev1.ConnectResponse {
	c.t.Helper()
	select {
	case f := <-c.frames:
		return f
	case err := <-c.err:
		c.err <- err
		select { // frames read before the end come first
		case f := <-c.frames:
			return f
		default:
		}
		c.t.Fatalf("stream ended (%v) while waiting for a frame", err)
	case <-time.After(5 * time.Second):
		c.t.Fatalf("no frame within 5s")
	}
	return nil
}

// nextPush returns the next Push, skipping Pongs.
func (c *testClient) nextPush() *presencev1.Push {
	c.t.Helper()
	for {
		f := c.next()
		if p := f.GetPush(); p != nil {
			return p
		}
		if f.GetPong() == nil {
			c.t.Fatalf("frame %v; want Push", f)
		}
	}
}

// none asserts no frame other than Pong arrives within d.
func (c *testClient) none(d time.Duration) {
	c.t.Helper()
	deadline := time.After(d)
	for {
		select {
		case f := <-c.frames:
			if f.GetPong() == nil {
				c.t.Fatalf("unexpected frame %v", f)
			}
		case <-deadline:
			return
		}
	}
}

// end waits for the stream to end and returns the frames that came before
// the end and the final status (nil for OK).
func (c *testClient) end(within time.Duration) ([]*presencev1.ConnectResponse, error) {
	c.t.Helper()
	var frames []*presencev1.ConnectResponse
	deadline := time.After(within)
	for {
		select {
		case f := <-c.frames:
			frames = append(frames, f)
		case err := <-c.err:
		drain:
			for {
				select {
				case f := <-c.frames:
					frames = append(frames, f)
				default:
					break drain
				}
			}
			c.err <- err
			if err == io.EOF {
				err = nil
			}
			return frames, err
		case <-deadline:
			c.t.Fatalf("stream did not end within %v", within)
			return nil, nil
		}
	}
}

// wantEnd asserts the stream ends with code and, if reason is not
// UNSPECIFIED, that its last frame is a Goodbye with that reason.
func (c *testClient) wantEnd(within time.Duration, code codes.Code, reason presencev1.GoodbyeReason) *presencev1.Goodbye {
	c.t.Helper()
	frames, err := c.end(within)
	if got := status.Code(err); got != code {
		c.t.Fatalf("stream ended with %v (%v); want %v", got, err, code)
	}
	if code != codes.OK && status.Convert(err).Message() == "" {
		c.t.Errorf("status %v has no message", code)
	}
	var gb *presencev1.Goodbye
	if n := len(frames); n > 0 {
		gb = frames[n-1].GetGoodbye()
	}
	if reason == presencev1.GoodbyeReason_GOODBYE_REASON_UNSPECIFIED {
		if gb != nil {
			c.t.Errorf("got Goodbye %v; want none", gb)
		}
		return nil
	}
	if gb.GetReason() != reason {
		c.t.Fatalf("last frame %v; want Goodbye %v", frames, reason)
	}
	return gb
}

func textData(s string) *structpb.Value { return structpb.NewStringValue(s) }

func sendTo(t *testing.T, b presencev1.BackendServiceClient, uid, text string) (*presencev1.SendToUidResponse, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return b.SendToUid(ctx, &presencev1.SendToUidRequest{Uid: uid, Payload: &presencev1.SendToUidRequest_Data{Data: textData(text)}})
}

func broadcast(t *testing.T, b presencev1.BackendServiceClient, text string) *presencev1.BroadcastResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := b.Broadcast(ctx, &presencev1.BroadcastRequest{Payload: &presencev1.BroadcastRequest_Data{Data: textData(text)}})
	if err != nil {
		t.Fatalf("Broadcast: %v", err)
	}
	return resp
}

// waitFor polls cond every 10 ms until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
