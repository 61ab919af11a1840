package main

import (
	"context"
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
)

// TestWatchPrintsPushAsJSONLine proves watch prints its state changes and a
// push as JSON lines, and stops cleanly with exit 0 when its context (the
// signal) ends.
func TestWatchPrintsPushAsJSONLine(t *testing.T) {
	d := startDaemon(t)
	out := newLines()
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	ran := make(chan error, 1)
	go func() {
		ran <- run(ctx, []string{"watch", "--addr", d.GRPCAddr(), "--uid", "dora", "--label", "device=cli"}, out, out)
	}()

	var state map[string]any
	if err := json.Unmarshal([]byte(out.next(t, `"state":"connected"`)), &state); err != nil {
		t.Fatalf("connected line is not JSON: %v", err)
	}
	sid, _ := state["session_id"].(string)
	if sid == "" || state["uid"] != "dora" {
		t.Fatalf("connected line %v; want a session_id and uid dora", state)
	}

	cc, err := grpc.NewClient(d.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("grpc.NewClient: %v", err)
	}
	defer cc.Close()
	data, _ := structpb.NewValue(map[string]any{"text": "hi dora"})
	cctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	resp, err := presencev1.NewBackendServiceClient(cc).SendToUid(cctx, &presencev1.SendToUidRequest{
		Uid: "dora", Payload: &presencev1.SendToUidRequest_Data{Data: data},
	})
	if err != nil {
		t.Fatalf("SendToUid(dora): %v", err)
	}

	var push struct {
		Type      string `json:"type"`
		Time      string `json:"time"`
		SessionID string `json:"session_id"`
		Push      struct {
			ID    string         `json:"id"`
			Scope string         `json:"scope"`
			Seq   string         `json:"seq"`
			Data  map[string]any `json:"data"`
		} `json:"push"`
	}
	line := out.next(t, `"type":"push"`)
	if err := json.Unmarshal([]byte(line), &push); err != nil {
		t.Fatalf("push line %q is not JSON: %v", line, err)
	}
	if push.SessionID != sid || push.Push.ID != resp.GetPushId() || push.Push.Scope != "PUSH_SCOPE_UID" ||
		push.Push.Seq != "1" || push.Push.Data["text"] != "hi dora" || push.Time == "" {
		t.Errorf("push line = %s; want session %s, id %s, scope UID, seq 1, data.text \"hi dora\", a time", line, sid, resp.GetPushId())
	}

	stop()
	select {
	case err := <-ran:
		if err != nil {
			t.Errorf("watch after the signal = %v; want nil (exit 0)", err)
		}
	case <-time.After(waitTimeout):
		t.Fatal("watch did not stop after the signal")
	}
	all := out.all()
	if last := all[len(all)-1]; !strings.Contains(last, `"state":"closed"`) {
		t.Errorf("last line = %s; want the closed state", last)
	}
	for _, l := range all {
		if !json.Valid([]byte(l)) {
			t.Errorf("line %q is not JSON", l)
		}
	}
}

// TestWatchStopsOnPermanentError proves watch exits by itself, non-zero and
// naming the problem, when the server refuses the uid for good.
func TestWatchStopsOnPermanentError(t *testing.T) {
	d := startDaemon(t)
	r := runCLI(t, "watch", "--addr", d.GRPCAddr(), "--uid", "no spaces allowed")
	if r.code != exitError || !strings.Contains(r.err.Error(), "uid") || !strings.Contains(r.err.Error(), "InvalidArgument") {
		t.Errorf("watch with an invalid uid: exit %d, %v; want 1 and an InvalidArgument naming the uid", r.code, r.err)
	}
	if !strings.Contains(r.stdout, `"state":"disconnected"`) || !strings.Contains(r.stdout, `"code":"InvalidArgument"`) {
		t.Errorf("watch stdout = %s; want a disconnected line with code InvalidArgument", r.stdout)
	}
}

// refusingServer is a PresenceService that refuses every Connect with one
// status after reading Identify.
type refusingServer struct {
	presencev1.UnimplementedPresenceServiceServer
	err error
}

func (s *refusingServer) Connect(stream presencev1.PresenceService_ConnectServer) error {
	if _, err := stream.Recv(); err != nil {
		return err
	}
	return s.err
}

// TestWatchUnauthenticatedExits4 proves watch stops and exits 4 when the
// server refuses its token.
func TestWatchUnauthenticatedExits4(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	gs := grpc.NewServer()
	presencev1.RegisterPresenceServiceServer(gs, &refusingServer{err: status.Error(codes.Unauthenticated, "the token has expired; get a new one")})
	served := make(chan struct{})
	go func() { defer close(served); gs.Serve(lis) }()
	t.Cleanup(func() { gs.Stop(); <-served })

	r := runCLI(t, "watch", "--addr", lis.Addr().String(), "--token", "stale")
	if r.code != exitAuth || !strings.Contains(r.err.Error(), "token has expired") {
		t.Errorf("watch with a refused token: exit %d, %v; want %d and the server's message", r.code, r.err, exitAuth)
	}
}
