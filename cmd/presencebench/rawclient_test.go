package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/presence-dev/presence/daemon"
	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
	"github.com/presence-dev/presence/server"
)

// rawPush is what a test session received: a push's bench index and
// publish time.
type rawPush struct {
	idx, t int64
}

// openRaw opens one session with uid on c, sending its pushes to a channel.
func openRaw(t *testing.T, ctx context.Context, c *rawConn, uid string) (*session, <-chan rawPush) {
	t.Helper()
	got := make(chan rawPush, 16)
	sctx, cancel := context.WithCancel(ctx)
	s := &session{
		uid: uid, cancel: cancel, resume: make(chan struct{}), done: make(chan struct{}),
		onPush: func(_ *session, f *frameInfo, _ int64) { got <- rawPush{idx: f.idx, t: f.t} },
	}
	if err := c.open(sctx, s); err != nil {
		cancel()
		t.Fatalf("open %s: %v", uid, err)
	}
	return s, got
}

// waitEnd waits for s to end and checks its code and Goodbye reason.
func waitEnd(t *testing.T, s *session, code codes.Code, goodbye presencev1.GoodbyeReason) {
	t.Helper()
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("session %s did not end", s.uid)
	}
	if s.endCode() != code || s.goodbye != goodbye {
		t.Errorf("session %s ended with %v (%v), goodbye %v; want %v, %v", s.uid, s.endCode(), s.endErr, s.goodbye, code, goodbye)
	}
}

func pushData(t *testing.T, idx int64, pad int) *presencev1.SendToUidRequest_Data {
	t.Helper()
	m := map[string]any{"t": strconv.FormatInt(time.Now().UnixNano(), 10), "i": strconv.FormatInt(idx, 10)}
	if pad > 0 {
		m["p"] = strings.Repeat("x", pad)
	}
	v, err := structpb.NewValue(m)
	if err != nil {
		t.Fatal(err)
	}
	return &presencev1.SendToUidRequest_Data{Data: v}
}

