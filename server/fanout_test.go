package server

import (
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"

	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
)

// pushEncodes counts how many times each push (by id) was marshalled by
// the gRPC codec on its way to clients.
var pushEncodes = struct {
	mu sync.Mutex
	n  map[string]int
}{n: map[string]int{}}

// countingCodec is the proto codec, counting pushes it marshals. It
// replaces the registered "proto" codec for this test binary only
// (codecs are registered in init); it changes no bytes.
type countingCodec struct{ encoding.CodecV2 }

func (c countingCodec) Marshal(v any) (mem.BufferSlice, error) {
	if m, ok := v.(*presencev1.ConnectResponse); ok && m.GetPush() != nil {
		pushEncodes.mu.Lock()
		pushEncodes.n[m.GetPush().GetId()]++
		pushEncodes.mu.Unlock()
	}
	return c.CodecV2.Marshal(v)
}

func init() { encoding.RegisterCodecV2(countingCodec{encoding.GetCodecV2(proto.Name)}) }

func encodesOf(pushID string) int {
	pushEncodes.mu.Lock()
	defer pushEncodes.mu.Unlock()
	return pushEncodes.n[pushID]
}

// TestPushEncodedOncePerContentType proves a push is marshalled once per
// content type in use, however many sessions it reaches: sessions on
// "application/grpc" share one encoding, sessions on
// "application/grpc+proto" another.
func TestPushEncodedOncePerContentType(t *testing.T) {
	ts := startServer(t, fastOptions())
	plain := ts.dial(t)
	typed := ts.dial(t, grpc.WithDefaultCallOptions(grpc.CallContentSubtype(proto.Name)))
	var alice, bob []*testClient
	for range 3 {
		c, _ := connect(t, plain, "alice")
		alice = append(alice, c)
		c, _ = connect(t, typed, "alice")
		alice = append(alice, c)
	}
	for range 2 {
		c, _ := connect(t, plain, "bob")
		bob = append(bob, c)
	}
	b := ts.backend(t)

	tests := []struct {
		name    string
		push    func() (id string, delivered uint32)
		clients []*testClient
		want    int
	}{
		{"unicast, one content type", func() (string, uint32) {
			r, err := sendTo(t, b, "bob", "to bob")
			if err != nil {
				t.Fatal(err)
			}
			return r.GetPushId(), r.GetDelivered()
		}, bob, 1},
		{"unicast, two content types", func() (string, uint32) {
			r, err := sendTo(t, b, "alice", "to alice")
			if err != nil {
				t.Fatal(err)
			}
			return r.GetPushId(), r.GetDelivered()
		}, alice, 2},
		{"broadcast, two content types", func() (string, uint32) {
			r := broadcast(t, b, "to all")
			return r.GetPushId(), r.GetDelivered()
		}, append(append([]*testClient(nil), alice...), bob...), 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, delivered := tt.push()
			if int(delivered) != len(tt.clients) {
				t.Fatalf("delivered = %d; want %d", delivered, len(tt.clients))
			}
			for _, c := range tt.clients {
				if p := c.nextPush(); p.GetId() != id {
					t.Fatalf("push %q; want %q", p.GetId(), id)
				}
			}
			if got := encodesOf(id); got != tt.want {
				t.Errorf("push to %d sessions encoded %d times; want %d (once per content type)", len(tt.clients), got, tt.want)
			}
		})
	}
}

// BenchmarkBroadcastFanout measures one broadcast to n in-process
// sessions: numbering, copying the registry, queueing to every session,
// and each session's writer handing the frame to its Conn (an in-memory
// fake, so no encoding and no sockets: the engine's own cost). An op ends
// when every session has sent the push.
func BenchmarkBroadcastFanout(b *testing.B) {
	for _, n := range []int{1_000, 10_000, 100_000} {
		b.Run(fmt.Sprintf("sessions=%d", n), func(b *testing.B) {
			srv, err := New(quietOptions())
			if err != nil {
				b.Fatal(err)
			}
			defer srv.Close()
			var sent sync.WaitGroup
			now := time.Now()
			for i := range n {
				s := newTestSession(srv, "u"+strconv.Itoa(i))
				s.connectedAt = now
				s.conn.(*fakeConn).onMsg = func(*Frame) { sent.Done() }
				srv.reg.add(s, DefaultMaxSessionsPerUid, ReplaceOldest, nil)
			}
			push := &presencev1.Push{Id: newID(), Scope: presencev1.PushScope_PUSH_SCOPE_BROADCAST,
				Payload: &presencev1.Push_Data{Data: textData("fan-out")}}
			b.ReportAllocs()
			for b.Loop() {
				sent.Add(n)
				if got := srv.broadcast(push); got != uint32(n) {
					b.Fatalf("broadcast delivered %d; want %d", got, n)
				}
				sent.Wait()
			}
			perDelivery := float64(b.Elapsed().Nanoseconds()) / float64(b.N) / float64(n)
			b.ReportMetric(perDelivery, "ns/delivery")
			b.ReportMetric(1e9/perDelivery, "deliveries/s")
		})
	}
}
