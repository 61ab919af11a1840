package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
	"github.com/presence-dev/presence/server"
)

// TestMain checks for leaked goroutines once every test is done, after
// dropping the default HTTP client's idle keep-alive connections (those
// are the client's, not the daemon's).
func TestMain(m *testing.M) {
	code := m.Run()
	http.DefaultClient.CloseIdleConnections()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// testTransport is the transport the tests' daemons serve gRPC with:
// PRESENCE_TEST_TRANSPORT ("grpc" or "lite"; empty: the default). CI runs
// this package once with each.
var testTransport = os.Getenv("PRESENCE_TEST_TRANSPORT")

// start runs a daemon on loopback ports chosen by the kernel.
func start(t testing.TB) *Daemon {
	t.Helper()
	return startConfig(t, testConfig())
}

// testConfig is start's configuration: loopback ports chosen by the
// kernel, short shutdown hints, no logs.
func testConfig() Config {
	return Config{
		GRPCAddr:  "127.0.0.1:0",
		HTTPAddr:  "127.0.0.1:0",
		Transport: testTransport,
		Server: server.Options{
			HeartbeatInterval: time.Second, HeartbeatTimeout: 3 * time.Second,
			ShutdownReconnectMin: 100 * time.Millisecond, ShutdownReconnectJitter: 100 * time.Millisecond,
		},
		Logger: slog.New(slog.DiscardHandler),
	}
}

// startConfig starts a daemon with cfg; cleanup shuts it down.
func startConfig(t testing.TB, cfg Config) *Daemon {
	t.Helper()
	d, err := Start(cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := d.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return d
}

func dial(t testing.TB, d *Daemon) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(d.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// client is an identified Connect stream read by a goroutine.
type client struct {
	frames chan *presencev1.ConnectResponse
	errc   chan error
	stream presencev1.PresenceService_ConnectClient
}

// connect opens a stream and identifies as uid, with token if given.
func connect(t testing.TB, cc *grpc.ClientConn, uid string, token ...string) *client {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := presencev1.NewPresenceServiceClient(cc).Connect(ctx)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	c := &client{frames: make(chan *presencev1.ConnectResponse, 64), errc: make(chan error, 1), stream: stream}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			f, err := stream.Recv()
			if err != nil {
				c.errc <- err
				return
			}
			c.frames <- f
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	id := &presencev1.Identify{Uid: uid}
	if len(token) > 0 {
		id.Token = token[0]
	}
	if err := stream.Send(&presencev1.ConnectRequest{Frame: &presencev1.ConnectRequest_Identify{Identify: id}}); err != nil {
		t.Fatal(err)
	}
	if f := c.next(t); f.GetIdentified() == nil {
		t.Fatalf("first frame %v; want Identified", f)
	}
	return c
}

func (c *client) next(t testing.TB) *presencev1.ConnectResponse {
	t.Helper()
	select {
	case f := <-c.frames:
		return f
	case err := <-c.errc:
		select { // frames read before the end come first
		case f := <-c.frames:
			c.errc <- err
			return f
		default:
		}
		t.Fatalf("stream ended: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("no frame within 5s")
	}
	return nil
}

// post sends a REST request and returns the status and decoded JSON body.
func post(t *testing.T, d *Daemon, path, body string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Post("http://"+d.HTTPAddr()+path, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("POST %s: body %q is not JSON: %v", path, raw, err)
	}
	return resp.StatusCode, m
}

// TestRESTPushes proves the REST facade over real HTTP: a JSON payload
// needs no base64, reaches exactly the uid's sessions, and the reported
// delivered count matches; broadcast reaches everyone.
func TestRESTPushes(t *testing.T) {
	d := start(t)
	cc := dial(t, d)
	a1, a2, b := connect(t, cc, "alice"), connect(t, cc, "alice"), connect(t, cc, "bob")

	code, body := post(t, d, "/v1/uids/alice/messages", `{"data": {"text": "hi", "n": 3}}`)
	if code != http.StatusOK || body["delivered"] != float64(2) || body["seq"] != "1" {
		t.Fatalf("POST messages = %d %v; want 200 delivered 2 seq 1", code, body)
	}
	for _, c := range []*client{a1, a2} {
		p := c.next(t).GetPush()
		fields := p.GetData().GetStructValue().GetFields()
		if p.GetId() != body["pushId"] || fields["text"].GetStringValue() != "hi" || fields["n"].GetNumberValue() != 3 {
			t.Fatalf("push = %v; want {text: hi, n: 3} with id %v", p, body["pushId"])
		}
	}
	code, body = post(t, d, "/v1/broadcast", `{"data": ["x", 1, null, true]}`)
	if code != http.StatusOK || body["delivered"] != float64(3) {
		t.Fatalf("POST broadcast = %d %v; want 200 delivered 3", code, body)
	}
	for _, c := range []*client{a1, a2, b} {
		if got := len(c.next(t).GetPush().GetData().GetListValue().GetValues()); got != 4 {
			t.Fatalf("broadcast push has %d list values; want 4", got)
		}
	}
}

// TestRESTErrors proves bad REST requests get the right HTTP status and a
// JSON error with the gRPC code and a message, and the server carries on.
func TestRESTErrors(t *testing.T) {
	d := start(t)
	cc := dial(t, d)
	c := connect(t, cc, "alice")
	tests := []struct {
		name, path, body string
		http             int
		code             codes.Code
		msg              string
	}{
		{"offline uid", "/v1/uids/bob/messages", `{"data": 1}`, 404, codes.NotFound, "no live session"},
		{"unknown field", "/v1/uids/alice/messages", `{"dta": 1}`, 400, codes.InvalidArgument, `unknown field "dta"`},
		{"malformed JSON", "/v1/uids/alice/messages", `{"data": `, 400, codes.InvalidArgument, ""},
		{"no payload", "/v1/uids/alice/messages", `{}`, 400, codes.InvalidArgument, "payload missing"},
		{"empty body", "/v1/broadcast", ``, 400, codes.InvalidArgument, "payload missing"},
		{"bad uid", "/v1/uids/al%20ice/messages", `{"data": 1}`, 400, codes.InvalidArgument, "not allowed"},
		{"wrong type", "/v1/uids/alice/messages", `{"binary": "not an object"}`, 400, codes.InvalidArgument, ""},
		{"payload too big", "/v1/broadcast", `{"data": "` + strings.Repeat("x", server.DefaultMaxPayloadBytes) + `"}`, 400, codes.InvalidArgument, "the limit is"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := post(t, d, tt.path, tt.body)
			if code != tt.http || body["code"] != float64(tt.code) || !strings.Contains(body["message"].(string), tt.msg) {
				t.Fatalf("POST %s %.40q = %d %v; want %d, code %d, message containing %q", tt.path, tt.body, code, body, tt.http, tt.code, tt.msg)
			}
		})
	}
	t.Run("body over the cap", func(t *testing.T) {
		resp, err := http.Post("http://"+d.HTTPAddr()+"/v1/broadcast", "application/json", strings.NewReader(`{"data":"`+strings.Repeat("x", DefaultMaxBodyBytes)+`"}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Fatalf("status %d; want 413", resp.StatusCode)
		}
	})
	// Nothing above harmed the live session.
	if code, body := post(t, d, "/v1/uids/alice/messages", `{"data": "ok"}`); code != 200 || body["delivered"] != float64(1) {
		t.Fatalf("push after bad requests = %d %v", code, body)
	}
	if p := c.next(t).GetPush(); p.GetData().GetStringValue() != "ok" {
		t.Fatalf("push = %v; want ok", p)
	}
}

// TestHTTPEndpoints proves /healthz, /openapi.json and /metrics answer.
func TestHTTPEndpoints(t *testing.T) {
	d := start(t)
	for path, want := range map[string]string{
		"/healthz":      "ok",
		"/openapi.json": `"/v1/uids/{uid}/messages"`,
		"/metrics":      "go_goroutines",
	} {
		resp, err := http.Get("http://" + d.HTTPAddr() + path)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(raw), want) {
			t.Errorf("GET %s = %d %.80q; want 200 containing %q", path, resp.StatusCode, raw, want)
		}
	}
}

// TestShutdownDrains proves Shutdown turns health NOT_SERVING, gives every
// session Goodbye SHUTDOWN with a reconnect hint, ends its stream with
// UNAVAILABLE, and stops both listeners.
func TestShutdownDrains(t *testing.T) {
	d := start(t)
	cc := dial(t, d)
	hc := healthpb.NewHealthClient(cc)
	ctx := context.Background()
	if r, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health = %v, %v; want SERVING", r, err)
	}
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	watch, err := hc.Watch(wctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := watch.Recv(); err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health watch = %v, %v", r, err)
	}
	c := connect(t, cc, "alice")

	shutdownDone := make(chan error, 1)
	go func() { shutdownDone <- d.Shutdown(context.Background()) }()

	if r, err := watch.Recv(); err != nil || r.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("health during shutdown = %v, %v; want NOT_SERVING", r, err)
	}
	wcancel() // a load balancer that saw NOT_SERVING goes away
	gb := c.next(t).GetGoodbye()
	if gb.GetReason() != presencev1.GoodbyeReason_GOODBYE_REASON_SHUTDOWN || !gb.GetReconnect() || gb.GetReconnectAfter().AsDuration() < 100*time.Millisecond {
		t.Fatalf("frame %v; want Goodbye SHUTDOWN with a reconnect hint", gb)
	}
	select {
	case err := <-c.errc:
		if status.Code(err) != codes.Unavailable {
			t.Errorf("stream ended with %v; want Unavailable", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("stream did not end")
	}
	select {
	case err := <-shutdownDone:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return")
	}
	if _, err := http.Get("http://" + d.HTTPAddr() + "/healthz"); err == nil {
		t.Errorf("HTTP listener still answers after Shutdown")
	}
}

// A listener that cannot be opened fails Start with an error naming it,
// and releases what Start had already opened (goleak checks the rest).
func TestStartFailsCleanlyOnBusyPort(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	for _, cfg := range []Config{
		{GRPCAddr: busy.Addr().String(), HTTPAddr: "127.0.0.1:0"},
		{GRPCAddr: "127.0.0.1:0", HTTPAddr: busy.Addr().String()},
	} {
		cfg.Logger = slog.New(slog.DiscardHandler)
		d, err := Start(cfg)
		if err == nil {
			d.Shutdown(context.Background())
			t.Fatalf("Start(%+v) succeeded on a busy port", cfg)
		}
		if !strings.Contains(err.Error(), busy.Addr().String()) {
			t.Errorf("error %q does not name the busy address %s", err, busy.Addr())
		}
	}
}

// scrapeMetrics GETs /metrics over HTTP and returns each sample line's
// value by its name and labels as written (`name{label="v"}`).
func scrapeMetrics(t *testing.T, d *Daemon) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + d.HTTPAddr() + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics = %d %.200q", resp.StatusCode, raw)
	}
	out := map[string]float64{}
	for line := range strings.SplitSeq(string(raw), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		var v float64
		if _, err := fmt.Sscan(line[i+1:], &v); err != nil {
			t.Fatalf("/metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

// waitMetrics scrapes /metrics until every wanted sample has its value,
// failing with the differences after 5 s.
func waitMetrics(t *testing.T, d *Daemon, want map[string]float64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := scrapeMetrics(t, d)
		var bad []string
		for k, w := range want {
			if v, ok := got[k]; !ok || v != w {
				bad = append(bad, fmt.Sprintf("%s = %v (present %v); want %v", k, v, ok, w))
			}
		}
		if len(bad) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("/metrics after 5s:\n%s", strings.Join(bad, "\n"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestMetricsOverHTTP proves /metrics, scraped over real HTTP, follows a
// session's life: it connects, receives a REST push, and hangs up.
func TestMetricsOverHTTP(t *testing.T) {
	d := start(t)
	waitMetrics(t, d, map[string]float64{
		`presence_sessions`: 0,
		`presence_sessions_ended_total{reason="client_closed"}`: 0,
		`presence_pushes_total{scope="uid"}`:                    0,
	})
	before := scrapeMetrics(t, d)
	c := connect(t, dial(t, d), "alice")
	if testTransport != TransportGRPC {
		// The gateway's in-process connection may already be counted.
		waitMetrics(t, d, map[string]float64{
			`presence_transport_connections`:          before[`presence_transport_connections`] + 1,
			`presence_transport_flush_handoffs_total`: 0,
		})
	}
	waitMetrics(t, d, map[string]float64{
		`presence_sessions`:                               1,
		`presence_online_uids`:                            1,
		`presence_frames_received_total{kind="identify"}`: 1,
		`presence_frames_sent_total{kind="identified"}`:   1,
	})
	writes := scrapeMetrics(t, d)[`presence_transport_flush_writes_total`]
	if code, body := post(t, d, "/v1/uids/alice/messages", `{"data": "hi"}`); code != http.StatusOK {
		t.Fatalf("POST messages = %d %v", code, body)
	}
	if p := c.next(t).GetPush(); p.GetData().GetStringValue() != "hi" {
		t.Fatalf("push = %v; want hi", p)
	}
	if testTransport != TransportGRPC {
		// The push went to an idle session: handed over without waiting,
		// and written by a flush shard, which counts the write after it
		// returns, so maybe after the client has read it.
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			got := scrapeMetrics(t, d)[`presence_transport_flush_writes_total`]
			if got >= writes+1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("presence_transport_flush_writes_total = %v 5s after a push; want at least %v", got, writes+1)
			}
		}
	}
	waitMetrics(t, d, map[string]float64{
		`presence_pushes_total{scope="uid"}`:          1,
		`presence_push_deliveries_total{scope="uid"}`: 1,
		`presence_frames_sent_total{kind="push"}`:     1,
	})
	if err := c.stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	waitMetrics(t, d, map[string]float64{
		`presence_sessions`:    0,
		`presence_online_uids`: 0,
		`presence_sessions_ended_total{reason="client_closed"}`: 1,
	})
	runtime.GC() // go_gc_heap_live_bytes is 0 until the first GC
	m := scrapeMetrics(t, d)
	if m["go_goroutines"] == 0 {
		t.Errorf("go_goroutines missing: the runtime collectors must stay beside presence_*")
	}
	if m["go_gc_heap_live_bytes"] <= 0 {
		t.Errorf("go_gc_heap_live_bytes = %v: the live heap as of the last GC must be exported", m["go_gc_heap_live_bytes"])
	}
}
