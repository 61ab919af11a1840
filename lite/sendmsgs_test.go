package lite

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// countingListener counts the writes to the connections it accepts: their
// Writes, and the flush shards' direct writes to their sockets (which it
// reads from the server's Stats, set by serveCounting).
type countingListener struct {
	net.Listener
	writes atomic.Int64
	srv    *Server
}

// allWrites is the number of writes so far, by either path.
func (l *countingListener) allWrites() int64 {
	return l.writes.Load() + int64(l.srv.Stats().FlushWrites)
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c, writes: &l.writes}, nil
}

type countingConn struct {
	net.Conn
	writes *atomic.Int64
}

func (c *countingConn) Write(b []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(b)
}

// SyscallConn exposes the socket as *net.TCPConn does, so that the flush
// shards write to it directly (flushInBackground, writeNow).
func (c *countingConn) SyscallConn() (syscall.RawConn, error) {
	return c.Conn.(syscall.Conn).SyscallConn()
}

// sendMsgsServer serves a chat method whose first message makes the
// server send msgs with one SendMsgs call, from a goroutine, then finish
// with OK. The call's error and the connection writes it made (counted from
// the call's start) arrive on the returned channels.
func sendMsgsServer(t *testing.T, msgs [][]byte) (string, <-chan error, <-chan int64) {
	t.Helper()
	s := NewServer(Options{})
	var cl *countingListener
	errc, writes := make(chan error, 1), make(chan int64, 1)
	s.HandleEvents(chatMethod, func(st *Stream) Events {
		return funcEvents{msg: func([]byte) {
			go func() {
				before := cl.allWrites()
				err := st.SendMsgs(msgs)
				writes <- cl.allWrites() - before
				errc <- err
				st.Finish(nil)
			}()
		}}
	})
	cl = serveCounting(t, s)
	return cl.Addr().String(), errc, writes
}

// serveCounting serves s on a fresh 127.0.0.1 listener that counts the
// writes of its connections; the server is stopped when the test ends.
func serveCounting(t *testing.T, s *Server) *countingListener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cl := &countingListener{Listener: l, srv: s}
	done := make(chan error, 1)
	go func() { done <- s.Serve(cl) }()
	t.Cleanup(func() {
		s.Stop()
		<-done
	})
	return cl
}

// sendAndRead has a sendMsgsServer send msgs to a chat stream with static
// 64 KiB windows, reads them (slowly if slow) and checks them, and returns
// the writes the SendMsgs call made.
func sendAndRead(t *testing.T, msgs [][]byte, slow bool) int64 {
	t.Helper()
	addr, errc, writes := sendMsgsServer(t, msgs)
	cc := dial(t, addr, grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cs := newChat(t, ctx, cc)
	sendString(t, cs, "go")
	recvSeq(t, cs, msgs, slow)
	if err := waitErr(t, errc, 5*time.Second); err != nil {
		t.Fatalf("SendMsgs: %v", err)
	}
	return <-writes
}

// seqMsg is a BytesValue of n bytes that starts with i.
func seqMsg(i, n int) []byte {
	b := make([]byte, n)
	binary.BigEndian.PutUint32(b, uint32(i))
	for j := 4; j < n; j++ {
		b[j] = byte(i + j)
	}
	return mustMarshal(wrapperspb.Bytes(b))
}

// recvSeq reads want messages and checks that they are msgs in order.
func recvSeq(t *testing.T, cs grpc.ClientStream, msgs [][]byte, slow bool) {
	t.Helper()
	for i, want := range msgs {
		if slow && i%40 == 0 {
			time.Sleep(20 * time.Millisecond) // let the windows fill
		}
		m := new(wrapperspb.BytesValue)
		if err := cs.RecvMsg(m); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if got := mustMarshal(m); string(got) != string(want) {
			t.Fatalf("message %d: %d bytes, seq %d; want %d bytes", i, len(m.Value), binary.BigEndian.Uint32(m.Value), len(want))
		}
	}
	if err := cs.RecvMsg(new(wrapperspb.BytesValue)); err != io.EOF {
		t.Fatalf("after the last message: %v, want io.EOF (status OK)", err)
	}
}

// TestSendMsgsInOrder: small and large messages, more than the 64 KiB
// windows hold, to a client that reads slowly, arrive whole and in order.
func TestSendMsgsInOrder(t *testing.T) {
	var msgs [][]byte
	for i := range 400 {
		n := 200 + (i*37)%3000
		if i%50 == 7 {
			n = 40 << 10 // larger than sendMsg sends only whole
		}
		msgs = append(msgs, seqMsg(i, n))
	}
	writes := sendAndRead(t, msgs, true)
	t.Logf("%d messages in %d writes", len(msgs), writes)
}

// TestSendMsgsOneWrite: small messages that fit the windows go out in one
// write (Send would make one per message).
func TestSendMsgsOneWrite(t *testing.T) {
	var msgs [][]byte
	for i := range 100 {
		msgs = append(msgs, seqMsg(i, 100))
	}
	writes := sendAndRead(t, msgs, false)
	// Headers and all 100 messages in one write; a write of the server's
	// own (a SETTINGS ack, a PING ack) may fall within the call.
	if n := writes; n > 2 {
		t.Fatalf("SendMsgs of 100 small messages made %d writes, want at most 2", n)
	}
}

// TestSendMsgsReleasedByFinish: a SendMsgs blocked on a client that reads
// nothing returns an error once the stream is finished.
func TestSendMsgsReleasedByFinish(t *testing.T) {
	var msgs [][]byte
	for i := range 200 {
		msgs = append(msgs, seqMsg(i, 1000)) // 200 KiB: more than the windows
	}
	s := NewServer(Options{})
	streams, errc := make(chan *Stream, 1), make(chan error, 1)
	s.HandleEvents(chatMethod, func(st *Stream) Events {
		streams <- st
		return funcEvents{msg: func([]byte) {
			go func() { errc <- st.SendMsgs(msgs) }()
		}}
	})
	cc := dial(t, startServer(t, s), grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cs := newChat(t, ctx, cc)
	sendString(t, cs, "go") // and read nothing
	st := <-streams
	select {
	case err := <-errc:
		t.Fatalf("SendMsgs returned %v while the client read nothing", err)
	case <-time.After(300 * time.Millisecond):
	}
	st.Finish(nil)
	if err := waitErr(t, errc, 5*time.Second); err == nil {
		t.Fatal("SendMsgs returned nil after Finish, with messages unsent")
	}
}
