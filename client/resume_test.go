package client

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
)

// TestResumeAcrossReconnect proves the client resumes by itself: pushes
// sent while its connection is dead (frozen, then detected) reach OnPush
// after the reconnect, each once and in order, and the reconnect is not
// reported as Lost.
func TestResumeAcrossReconnect(t *testing.T) {
	d := startDaemon(t, "127.0.0.1:0", fastServer())
	px := startProxy(t, d.GRPCAddr())
	_, r := startClient(t, Config{Target: px.Addr(), UID: "mover"})
	connected(t, r)
	b := backend(t, d.GRPCAddr())
	sendText(t, b, "mover", "1")
	r.nextPush(t)

	px.Freeze() // the phone walks into a lift
	for i := 2; i <= 6; i++ {
		// The server still holds the old session: these are queued to it
		// and kept in history, never read by the client.
		if resp := sendText(t, b, "mover", fmt.Sprint(i)); resp.GetDelivered() != 1 {
			t.Fatalf("push %d delivered %d", i, resp.GetDelivered())
		}
	}
	r.skipTo(t, StateDisconnected)
	back := r.skipTo(t, StateConnected)
	if back.Lost || back.Identified.GetUidResume() != presencev1.ResumeResult_RESUME_RESULT_RESUMED || back.Identified.GetReplayed() != 5 {
		t.Fatalf("reconnect: Lost=%v Identified=%v; want RESUMED with 5 replayed", back.Lost, back.Identified)
	}
	sendText(t, b, "mover", "7")
	var got []string
	for len(got) < 6 {
		p := r.nextPush(t)
		got = append(got, p.Msg.GetData().GetStringValue())
	}
	if want := []string{"2", "3", "4", "5", "6", "7"}; !slices.Equal(got, want) {
		t.Fatalf("after the reconnect OnPush got %v; want %v", got, want)
	}
}

// TestAcksAutomatically proves the client acks a push that asks for it once
// OnPush has returned, so SendToUid reports the session as acked.
func TestAcksAutomatically(t *testing.T) {
	d := startDaemon(t, "127.0.0.1:0", fastServer())
	_, r := startClient(t, Config{Target: d.GRPCAddr(), UID: "acker"})
	sid := connected(t, r)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	resp, err := backend(t, d.GRPCAddr()).SendToUid(ctx, &presencev1.SendToUidRequest{Uid: "acker",
		Payload: &presencev1.SendToUidRequest_Data{Data: structpb.NewStringValue("ack")}, AckTimeout: durationpb.New(3 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(resp.GetAckedSessions(), []string{sid}) || len(resp.GetUnackedSessions()) != 0 {
		t.Fatalf("acked %v, unacked %v; want %s acked", resp.GetAckedSessions(), resp.GetUnackedSessions(), sid)
	}
	if p := r.nextPush(t); !p.Msg.GetAckRequired() {
		t.Fatalf("push %v", p.Msg)
	}
}

// TestAdvanceSkipsUnnumberedPushes proves a push with seq 0 (a cluster
// node cut off from NATS sends those) does not move the resume position,
// so a later resume still starts from the last numbered push.
func TestAdvanceSkipsUnnumberedPushes(t *testing.T) {
	s := &session{pos: &presencev1.ResumeFrom{}}
	uid := presencev1.PushScope_PUSH_SCOPE_UID
	s.advance(&presencev1.Push{Scope: uid, Seq: 7, Epoch: "E"})
	s.advance(&presencev1.Push{Scope: uid}) // unnumbered
	if s.pos.GetUidEpoch() != "E" || s.pos.GetUidSeq() != 7 {
		t.Fatalf("position %v after an unnumbered push; want E/7", s.pos)
	}
	s.advance(&presencev1.Push{Scope: uid, Seq: 9, Epoch: "E"})
	if s.pos.GetUidSeq() != 9 {
		t.Fatalf("position %v; want E/9", s.pos)
	}
}
