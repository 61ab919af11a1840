package server

import (
	"context"
	"fmt"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
)

// resetProxy forwards TCP from a loopback listener to a target; Reset
// aborts every forwarded connection with a TCP RST on both sides, as a
// phone changing networks does: no Goodbye, no FIN.
type resetProxy struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  []*net.TCPConn // guarded by mu
}

func startResetProxy(t *testing.T, target string) *resetProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &resetProxy{ln: ln, target: target}
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c.(*net.TCPConn), s.(*net.TCPConn))
			p.mu.Unlock()
			pipe := func(dst, src net.Conn) {
				buf := make([]byte, 32<<10)
				for {
					n, err := src.Read(buf)
					if n > 0 {
						if _, werr := dst.Write(buf[:n]); werr != nil {
							err = werr
						}
					}
					if err != nil {
						src.Close()
						dst.Close()
						return
					}
				}
			}
			p.wg.Go(func() { pipe(s, c) })
			p.wg.Go(func() { pipe(c, s) })
		}
	})
	t.Cleanup(func() { ln.Close(); p.Reset(); p.wg.Wait() })
	return p
}

// Reset aborts every connection with RST.
func (p *resetProxy) Reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.SetLinger(0)
		c.Close()
	}
	p.conns = nil
}

func identifyResume(uid string, r *presencev1.ResumeFrom) *presencev1.ConnectRequest {
	return &presencev1.ConnectRequest{Frame: &presencev1.ConnectRequest_Identify{Identify: &presencev1.Identify{Uid: uid, Resume: r}}}
}

// connectResume identifies with a resume position and returns Identified.
func connectResume(t *testing.T, cc *grpc.ClientConn, uid string, r *presencev1.ResumeFrom) (*testClient, *presencev1.Identified) {
	t.Helper()
	c := open(t, cc, false)
	c.send(identifyResume(uid, r))
	id := c.next().GetIdentified()
	if id == nil {
		t.Fatal("first frame is not Identified")
	}
	return c, id
}

// TestResumeAfterReset proves resume over real sockets: a client whose
// TCP connection is reset while uid pushes and broadcasts keep coming
// reconnects with its last positions and gets every missed push exactly
// once, in order (replays first, marked), then live pushes.
func TestResumeAfterReset(t *testing.T) {
	ts := startServer(t, fastOptions())
	b := ts.backend(t)
	proxy := startResetProxy(t, ts.addr)
	viaProxy, err := grpc.NewClient(proxy.ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer viaProxy.Close()

	c, id := connect(t, viaProxy, "alice")
	if id.GetUidEpoch() == "" || id.GetBroadcastEpoch() == "" || id.GetUidResume() != presencev1.ResumeResult_RESUME_RESULT_UNSPECIFIED {
		t.Fatalf("Identified = %v; want both epochs and no resume result", id)
	}
	pos := &presencev1.ResumeFrom{UidEpoch: id.GetUidEpoch(), UidSeq: id.GetUidSeq(), BroadcastEpoch: id.GetBroadcastEpoch(), BroadcastSeq: id.GetBroadcastSeq()}
	handle := func(p *presencev1.Push) {
		switch p.GetScope() {
		case presencev1.PushScope_PUSH_SCOPE_UID:
			pos.UidEpoch, pos.UidSeq = p.GetEpoch(), p.GetSeq()
		case presencev1.PushScope_PUSH_SCOPE_BROADCAST:
			pos.BroadcastEpoch, pos.BroadcastSeq = p.GetEpoch(), p.GetSeq()
		}
	}
	for i := 1; i <= 3; i++ {
		sendTo(t, b, "alice", fmt.Sprint("u", i))
		broadcast(t, b, fmt.Sprint("b", i))
	}
	for range 6 {
		handle(c.nextPush())
	}
	if pos.UidSeq != 3 || pos.BroadcastSeq != 3 {
		t.Fatalf("position %v after 3+3 pushes", pos)
	}

	// Pushes keep coming while the connection is reset.
	stop := make(chan struct{})
	var sent sync.WaitGroup
	sent.Go(func() {
		for i := 4; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			sendTo(t, b, "alice", fmt.Sprint("u", i))
			broadcast(t, b, fmt.Sprint("b", i))
			time.Sleep(2 * time.Millisecond)
		}
	})
	time.Sleep(20 * time.Millisecond)
	proxy.Reset()
	c.end(5 * time.Second)
	time.Sleep(20 * time.Millisecond)

	// Reconnect (directly) from the last pushes handled.
	c2, id2 := connectResume(t, ts.dial(t), "alice", pos)
	if id2.GetUidResume() != presencev1.ResumeResult_RESUME_RESULT_RESUMED || id2.GetBroadcastResume() != presencev1.ResumeResult_RESUME_RESULT_RESUMED {
		t.Fatalf("Identified = %v; want both sequences RESUMED", id2)
	}
	time.Sleep(20 * time.Millisecond)
	close(stop)
	sent.Wait()
	last, err := sendTo(t, b, "alice", "last")
	if err != nil {
		t.Fatal(err)
	}
	lastB := broadcast(t, b, "lastB")

	// Every uid seq after 3 and broadcast seq after 3 arrives once, in
	// order; the first Replayed ones are marked replay.
	wantUid, wantB := uint64(4), uint64(4)
	replays := 0
	for wantUid <= last.GetSeq() || wantB <= lastB.GetSeq() {
		p := c2.nextPush()
		if p.GetReplay() {
			replays++
		} else if replays != int(id2.GetReplayed()) {
			t.Fatalf("live push %v after %d replays; Identified promised %d", p, replays, id2.GetReplayed())
		}
		switch p.GetScope() {
		case presencev1.PushScope_PUSH_SCOPE_UID:
			if p.GetSeq() != wantUid {
				t.Fatalf("uid push seq %d; want seq %d", p.GetSeq(), wantUid)
			}
			wantUid++
		case presencev1.PushScope_PUSH_SCOPE_BROADCAST:
			if p.GetSeq() != wantB {
				t.Fatalf("broadcast seq %d; want %d", p.GetSeq(), wantB)
			}
			wantB++
		}
	}
	if replays == 0 {
		t.Fatal("nothing was replayed; the test did not cut the connection while pushes were coming")
	}
	c2.none(100 * time.Millisecond) // and no duplicates after
	t.Logf("replayed %d pushes; %d uid and %d broadcast pushes in all", replays, last.GetSeq(), lastB.GetSeq())
}

