package server

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
)

func statusOf(err error) (*status.Status, bool) { return status.FromError(err) }

// TestSendToUidReachesExactlyItsSessions proves a push to a uid reaches
// every session of that uid and no other, that the reported delivered
// count equals the pushes received, and that seq counts per uid.
func TestSendToUidReachesExactlyItsSessions(t *testing.T) {
	ts := startServer(t, fastOptions())
	cc := ts.dial(t)
	b := ts.backend(t)
	alice1, _ := connect(t, cc, "alice")
	alice2, _ := connect(t, ts.dial(t), "alice")
	bob, _ := connect(t, cc, "bob")

	for i := 1; i <= 3; i++ {
		resp, err := sendTo(t, b, "alice", fmt.Sprint("hi ", i))
		if err != nil {
			t.Fatalf("SendToUid(alice): %v", err)
		}
		if resp.GetDelivered() != 2 || resp.GetSeq() != uint64(i) || resp.GetPushId() == "" {
			t.Fatalf("SendToUid(alice) = %v; want delivered 2, seq %d, an id", resp, i)
		}
		for _, c := range []*testClient{alice1, alice2} {
			p := c.nextPush()
			if p.GetId() != resp.GetPushId() || p.GetSeq() != uint64(i) || p.GetData().GetStringValue() != fmt.Sprint("hi ", i) ||
				p.GetScope() != presencev1.PushScope_PUSH_SCOPE_UID || p.GetEpoch() != resp.GetEpoch() ||
				!p.GetSentAt().AsTime().Equal(resp.GetSentAt().AsTime()) {
				t.Fatalf("push = %v; want the one SendToUid reported (%v)", p, resp)
			}
		}
	}
	// bob got nothing of alice's: his next push is his own, with seq 1.
	resp, err := sendTo(t, b, "bob", "for bob")
	if err != nil || resp.GetDelivered() != 1 || resp.GetSeq() != 1 {
		t.Fatalf("SendToUid(bob) = %v, %v; want delivered 1 seq 1", resp, err)
	}
	if p := bob.nextPush(); p.GetData().GetStringValue() != "for bob" {
		t.Fatalf("bob's first push = %v; want only his own", p)
	}
	alice1.none(100 * time.Millisecond)
}

// TestSendToUidOffline proves a uid with no live session is NOT_FOUND,
// including a uid whose only session has just ended.
func TestSendToUidOffline(t *testing.T) {
	ts := startServer(t, fastOptions())
	b := ts.backend(t)
	if _, err := sendTo(t, b, "nobody", "x"); status.Code(err) != codes.NotFound {
		t.Fatalf("SendToUid(nobody) err = %v; want NotFound", err)
	}
	c, _ := connect(t, ts.dial(t), "carol")
	c.stream.CloseSend()
	c.wantEnd(5*time.Second, codes.OK, 0)
	waitFor(t, 5*time.Second, "carol unregistered", func() bool { _, n := ts.srv.Counts(); return n == 0 })
	_, err := sendTo(t, b, "carol", "x")
	if status.Code(err) != codes.NotFound || !strings.Contains(status.Convert(err).Message(), "no live session") {
		t.Fatalf("SendToUid(carol) after she left: %v; want NotFound saying no live session", err)
	}
}

// TestBadPushRequests proves bad pushes are INVALID_ARGUMENT with a message
// that says what to fix.
func TestBadPushRequests(t *testing.T) {
	opts := fastOptions()
	opts.MaxPayloadBytes = 100
	ts := startServer(t, opts)
	b := ts.backend(t)
	connect(t, ts.dial(t), "dave")
	ctx := context.Background()
	tests := []struct {
		name string
		req  *presencev1.SendToUidRequest
		msg  string
	}{
		{"no payload", &presencev1.SendToUidRequest{Uid: "dave"}, "payload missing"},
		{"bad uid", &presencev1.SendToUidRequest{Uid: "da ve", Payload: &presencev1.SendToUidRequest_Data{Data: textData("x")}}, "uid:"},
		{"empty uid", &presencev1.SendToUidRequest{Payload: &presencev1.SendToUidRequest_Data{Data: textData("x")}}, "uid: empty"},
		{"payload too big", &presencev1.SendToUidRequest{Uid: "dave", Payload: &presencev1.SendToUidRequest_Data{Data: textData(strings.Repeat("x", 200))}}, "the limit is 100 bytes"},
		{"binary too big", &presencev1.SendToUidRequest{Uid: "dave", Payload: &presencev1.SendToUidRequest_Binary{Binary: &presencev1.BinaryPayload{Data: make([]byte, 101)}}}, "the limit is 100 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := b.SendToUid(ctx, tt.req)
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), tt.msg) {
				t.Fatalf("SendToUid = %v; want InvalidArgument containing %q", err, tt.msg)
			}
		})
	}
	if _, err := b.Broadcast(ctx, &presencev1.BroadcastRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("Broadcast with no payload = %v; want InvalidArgument", err)
	}
}