// TestRawConn drives the raw client against a real in-process daemon:
// Identify -> Identified, pushes (one far larger than the 64 KiB windows,
// so it needs WINDOW_UPDATEs on the stream and the connection), several
// streams on one connection, and every way a stream ends: kicked
// (Aborted + Goodbye), cancelled by the bench (Canceled), server shutdown.
func TestRawConn(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	d, err := daemon.Start(daemon.Config{
		GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0",
		Server: server.Options{MaxPayloadBytes: 512 << 10, HeartbeatInterval: 200 * time.Millisecond, HeartbeatTimeout: 2 * time.Second},
	})
	if err != nil {
		t.Fatal(err)
	}
	shut := false
	defer func() {
		if !shut {
			d.Shutdown(context.Background())
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := dialRawConns(&target{grpcAddr: d.GRPCAddr(), srcAddrs: 2}, 1, 0)[0]
	defer c.close()

	a, aPush := openRaw(t, ctx, c, "raw-a")
	b, _ := openRaw(t, ctx, c, "raw-b")
	k, _ := openRaw(t, ctx, c, "raw-k")
	if a.hbInterval != 200*time.Millisecond || a.hbTimeout != 2*time.Second {
		t.Errorf("Identified: heartbeat %v/%v; want 200ms/2s", a.hbInterval, a.hbTimeout)
	}

	srv := d.Server()
	for i, pad := range []int{0, 300 << 10, 10} {
		resp, err := srv.SendToUid(ctx, &presencev1.SendToUidRequest{Uid: "raw-a", Payload: pushData(t, int64(i), pad)})
		if err != nil || resp.GetDelivered() != 1 {
			t.Fatalf("SendToUid %d (%d bytes): %v, delivered %d", i, pad, err, resp.GetDelivered())
		}
		select {
		case p := <-aPush:
			if p.idx != int64(i) || p.t <= 0 {
				t.Errorf("push %d (%d bytes) decoded as idx %d, t %d", i, pad, p.idx, p.t)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("push %d (%d bytes) did not arrive", i, pad)
		}
	}
	// The heartbeat goroutine keeps the sessions alive past the timeout.
	time.Sleep(2500 * time.Millisecond)
	if a.ended() || b.ended() {
		t.Fatalf("sessions ended without a reason: a %v, b %v", a.endErr, b.endErr)
	}
	if since := time.Since(time.Unix(0, a.lastSent.Load())); since > time.Second {
		t.Errorf("a last sent %v ago; want a Ping every 200ms", since)
	}

	if _, err := srv.Kick(ctx, &presencev1.KickRequest{Uid: "raw-k", Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	waitEnd(t, k, codes.Aborted, presencev1.GoodbyeReason_GOODBYE_REASON_KICKED)

	b.cancel()
	waitEnd(t, b, codes.Canceled, presencev1.GoodbyeReason_GOODBYE_REASON_UNSPECIFIED)
	// The RST_STREAM reached the server: only a is left.
	for deadline := time.Now().Add(5 * time.Second); ; {
		_, n := srv.Counts()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("server still has %d sessions after kick and cancel; want 1", n)
		}
		time.Sleep(10 * time.Millisecond)
	}

	if a.ended() {
		t.Fatalf("a ended with the others: %v", a.endErr)
	}
	shut = true
	if err := d.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	waitEnd(t, a, codes.Unavailable, presencev1.GoodbyeReason_GOODBYE_REASON_SHUTDOWN)
	a.cancel()
}

// TestRawFeed checks message reassembly: gRPC messages split over DATA
// frames at every byte are delivered whole, once, in order.
func TestRawFeed(t *testing.T) {
	var wire []byte
	const n = 4
	for i := range n {
		data, err := structpb.NewValue(map[string]any{"t": "17", "i": strconv.Itoa(i), "p": strings.Repeat("x", i*40)})
		if err != nil {
			t.Fatal(err)
		}
		b, err := proto.Marshal(&presencev1.ConnectResponse{Frame: &presencev1.ConnectResponse_Push{Push: &presencev1.Push{Seq: uint64(i), Payload: &presencev1.Push_Data{Data: data}}}})
		if err != nil {
			t.Fatal(err)
		}
		wire = binary.BigEndian.AppendUint32(append(wire, 0), uint32(len(b)))
		wire = append(wire, b...)
	}
	for chunk := 1; chunk <= len(wire); chunk++ {
		var got []int64
		s := &session{onPush: func(_ *session, f *frameInfo, _ int64) { got = append(got, f.idx) }}
		c := &rawConn{streams: map[uint32]*rawStream{}}
		st := &rawStream{c: c, s: s, state: streamOpen}
		for off := 0; off < len(wire); off += chunk {
			if err := c.feed(st, wire[off:min(off+chunk, len(wire))], 0); err != nil {
				t.Fatalf("chunk %d: %v", chunk, err)
			}
		}
		if fmt.Sprint(got) != "[0 1 2 3]" || len(st.pend) != 0 {
			t.Fatalf("chunks of %d bytes: got pushes %v, %d bytes pending; want [0 1 2 3], 0", chunk, got, len(st.pend))
		}
	}
	// A compressed message, or one over the limit, is refused.
	c := &rawConn{}
	for _, prefix := range [][]byte{{1, 0, 0, 0, 1, 0}, {0, 0xff, 0, 0, 0}} {
		if err := c.feed(&rawStream{c: c, s: &session{}, state: streamOpen}, prefix, 0); err == nil {
			t.Errorf("feed % x = nil; want an error", prefix)
		}
	}
}

func TestDecodeGrpcMessage(t *testing.T) {
	for in, want := range map[string]string{"": "", "plain": "plain", "a%20b%25": "a b%", "100%": "100%", "%zz": "%zz"} {
		if got := decodeGrpcMessage(in); got != want {
			t.Errorf("decodeGrpcMessage(%q) = %q; want %q", in, got, want)
		}
	}
}