// TestResumeLost proves a gap larger than history, an unknown epoch and a
// position from the future are reported as LOST, never hidden, and that
// the client can carry on from Identified's position.
func TestResumeLost(t *testing.T) {
	o := fastOptions()
	o.HistorySize = 4
	ts := startServer(t, o)
	b := ts.backend(t)
	cc := ts.dial(t)
	keep, id := connect(t, cc, "alice") // keeps the uid's epoch alive
	epoch := id.GetUidEpoch()
	for i := range 10 {
		sendTo(t, b, "alice", fmt.Sprint(i))
		keep.nextPush()
	}
	for _, tc := range []struct {
		name string
		pos  *presencev1.ResumeFrom
		want presencev1.ResumeResult
		n    uint32
	}{
		{"within history", &presencev1.ResumeFrom{UidEpoch: epoch, UidSeq: 7}, presencev1.ResumeResult_RESUME_RESULT_RESUMED, 3},
		{"at the edge", &presencev1.ResumeFrom{UidEpoch: epoch, UidSeq: 6}, presencev1.ResumeResult_RESUME_RESULT_RESUMED, 4},
		{"gap larger than history", &presencev1.ResumeFrom{UidEpoch: epoch, UidSeq: 5}, presencev1.ResumeResult_RESUME_RESULT_LOST, 0},
		{"other epoch", &presencev1.ResumeFrom{UidEpoch: "OTHEREPOCH", UidSeq: 9}, presencev1.ResumeResult_RESUME_RESULT_LOST, 0},
		{"from the future", &presencev1.ResumeFrom{UidEpoch: epoch, UidSeq: 11}, presencev1.ResumeResult_RESUME_RESULT_LOST, 0},
		{"up to date", &presencev1.ResumeFrom{UidEpoch: epoch, UidSeq: 10}, presencev1.ResumeResult_RESUME_RESULT_RESUMED, 0},
	} {
		c, id := connectResume(t, cc, "alice", tc.pos)
		if id.GetUidResume() != tc.want || id.GetReplayed() != tc.n || id.GetUidSeq() != 10 || id.GetUidEpoch() != epoch {
			t.Errorf("%s: Identified = %v; want %v with %d replayed at seq 10", tc.name, id, tc.want, tc.n)
		}
		for i := range tc.n {
			if p := c.nextPush(); !p.GetReplay() || p.GetSeq() != 10-uint64(tc.n)+1+uint64(i) {
				t.Errorf("%s: replay %d = %v", tc.name, i, p)
			}
		}
		c.none(50 * time.Millisecond)
		c.stream.CloseSend()
		c.end(5 * time.Second)
	}
	// Broadcasts: a restarted server is another epoch.
	_, id = connectResume(t, cc, "bob", &presencev1.ResumeFrom{BroadcastEpoch: "OLDSERVER0", BroadcastSeq: 3})
	if id.GetBroadcastResume() != presencev1.ResumeResult_RESUME_RESULT_LOST || id.GetUidResume() != presencev1.ResumeResult_RESUME_RESULT_UNSPECIFIED {
		t.Errorf("broadcast resume from another epoch: %v; want LOST (and uid not asked)", id)
	}
}

