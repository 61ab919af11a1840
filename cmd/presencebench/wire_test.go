package main

import (
	"context"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
)

// TestDecodeFrame proves the protowire decoder reads what proto.Marshal
// writes for every frame kind the bench uses.
func TestDecodeFrame(t *testing.T) {
	sent := time.Unix(1700000000, 123456789)
	data, err := structpb.NewValue(map[string]any{"t": "1700000000123000000", "i": "42", "p": "xxxxxxxx"})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		msg  *presencev1.ConnectResponse
		want frameInfo
	}{
		{"identified", &presencev1.ConnectResponse{Frame: &presencev1.ConnectResponse_Identified{Identified: &presencev1.Identified{
			SessionId: "s", Uid: "u", HeartbeatInterval: durationpb.New(1500 * time.Millisecond), HeartbeatTimeout: durationpb.New(40 * time.Second),
		}}}, frameInfo{kind: kindIdentified, hbInterval: 1500 * time.Millisecond, hbTimeout: 40 * time.Second}},
		{"pong", &presencev1.ConnectResponse{Frame: &presencev1.ConnectResponse_Pong{Pong: &presencev1.Pong{Seq: 7, ServerTime: timestamppb.New(sent)}}},
			frameInfo{kind: kindPong}},
		{"push", &presencev1.ConnectResponse{Frame: &presencev1.ConnectResponse_Push{Push: &presencev1.Push{
			Id: "p", Scope: presencev1.PushScope_PUSH_SCOPE_BROADCAST, Seq: 99, Epoch: "e", SentAt: timestamppb.New(sent),
			Payload: &presencev1.Push_Data{Data: data},
		}}}, frameInfo{kind: kindPush, seq: 99, sentAt: sent.UnixNano(), t: 1700000000123000000, idx: 42}},
		{"push without bench keys", &presencev1.ConnectResponse{Frame: &presencev1.ConnectResponse_Push{Push: &presencev1.Push{
			Seq: 1, Payload: &presencev1.Push_Data{Data: structpb.NewNumberValue(3)},
		}}}, frameInfo{kind: kindPush, seq: 1, idx: -1}},
		{"goodbye", &presencev1.ConnectResponse{Frame: &presencev1.ConnectResponse_Goodbye{Goodbye: &presencev1.Goodbye{
			Reason: presencev1.GoodbyeReason_GOODBYE_REASON_SLOW_CONSUMER, Message: "m",
		}}}, frameInfo{kind: kindGoodbye, goodbye: presencev1.GoodbyeReason_GOODBYE_REASON_SLOW_CONSUMER}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b, err := proto.Marshal(c.msg)
			if err != nil {
				t.Fatal(err)
			}
			var got frameInfo
			if err := decodeFrame(b, &got); err != nil {
				t.Fatalf("decodeFrame: %v", err)
			}
			if got.kind != c.want.kind {
				t.Fatalf("kind = %v; want %v", got.kind, c.want.kind)
			}
			switch got.kind {
			case kindIdentified:
				if got.hbInterval != c.want.hbInterval || got.hbTimeout != c.want.hbTimeout {
					t.Errorf("heartbeat = %v/%v; want %v/%v", got.hbInterval, got.hbTimeout, c.want.hbInterval, c.want.hbTimeout)
				}
			case kindPush:
				if got.seq != c.want.seq || got.sentAt != c.want.sentAt || got.t != c.want.t || got.idx != c.want.idx {
					t.Errorf("push = seq %d sentAt %d t %d idx %d; want seq %d sentAt %d t %d idx %d",
						got.seq, got.sentAt, got.t, got.idx, c.want.seq, c.want.sentAt, c.want.t, c.want.idx)
				}
			case kindGoodbye:
				if got.goodbye != c.want.goodbye {
					t.Errorf("goodbye = %v; want %v", got.goodbye, c.want.goodbye)
				}
			}
		})
	}
	if err := decodeFrame([]byte{0x1a, 0x05, 0x01}, new(frameInfo)); err == nil {
		t.Error("decodeFrame(truncated) = nil; want an error")
	}
}

// TestLoopbackOnly proves that addresses outside 127.0.0.0/8 are refused
// before anything is dialled.
func TestLoopbackOnly(t *testing.T) {
	ctx := context.Background()
	for _, bad := range []string{"10.0.0.1:9090", "8.8.8.8:53", "[::1]:9090", "0.0.0.0:9090", "192.168.1.1:80", "127.0.0.1:http"} {
		if got, err := loopbackAddr(ctx, "grpc-addr", bad); err == nil {
			t.Errorf("loopbackAddr(%q) = %q, nil; want an error", bad, got)
		}
	}
	for in, want := range map[string]string{"127.0.0.1:9090": "127.0.0.1:9090", ":19090": "127.0.0.1:19090", "127.1.2.3:80": "127.1.2.3:80", "localhost:19090": "127.0.0.1:19090"} {
		if got, err := loopbackAddr(ctx, "grpc-addr", in); err != nil || got != want {
			t.Errorf("loopbackAddr(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := loopbackDialer(nil)(ctx, "10.1.1.1:80"); err == nil {
		t.Error("dialer reached 10.1.1.1; want a refusal")
	}
}

// TestSummarize checks exact quantiles on a known set.
func TestSummarize(t *testing.T) {
	ns := make([]int64, 1000)
	for i := range ns {
		ns[len(ns)-1-i] = int64(i+1) * 1e6 // 1..1000 ms, reversed
	}
	l := summarize(ns)
	if l.P50Ms != 500 || l.P99Ms != 990 || l.P999 != 999 || l.MaxMs != 1000 || l.MinMs != 1 {
		t.Errorf("summarize = %+v; want p50 500, p99 990, p999 999, max 1000, min 1", l)
	}
}
