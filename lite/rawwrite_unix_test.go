//go:build unix

package lite

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// socketPair returns a lite conn around the client end of a loopback TCP
// connection, set up as newConn does for writeNow, and the server end.
func socketPair(t *testing.T) (*conn, net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	nc, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	peer, ok := <-accepted
	if !ok {
		nc.Close()
		t.Fatal("accept failed")
	}
	c := &conn{nc: nc, fd: socketFD(nc)}
	t.Cleanup(func() { c.closeConn(); peer.Close() })
	if c.fd < 0 {
		t.Fatal("no socket descriptor for a *net.TCPConn")
	}
	return c, peer
}

// TestWriteNowAllocatesNothing: a flush shard's write to a socket makes
// no heap allocation (3 per write when it went through RawConn.Write with
// a closure over its locals), and the bytes arrive.
func TestWriteNowAllocatesNothing(t *testing.T) {
	c, peer := socketPair(t)
	msg := bytes.Repeat([]byte("0123456789abcdef"), 4)
	writes := 0
	var failed error
	allocs := testing.AllocsPerRun(100, func() { // 101 writes of 64 B: the socket's buffer holds them
		n, err := c.writeNow(msg)
		if n != len(msg) || err != nil {
			failed = err
		}
		writes++
	})
	if failed != nil {
		t.Fatalf("writeNow: %v", failed)
	}
	if allocs != 0 {
		t.Errorf("writeNow made %v allocations per write; want 0", allocs)
	}
	got := make([]byte, writes*len(msg))
	peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(peer, got); err != nil {
		t.Fatalf("reading the %d writes: %v", writes, err)
	}
	if want := bytes.Repeat(msg, writes); !bytes.Equal(got, want) {
		t.Error("the bytes that arrived are not the bytes written")
	}
}

// TestWriteNowAfterClose: once closeConn has returned, writeNow writes
// nothing and says the connection is closed, while writes race with the
// close: a write to the descriptor number after its close could reach
// whatever connection the number was given to next.
func TestWriteNowAfterClose(t *testing.T) {
	c, peer := socketPair(t)
	msg := []byte("x")
	stop, wrote := make(chan struct{}), make(chan int)
	go func() { // a flush shard, writing until told to stop
		n := 0
		for {
			select {
			case <-stop:
				wrote <- n
				return
			default:
			}
			if k, err := c.writeNow(msg); err == nil {
				n += k
			}
		}
	}()
	time.Sleep(10 * time.Millisecond)
	c.closeConn()
	if n, err := c.writeNow(msg); n != 0 || !errors.Is(err, net.ErrClosed) {
		t.Errorf("writeNow after closeConn = %d, %v; want 0, net.ErrClosed", n, err)
	}
	close(stop)
	n := <-wrote
	// The peer reads exactly what the writes reported, then EOF.
	peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(peer)
	if err != nil {
		t.Fatalf("reading: %v", err)
	}
	if len(got) != n || n == 0 {
		t.Errorf("the peer read %d bytes; the writes reported %d (want equal, and some)", len(got), n)
	}
}