// TestStoredPushes proves store_for: a push to an offline uid is stored
// (not 404), arrives on the uid's next connect, once, and one whose time
// passes is dropped and counted.
func TestStoredPushes(t *testing.T) {
	ts := startServer(t, fastOptions())
	b := ts.backend(t)
	cc := ts.dial(t)
	ctx := context.Background()
	store := func(text string, d time.Duration) *presencev1.SendToUidResponse {
		t.Helper()
		resp, err := b.SendToUid(ctx, &presencev1.SendToUidRequest{Uid: "carol", Payload: &presencev1.SendToUidRequest_Data{Data: textData(text)}, StoreFor: durationpb.New(d)})
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	if _, err := sendTo(t, b, "carol", "not stored"); status.Code(err) != codes.NotFound {
		t.Fatalf("offline without store_for: %v; want NotFound", err)
	}
	r1 := store("one", time.Hour)
	r2 := store("two", time.Hour)
	if !r1.GetStored() || r1.GetDelivered() != 0 || r2.GetSeq() != r1.GetSeq()+1 {
		t.Fatalf("stored answers %v, %v", r1, r2)
	}
	if u, _ := ts.srv.Counts(); u != 0 {
		t.Fatalf("%d uids online; a stored push must not make carol online", u)
	}
	c, id := connect(t, cc, "carol")
	if id.GetReplayed() != 2 {
		t.Fatalf("Identified.replayed = %d; want the 2 stored pushes", id.GetReplayed())
	}
	for _, want := range []string{"one", "two"} {
		if p := c.nextPush(); p.GetData().GetStringValue() != want || !p.GetReplay() {
			t.Fatalf("push %v; want stored %q", p, want)
		}
	}
	// Delivered once: a second session does not get them again.
	c2, id2 := connect(t, cc, "carol")
	if id2.GetReplayed() != 0 {
		t.Fatalf("second session replayed %d", id2.GetReplayed())
	}
	c2.none(50 * time.Millisecond)
	for _, x := range []*testClient{c, c2} {
		x.stream.CloseSend()
		x.end(5 * time.Second)
	}
	waitFor(t, 5*time.Second, "carol offline", func() bool { u, _ := ts.srv.Counts(); return u == 0 })

	// One expires before carol returns: dropped, counted, not delivered.
	store("short", 200*time.Millisecond)
	waitFor(t, 5*time.Second, "the stored push to expire", func() bool { return ts.srv.storedExpired.Load() == 1 })
	store("long", time.Hour)
	c3, id3 := connect(t, cc, "carol")
	if id3.GetReplayed() != 1 {
		t.Fatalf("replayed %d; want only the unexpired push", id3.GetReplayed())
	}
	if p := c3.nextPush(); p.GetData().GetStringValue() != "long" {
		t.Fatalf("push %v; want long", p)
	}
}

// TestAckedDelivery proves ack_timeout: the answer lists the sessions that
// acked and those that did not; without it nothing waits and no ack is
// asked.
func TestAckedDelivery(t *testing.T) {
	ts := startServer(t, fastOptions())
	b := ts.backend(t)
	cc := ts.dial(t)
	acker, idA := connect(t, cc, "dave")
	silent, idS := connect(t, cc, "dave")
	stop := make(chan struct{})
	var acking sync.WaitGroup
	acking.Go(func() {
		for {
			select {
			case f := <-acker.frames:
				if p := f.GetPush(); p.GetAckRequired() {
					acker.stream.Send(&presencev1.ConnectRequest{Frame: &presencev1.ConnectRequest_Ack{Ack: &presencev1.Ack{PushId: p.GetId()}}})
				}
			case <-stop:
				return
			}
		}
	})
	defer acking.Wait()
	defer close(stop)
	start := time.Now()
	resp, err := b.SendToUid(context.Background(), &presencev1.SendToUidRequest{Uid: "dave",
		Payload: &presencev1.SendToUidRequest_Data{Data: textData("ack me")}, AckTimeout: durationpb.New(500 * time.Millisecond)})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(resp.GetAckedSessions(), []string{idA.GetSessionId()}) || !slices.Equal(resp.GetUnackedSessions(), []string{idS.GetSessionId()}) {
		t.Fatalf("acked %v unacked %v; want %s and %s", resp.GetAckedSessions(), resp.GetUnackedSessions(), idA.GetSessionId(), idS.GetSessionId())
	}
	if waited := time.Since(start); waited < 400*time.Millisecond {
		t.Errorf("answered after %v with a session unacked; want the timeout", waited)
	}
	if p := silent.nextPush(); !p.GetAckRequired() {
		t.Fatalf("push %v does not ask for an ack", p)
	}

	// Only the acking session: the answer comes as soon as it acks.
	silent.stream.CloseSend()
	silent.end(5 * time.Second)
	resp, err = b.SendToUid(context.Background(), &presencev1.SendToUidRequest{Uid: "dave",
		Payload: &presencev1.SendToUidRequest_Data{Data: textData("fast")}, AckTimeout: durationpb.New(20 * time.Second)})
	if err != nil || len(resp.GetAckedSessions()) != 1 || len(resp.GetUnackedSessions()) != 0 {
		t.Fatalf("SendToUid = %v, %v; want acked by the one session", resp, err)
	}

	// Without ack_timeout: no ack asked, no lists.
	r, err := sendTo(t, b, "dave", "plain")
	if err != nil || r.GetAckedSessions() != nil || r.GetUnackedSessions() != nil {
		t.Fatalf("plain SendToUid = %v, %v", r, err)
	}
}

// TestIdempotentRetries proves a retry with the same key, even many at
// once, delivers once and returns the first answer.
func TestIdempotentRetries(t *testing.T) {
	ts := startServer(t, fastOptions())
	b := ts.backend(t)
	c, _ := connect(t, ts.dial(t), "erin")
	req := &presencev1.SendToUidRequest{Uid: "erin", Payload: &presencev1.SendToUidRequest_Data{Data: textData("once")}, IdempotencyKey: "order-42"}
	var wg sync.WaitGroup
	answers := make([]*presencev1.SendToUidResponse, 8)
	for i := range answers {
		wg.Go(func() {
			resp, err := b.SendToUid(context.Background(), req)
			if err != nil {
				t.Error(err)
			}
			answers[i] = resp
		})
	}
	wg.Wait()
	dups := 0
	for _, a := range answers {
		if a.GetPushId() != answers[0].GetPushId() || a.GetSeq() != 1 {
			t.Fatalf("answers differ: %v vs %v", a, answers[0])
		}
		if a.GetDuplicate() {
			dups++
		}
	}
	if dups != len(answers)-1 {
		t.Fatalf("%d duplicates; want %d", dups, len(answers)-1)
	}
	c.nextPush()
	c.none(100 * time.Millisecond)

	bReq := &presencev1.BroadcastRequest{Payload: &presencev1.BroadcastRequest_Data{Data: textData("all")}, IdempotencyKey: "news-1"}
	first, err := b.Broadcast(context.Background(), bReq)
	if err != nil {
		t.Fatal(err)
	}
	again, err := b.Broadcast(context.Background(), bReq)
	if err != nil || !again.GetDuplicate() || again.GetPushId() != first.GetPushId() {
		t.Fatalf("retry = %v, %v; want the first answer marked duplicate", again, err)
	}
	c.nextPush()
	c.none(100 * time.Millisecond)

	// A call that failed delivered nothing, so its retry may run.
	failed := &presencev1.SendToUidRequest{Uid: "frank", Payload: &presencev1.SendToUidRequest_Data{Data: textData("x")}, IdempotencyKey: "k"}
	if _, err := b.SendToUid(context.Background(), failed); status.Code(err) != codes.NotFound {
		t.Fatalf("offline: %v", err)
	}
	connect(t, ts.dial(t), "frank")
	if r, err := b.SendToUid(context.Background(), failed); err != nil || r.GetDuplicate() || r.GetDelivered() != 1 {
		t.Fatalf("retry after failure = %v, %v; want a fresh delivery", r, err)
	}
}

// TestSendToUids proves one call reaches many uids with a result each.
func TestSendToUids(t *testing.T) {
	ts := startServer(t, fastOptions())
	b := ts.backend(t)
	c, _ := connect(t, ts.dial(t), "gina")
	resp, err := b.SendToUids(context.Background(), &presencev1.SendToUidsRequest{
		Uids: []string{"gina", "hal", "ivy"}, Payload: &presencev1.SendToUidsRequest_Data{Data: textData("hi")},
	})
	if err != nil {
		t.Fatal(err)
	}
	res := resp.GetResults()
	if len(res) != 3 || res[0].GetUid() != "gina" || res[0].GetDelivered() != 1 || res[0].GetSeq() != 1 ||
		!res[1].GetOffline() || !res[2].GetOffline() || resp.GetDelivered() != 1 {
		t.Fatalf("results %v", resp)
	}
	if p := c.nextPush(); p.GetId() != resp.GetPushId() {
		t.Fatalf("push %v; want id %s", p, resp.GetPushId())
	}
	resp, err = b.SendToUids(context.Background(), &presencev1.SendToUidsRequest{
		Uids: []string{"hal"}, Payload: &presencev1.SendToUidsRequest_Data{Data: textData("later")}, StoreFor: durationpb.New(time.Minute),
	})
	if err != nil || !resp.GetResults()[0].GetStored() {
		t.Fatalf("store = %v, %v", resp, err)
	}
	// A store the history refuses is a result with its reason, not an
	// error for the whole call.
	o := fastOptions()
	o.HistorySize = 1
	small := startServer(t, o).backend(t)
	for i, wantStored := range []bool{true, false} {
		resp, err = small.SendToUids(context.Background(), &presencev1.SendToUidsRequest{
			Uids: []string{"kim"}, Payload: &presencev1.SendToUidsRequest_Data{Data: textData("x")}, StoreFor: durationpb.New(time.Minute),
		})
		r := resp.GetResults()[0]
		if err != nil || r.GetStored() != wantStored || r.GetOffline() == wantStored || (r.GetError() == "") == !wantStored {
			t.Fatalf("store %d = %v, %v; want stored %v (with a reason when not)", i, resp, err, wantStored)
		}
	}
	many := make([]string, MaxSendUids+1)
	for i := range many {
		many[i] = fmt.Sprint("u", i)
	}
	if _, err := b.SendToUids(context.Background(), &presencev1.SendToUidsRequest{Uids: many, Payload: &presencev1.SendToUidsRequest_Data{Data: textData("x")}}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("%d uids: %v; want InvalidArgument", len(many), err)
	}
}

// TestHistoryMemoryBound proves the history budget holds under load: many
// uids receiving pushes never take history past --history-max-bytes, and a
// push it could not keep makes a resume across it LOST, not a silent gap.
func TestHistoryMemoryBound(t *testing.T) {
	o := fastOptions()
	o.HistoryMaxBytes = 32 << 10
	ts := startServer(t, o)
	b := ts.backend(t)
	cc := ts.dial(t)
	ids := map[string]*presencev1.Identified{}
	for i := range 20 {
		uid := fmt.Sprint("m", i)
		_, id := connect(t, cc, uid) // its 1,024-frame buffer takes every push
		ids[uid] = id
	}
	payload := textData(string(make([]byte, 400)))
	peak := int64(0)
	for round := range 20 {
		for uid := range ids {
			if _, err := b.SendToUid(context.Background(), &presencev1.SendToUidRequest{Uid: uid, Payload: &presencev1.SendToUidRequest_Data{Data: payload}}); err != nil {
				t.Fatal(round, err)
			}
			used := ts.srv.hist.budget.used.Load()
			if used > o.HistoryMaxBytes {
				t.Fatalf("history holds %d bytes; the bound is %d", used, o.HistoryMaxBytes)
			}
			peak = max(peak, used)
		}
	}
	if peak < o.HistoryMaxBytes/2 {
		t.Fatalf("peak %d bytes: the test never came near the bound", peak)
	}
	// 400 pushes of ~700 bytes cannot all be kept: resuming from the
	// start must say LOST for at least one uid, and RESUMED only with an
	// exact replay.
	lost := 0
	for uid, id := range ids {
		c, got := connectResume(t, cc, uid, &presencev1.ResumeFrom{UidEpoch: id.GetUidEpoch(), UidSeq: 0})
		switch got.GetUidResume() {
		case presencev1.ResumeResult_RESUME_RESULT_LOST:
			lost++
		case presencev1.ResumeResult_RESUME_RESULT_RESUMED:
			if got.GetReplayed() != 20 {
				t.Fatalf("%s RESUMED with %d replayed; want all 20", uid, got.GetReplayed())
			}
		}
		c.stream.CloseSend()
	}
	if lost == 0 {
		t.Fatal("no resume reported LOST though history could not hold every push")
	}
	t.Logf("peak %d of %d bytes; %d of %d uids LOST", peak, o.HistoryMaxBytes, lost, len(ids))
}