// TestBroadcastReachesEverySession proves a broadcast reaches every
// identified session once, in seq order, and delivered counts them; a
// stream that has not identified gets nothing.
func TestBroadcastReachesEverySession(t *testing.T) {
	ts := startServer(t, fastOptions())
	b := ts.backend(t)
	if resp := broadcast(t, b, "nobody home"); resp.GetDelivered() != 0 || resp.GetSeq() != 1 {
		t.Fatalf("Broadcast to nobody = %v; want delivered 0 seq 1", resp)
	}
	var clients []*testClient
	for i := range 20 {
		c, _ := connect(t, ts.dial(t), fmt.Sprintf("u%d", i%7))
		clients = append(clients, c)
	}
	anon := open(t, ts.dial(t), false) // never identifies
	for round := 2; round <= 4; round++ {
		resp := broadcast(t, b, fmt.Sprint("round ", round))
		if resp.GetDelivered() != uint32(len(clients)) || resp.GetSeq() != uint64(round) {
			t.Fatalf("Broadcast = %v; want delivered %d seq %d", resp, len(clients), round)
		}
	}
	for i, c := range clients {
		for round := 2; round <= 4; round++ {
			p := c.nextPush()
			if p.GetSeq() != uint64(round) || p.GetScope() != presencev1.PushScope_PUSH_SCOPE_BROADCAST || p.GetData().GetStringValue() != fmt.Sprint("round ", round) {
				t.Fatalf("client %d push = %v; want broadcast round %d", i, p, round)
			}
		}
	}
	anon.none(100 * time.Millisecond)
}

// TestConcurrentPushesKeepSeqOrder proves concurrent SendToUid and
// Broadcast calls reach every session in seq order with no gaps.
func TestConcurrentPushesKeepSeqOrder(t *testing.T) {
	ts := startServer(t, fastOptions())
	b := ts.backend(t)
	c1, _ := connect(t, ts.dial(t), "erin")
	c2, _ := connect(t, ts.dial(t), "erin")
	const perWorker, workers = 25, 4
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				if _, err := sendTo(t, b, "erin", fmt.Sprint(w, i)); err != nil {
					t.Errorf("SendToUid: %v", err)
				}
				broadcast(t, b, "all")
			}
		})
	}
	wg.Wait()
	for _, c := range []*testClient{c1, c2} {
		var uidSeq, bSeq uint64
		for range 2 * perWorker * workers {
			p := c.nextPush()
			switch p.GetScope() {
			case presencev1.PushScope_PUSH_SCOPE_UID:
				if p.GetSeq() != uidSeq+1 {
					t.Fatalf("uid seq %d after %d", p.GetSeq(), uidSeq)
				}
				uidSeq = p.GetSeq()
			default:
				if p.GetSeq() != bSeq+1 {
					t.Fatalf("broadcast seq %d after %d", p.GetSeq(), bSeq)
				}
				bSeq = p.GetSeq()
			}
		}
	}
}

// TestSlowConsumerIsEnded proves a client that stops reading (so HTTP/2
// flow control really fills) is ended as a slow consumer with
// RESOURCE_EXHAUSTED while another session keeps receiving every push.
func TestSlowConsumerIsEnded(t *testing.T) {
	opts := fastOptions()
	opts.QueueMaxMessages = 32
	ended := make(chan *EndError, 4)
	ts := startServer(t, opts)
	ts.srv.hooks.ended = func(s *session, e *EndError) {
		if s != nil && s.uid == "stalled" {
			ended <- e
		}
	}
	// A small fixed window (no BDP growth) so the server's writes block
	// once 64 KiB are in flight.
	stalledConn := ts.dial(t, grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	stalled := open(t, stalledConn, true)
	stalled.send(identify("stalled"))
	good, _ := connect(t, ts.dial(t), "good")
	b := ts.backend(t)

	payload := strings.Repeat("x", 4<<10)
	sent := 0
	deadline := time.Now().Add(10 * time.Second)
	var end *EndError
	for end == nil && time.Now().Before(deadline) {
		resp := broadcast(t, b, payload)
		sent++
		if p := good.nextPush(); p.GetSeq() != resp.GetSeq() {
			t.Fatalf("good client got seq %d; want %d", p.GetSeq(), resp.GetSeq())
		}
		select {
		case end = <-ended:
		default:
		}
	}
	if end == nil {
		t.Fatalf("stalled client not ended after %d pushes of 4 KiB", sent)
	}
	if end.Reason != ReasonSlowConsumer {
		t.Fatalf("stalled client ended with %v; want slow_consumer", end.Reason)
	}
	// Once it reads again, the stalled client sees RESOURCE_EXHAUSTED.
	stalled.startReading()
	_, err := stalled.end(5 * time.Second)
	if status.Code(err) != codes.ResourceExhausted {
		t.Errorf("stalled stream status = %v; want ResourceExhausted", err)
	}
	// The good client still receives.
	resp := broadcast(t, b, "after")
	if resp.GetDelivered() != 1 {
		t.Errorf("Broadcast after eviction delivered %d; want 1", resp.GetDelivered())
	}
	if p := good.nextPush(); p.GetData().GetStringValue() != "after" {
		t.Errorf("good client got %v; want the last push", p)
	}
	t.Logf("stalled client ended after %d broadcasts of 4 KiB", sent)
}
