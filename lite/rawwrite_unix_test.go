//go:build unix

package lite

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"
)

// TestWriteNowAllocatesNothing: a flush shard's write to a socket makes
// no heap allocation (writeNow made 3 per write when it handed
// RawConn.Write a closure over its locals), and the bytes arrive.
func TestWriteNowAllocatesNothing(t *testing.T) {
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
	defer nc.Close()
	peer, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	defer peer.Close()
	rc := rawConnOf(nc)
	if rc == nil {
		t.Fatal("no raw socket for a *net.TCPConn")
	}

	var w rawWriter
	msg := bytes.Repeat([]byte("0123456789abcdef"), 4)
	writes := 0
	var failed error
	allocs := testing.AllocsPerRun(100, func() { // 101 writes of 64 B: the socket's buffer holds them
		n, err := w.writeNow(rc, msg)
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
