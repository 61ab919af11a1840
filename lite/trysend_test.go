package lite

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"runtime"
	"strconv"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// namedStream is a server stream and the name its client sent first.
type namedStream struct {
	name int
	st   *Stream
}

// helloServer serves a chat method whose first message, a number, makes
// the server Send a 10-byte hello and hand the stream on, named by that
// number. Before the hello it tries TrySend, which must refuse (the
// response headers are not out); what it returned goes on refused.
func helloServer(t *testing.T) (*countingListener, <-chan namedStream, <-chan error) {
	t.Helper()
	s := NewServer(Options{})
	streams, refused := make(chan namedStream, 100), make(chan error, 100)
	s.HandleEvents(chatMethod, func(st *Stream) Events {
		return funcEvents{msg: func(b []byte) {
			var m wrapperspb.StringValue
			if err := proto.Unmarshal(b, &m); err != nil {
				st.Finish(err)
				return
			}
			name, _ := strconv.Atoi(m.Value)
			go func() {
				ok, err := st.TrySend(seqMsg(0, 10))
				if ok {
					err = errTrySendTooEarly
				}
				refused <- err
				if err := st.Send(seqMsg(0, 10)); err == nil {
					streams <- namedStream{name, st}
				}
			}()
		}}
	})
	return serveCounting(t, s), streams, refused
}

var errTrySendTooEarly = errors.New("TrySend took a message before the response headers were sent")

// openHellos opens n chat streams on cc, each named by its index, reads
// their hellos, and returns the client streams and the server's streams by
// name.
func openHellos(t *testing.T, ctx context.Context, cc *grpc.ClientConn, n int, streams <-chan namedStream, refused <-chan error) ([]grpc.ClientStream, []*Stream) {
	t.Helper()
	css, sts := make([]grpc.ClientStream, n), make([]*Stream, n)
	for i := range css {
		css[i] = newChat(t, ctx, cc)
		sendString(t, css[i], strconv.Itoa(i))
		if err := waitErr(t, refused, 5*time.Second); err != nil {
			t.Fatalf("TrySend before the headers: %v, want false and no error", err)
		}
		recvSeqOnly(t, css[i], seqMsg(0, 10))
	}
	for range n {
		select {
		case ns := <-streams:
			sts[ns.name] = ns.st
		case <-time.After(5 * time.Second):
			t.Fatal("timed out waiting for the server's streams")
		}
	}
	return css, sts
}

// recvSeqOnly reads one message and checks it is want.
func recvSeqOnly(t *testing.T, cs grpc.ClientStream, want []byte) {
	t.Helper()
	m := new(wrapperspb.BytesValue)
	if err := cs.RecvMsg(m); err != nil {
		t.Fatalf("RecvMsg: %v", err)
	}
	if got := mustMarshal(m); string(got) != string(want) {
		t.Fatalf("got a %d-byte message, want %d bytes", len(m.Value), len(want))
	}
}

