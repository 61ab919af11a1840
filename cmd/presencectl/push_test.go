package main

import (
	"context"
	"encoding/json"
	"net"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/presence-dev/presence/client"
	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
)

// TestSendToOfflineUidExits3 proves send to a uid with no live session
// exits 3 and says so.
func TestSendToOfflineUidExits3(t *testing.T) {
	d := startDaemon(t)
	r := runCLI(t, "--addr", d.GRPCAddr(), "send", "--uid", "nobody", "--text", "hello")
	if r.code != exitNotFound {
		t.Fatalf("send to an offline uid: exit %d (%v); want %d", r.code, r.err, exitNotFound)
	}
	if msg := r.err.Error(); !strings.Contains(msg, `"nobody"`) || !strings.Contains(msg, "NotFound") {
		t.Errorf("error = %q; want it to name the uid and NotFound", msg)
	}
	if r.stdout != "" {
		t.Errorf("stdout = %q; want nothing on failure", r.stdout)
	}
}

// TestSendToOnlineUid proves send to a uid watched through the client
// package prints delivered 1 as JSON, and the push arrives.
func TestSendToOnlineUid(t *testing.T) {
	d := startDaemon(t)
	connected := make(chan struct{})
	var once sync.Once
	pushes := make(chan *client.Push, 1)
	c, err := client.New(client.Config{
		Target: d.GRPCAddr(), UID: "bob",
		OnState: func(s client.StateChange) {
			if s.State == client.StateConnected {
				once.Do(func() { close(connected) })
			}
		},
		OnPush: func(p *client.Push) {
			select {
			case pushes <- p:
			default:
			}
		},
	})
	if err != nil {
		t.Fatalf("client.New: %v", err)
	}
	t.Cleanup(c.Close)
	waitClosed(t, connected, "client connected")

	r := runCLI(t, "send", "--addr", d.GRPCAddr(), "--uid", "bob", "--data", `{"text":"hi bob"}`)
	if r.code != exitOK {
		t.Fatalf("send: exit %d (%v); want 0", r.code, r.err)
	}
	var resp struct {
		PushID    string `json:"push_id"`
		Seq       string `json:"seq"`
		Delivered int    `json:"delivered"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &resp); err != nil || strings.Count(r.stdout, "\n") != 1 {
		t.Fatalf("send stdout %q is not one JSON line: %v", r.stdout, err)
	}
	if resp.Delivered != 1 || resp.Seq != "1" || resp.PushID == "" {
		t.Errorf("send printed %+v; want delivered 1, seq 1, a push id", resp)
	}
	select {
	case p := <-pushes:
		if got := p.Msg.GetData().GetStructValue().GetFields()["text"].GetStringValue(); got != "hi bob" || p.Msg.GetId() != resp.PushID {
			t.Errorf("push = %q id %q; want %q id %q", got, p.Msg.GetId(), "hi bob", resp.PushID)
		}
	case <-waitCtx(t).Done():
		t.Fatal("the push did not arrive")
	}
}

// TestBroadcastPrintsDelivered proves broadcast prints its answer, with
// delivered 0 present when nobody is connected.
func TestBroadcastPrintsDelivered(t *testing.T) {
	d := startDaemon(t)
	r := runCLI(t, "broadcast", "--addr", d.GRPCAddr(), "--text", "anyone?")
	if r.code != exitOK {
		t.Fatalf("broadcast: exit %d (%v); want 0", r.code, r.err)
	}
	var resp map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &resp); err != nil {
		t.Fatalf("broadcast stdout %q: %v", r.stdout, err)
	}
	if resp["delivered"] != 0.0 || resp["push_id"] == "" {
		t.Errorf("broadcast printed %v; want delivered 0 and a push id", resp)
	}
}

// TestEnvironmentAndFlags proves PRESENCE_ADDR is used when --addr is not
// given, and a flag (before or after the command) wins over it.
func TestEnvironmentAndFlags(t *testing.T) {
	d := startDaemon(t)
	t.Setenv("PRESENCE_ADDR", d.GRPCAddr())
	if r := runCLI(t, "broadcast", "--text", "env"); r.code != exitOK {
		t.Errorf("broadcast with PRESENCE_ADDR: exit %d (%v); want 0", r.code, r.err)
	}
	t.Setenv("PRESENCE_ADDR", "127.0.0.1:1")
	if r := runCLI(t, "--addr", d.GRPCAddr(), "broadcast", "--text", "flag first"); r.code != exitOK {
		t.Errorf("--addr before the command over a bad PRESENCE_ADDR: exit %d (%v); want 0", r.code, r.err)
	}
	if r := runCLI(t, "--addr", "127.0.0.1:1", "broadcast", "--addr", d.GRPCAddr(), "--text", "flag last"); r.code != exitOK {
		t.Errorf("--addr after the command over one before it: exit %d (%v); want 0", r.code, r.err)
	}
	r := runCLI(t, "broadcast", "--text", "nowhere")
	if r.code != exitError || !strings.Contains(r.err.Error(), "is presenced running at 127.0.0.1:1") {
		t.Errorf("broadcast to a closed port: exit %d, %v; want 1 and a hint naming the address", r.code, r.err)
	}
}

// fakeBackend answers BackendService calls with a fixed error and records
// the metadata they carried.
type fakeBackend struct {
	presencev1.UnimplementedBackendServiceServer
	err error
	mu  sync.Mutex
	md  []metadata.MD // guarded by mu
}

func (f *fakeBackend) SendToUid(ctx context.Context, _ *presencev1.SendToUidRequest) (*presencev1.SendToUidResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	f.mu.Lock()
	f.md = append(f.md, md)
	f.mu.Unlock()
	return nil, f.err
}

// startFakeBackend serves f on 127.0.0.1:0; cleanup stops it.
func startFakeBackend(t *testing.T, f *fakeBackend) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	gs := grpc.NewServer()
	presencev1.RegisterBackendServiceServer(gs, f)
	served := make(chan struct{})
	go func() { defer close(served); gs.Serve(lis) }()
	t.Cleanup(func() { gs.Stop(); <-served })
	return lis.Addr().String()
}

// TestAPIKeyAndAuthErrors proves --api-key (or PRESENCE_API_KEY) goes out
// as "authorization: Bearer KEY", none goes out without it, and
// Unauthenticated and PermissionDenied exit 4.
func TestAPIKeyAndAuthErrors(t *testing.T) {
	for _, tc := range []struct {
		name     string
		env      string
		args     []string
		wantAuth string
		code     codes.Code
	}{
		{"flag", "", []string{"--api-key", "s3cret"}, "Bearer s3cret", codes.Unauthenticated},
		{"environment", "from-env", nil, "Bearer from-env", codes.PermissionDenied},
		{"none", "", nil, "", codes.Unauthenticated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("PRESENCE_API_KEY", tc.env) // "" counts as unset
			f := &fakeBackend{err: status.Error(tc.code, "the API key is wrong; set --api-key")}
			addr := startFakeBackend(t, f)
			r := runCLI(t, append([]string{"send", "--addr", addr, "--uid", "u", "--text", "x"}, tc.args...)...)
			if r.code != exitAuth {
				t.Errorf("send answered %v: exit %d (%v); want %d", tc.code, r.code, r.err, exitAuth)
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			if len(f.md) != 1 {
				t.Fatalf("server got %d calls; want 1", len(f.md))
			}
			if got := strings.Join(f.md[0].Get("authorization"), ","); got != tc.wantAuth {
				t.Errorf("authorization metadata = %q; want %q", got, tc.wantAuth)
			}
		})
	}
}

// waitCtx is a context ending after waitTimeout, cancelled at cleanup.
func waitCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	t.Cleanup(cancel)
	return ctx
}

// waitClosed waits for ch to close, or fails the test.
func waitClosed(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-waitCtx(t).Done():
		t.Fatalf("no %s within %v", what, waitTimeout)
	}
}

// TestSendStoreManyAndRetry proves send's delivery flags end to end:
// --store-for answers stored for an offline uid, --uids prints a result
// per uid, and --idempotency-key makes the retry a duplicate.
func TestSendStoreManyAndRetry(t *testing.T) {
	d := startDaemon(t)
	r := runCLI(t, "--addr", d.GRPCAddr(), "send", "--uid", "later", "--store-for", "1m", "--text", "kept")
	var one struct {
		Stored    bool   `json:"stored"`
		Seq       string `json:"seq"`
		Delivered int    `json:"delivered"`
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &one) != nil || !one.Stored || one.Seq != "1" || one.Delivered != 0 {
		t.Fatalf("send --store-for: exit %d %v, %q", r.code, r.err, r.stdout)
	}
	var many struct {
		Results []struct {
			Uid     string `json:"uid"`
			Stored  bool   `json:"stored"`
			Offline bool   `json:"offline"`
		} `json:"results"`
		Duplicate bool `json:"duplicate"`
	}
	for i, wantDup := range []bool{false, true} {
		r = runCLI(t, "--addr", d.GRPCAddr(), "send", "--uids", "later,gone", "--idempotency-key", "batch-1", "--text", "x")
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &many) != nil {
			t.Fatalf("send --uids (call %d): exit %d %v, %q", i, r.code, r.err, r.stdout)
		}
		if len(many.Results) != 2 || many.Results[0].Uid != "later" || !many.Results[1].Offline || many.Duplicate != wantDup {
			t.Fatalf("send --uids (call %d) = %q; want later then gone offline, duplicate %v", i, r.stdout, wantDup)
		}
	}
	if r := runCLI(t, "--addr", d.GRPCAddr(), "send", "--uid", "a", "--uids", "b", "--text", "x"); r.code != exitUsage {
		t.Fatalf("--uid with --uids: exit %d; want %d", r.code, exitUsage)
	}
}