// TestTrySendManyStreamsFewWrites: a message to each of 50 streams of one
// connection, the way a broadcast hands them over, arrives on each stream,
// in far fewer writes than messages (Send makes at least one write per
// message when nothing else is sending).
func TestTrySendManyStreamsFewWrites(t *testing.T) {
	const n = 50
	cl, streams, refused := helloServer(t)
	// Static windows: no BDP pings, whose acks the server would write.
	cc := dial(t, cl.Addr().String(), grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	css, sts := openHellos(t, ctx, cc, n, streams, refused)

	// One processor while the messages are handed over, so that the flush
	// shard's goroutine cannot run until the loop is done, as on a busy
	// server where a broadcast's loop outpaces the write. With two, on a
	// loaded CI machine under -race, the shard wrote between TrySends and
	// the count depended on the scheduler (18 writes, once).
	procs := runtime.GOMAXPROCS(1)
	before := cl.allWrites()
	for i, st := range sts {
		ok, err := st.TrySend(seqMsg(i+1, 100))
		if !ok || err != nil {
			runtime.GOMAXPROCS(procs)
			t.Fatalf("TrySend to stream %d: %v, %v; want true (its windows are open)", i, ok, err)
		}
	}
	runtime.GOMAXPROCS(procs)
	for i, cs := range css {
		recvSeqOnly(t, cs, seqMsg(i+1, 100))
	}
	writes := cl.allWrites() - before
	t.Logf("%d messages to %d streams in %d writes", n, n, writes)
	if writes > n/4 {
		t.Fatalf("%d messages to the streams of one connection took %d writes, want at most %d", n, writes, n/4)
	}
}

// TestTrySendRefusesWhatMustWait: to a client that reads nothing, TrySend
// takes messages until the windows are full and then refuses without
// blocking; Send, which waits, carries the rest once the client reads, and
// every message arrives in order. Once the stream is finished TrySend
// fails.
func TestTrySendRefusesWhatMustWait(t *testing.T) {
	cl, streams, refused := helloServer(t)
	cc := dial(t, cl.Addr().String(), grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	css, sts := openHellos(t, ctx, cc, 1, streams, refused)
	cs, st := css[0], sts[0]

	var msgs [][]byte
	for i := range 200 { // 200 KiB: more than the 64 KiB windows
		msg := seqMsg(i+1, 1000)
		msgs = append(msgs, msg)
		ok, err := st.TrySend(msg)
		if err != nil {
			t.Fatalf("TrySend %d: %v", i, err)
		}
		if !ok {
			msgs = msgs[:i]
			break
		}
	}
	took := len(msgs)
	t.Logf("TrySend took %d 1000-byte messages before refusing", took)
	if took < 32 || took == 200 {
		t.Fatalf("TrySend took %d messages of 1000 bytes with 64 KiB windows; want the windows' worth, about 65", took)
	}
	for i := took; i < took+20; i++ {
		msgs = append(msgs, seqMsg(i+1, 1000))
	}
	errc := make(chan error, 1)
	go func() {
		for _, msg := range msgs[took:] {
			if err := st.Send(msg); err != nil {
				errc <- err
				return
			}
		}
		st.Finish(nil)
		errc <- nil
	}()
	recvSeq(t, cs, msgs, false)
	if err := waitErr(t, errc, 5*time.Second); err != nil {
		t.Fatalf("Send: %v", err)
	}
	if ok, err := st.TrySend(seqMsg(1, 10)); ok || err == nil {
		t.Fatalf("TrySend after Finish: %v, %v; want false and an error", ok, err)
	}
}

// TestTrySendFullSocket: TrySend to a client whose TCP receive buffer is
// full (it stops reading at the socket; its HTTP/2 windows are huge, so
// only the socket holds the messages back). The shard's non-blocking
// write finds the socket full and the flush goes on on a goroutine of its
// own; once the client reads, every message arrives, whole and in order.
// Later, with that goroutine's write deadline long past, TrySend still
// delivers.
func TestTrySendFullSocket(t *testing.T) {
	const writeTimeout = time.Second
	s := NewServer(Options{WriteTimeout: writeTimeout})
	streams := make(chan *Stream, 1)
	s.HandleEvents(chatMethod, func(st *Stream) Events {
		return funcEvents{msg: func([]byte) {
			go func() {
				if err := st.Send(seqMsg(0, 10)); err == nil {
					streams <- st
				}
			}()
		}}
	})
	rc := dialRaw(t, startServer(t, s))
	rc.nc.(*net.TCPConn).SetReadBuffer(64 << 10)
	if _, err := rc.nc.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	rc.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 30})
	rc.fr.WriteWindowUpdate(0, 1<<30)
	rc.readUntil(5*time.Second, func(f rawFrame) bool { return f.typ == http2.FrameSettings && !f.flags.Has(http2.FlagSettingsAck) })
	rc.fr.WriteSettingsAck()
	rc.headers(1, requestBlock(chatMethod), false)
	rc.fr.WriteData(1, false, []byte{0, 0, 0, 0, 0})

	// msgs reads gRPC messages off stream 1's DATA frames.
	var data []byte
	next := func() []byte {
		t.Helper()
		rc.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		for len(data) < 5 || len(data) < 5+int(binary.BigEndian.Uint32(data[1:5])) {
			f, err := rc.fr.ReadFrame()
			if err != nil {
				t.Fatalf("reading DATA: %v", err)
			}
			if d, ok := f.(*http2.DataFrame); ok && d.StreamID == 1 {
				data = append(data, d.Data()...)
			}
		}
		n := 5 + int(binary.BigEndian.Uint32(data[1:5]))
		m := data[5:n:n]
		data = data[n:]
		return m
	}
	if got := next(); !bytes.Equal(got, seqMsg(0, 10)) {
		t.Fatalf("hello: got %d bytes, want the 10-byte hello", len(got))
	}
	var st *Stream
	select {
	case st = <-streams:
	case <-time.After(5 * time.Second):
		t.Fatal("timed out waiting for the server's stream")
	}

	var sent [][]byte
	for deadline := time.Now().Add(5 * time.Second); len(sent) < 4000 && s.Stats().FlushHandoffs == 0 && time.Now().Before(deadline); {
		msg := seqMsg(len(sent)+1, 16000)
		ok, err := st.TrySend(msg)
		if err != nil {
			t.Fatalf("TrySend %d: %v", len(sent)+1, err)
		}
		if !ok { // the connection's queue is full while a write is under way
			time.Sleep(time.Millisecond)
			continue
		}
		sent = append(sent, msg)
	}
	if st := s.Stats(); st.FlushHandoffs == 0 || st.Conns != 1 {
		t.Fatalf("%d messages of 16 kB queued: Stats = %+v; want a flush handed off, on 1 connection", len(sent), st)
	}
	t.Logf("the socket was full after %d messages of 16 kB", len(sent))
	for i, want := range sent {
		if got := next(); !bytes.Equal(got, want) {
			t.Fatalf("message %d of %d: got %d bytes that differ from the %d sent", i+1, len(sent), len(got), len(want))
		}
	}

	time.Sleep(writeTimeout + 200*time.Millisecond)
	last := seqMsg(len(sent)+1, 100)
	if ok, err := st.TrySend(last); !ok || err != nil {
		t.Fatalf("TrySend after the deadline passed: %v, %v; want true", ok, err)
	}
	if got := next(); !bytes.Equal(got, last) {
		t.Fatalf("after the deadline passed: got %d bytes, want the %d sent", len(got), len(last))
	}
	rc.alive()
}
