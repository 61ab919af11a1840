package client

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
)

// pingCounter forwards one TCP connection to a target and counts the
// HTTP/2 PING frames (not acks) the client sends.
type pingCounter struct {
	ln    net.Listener
	pings atomic.Int64
	wg    sync.WaitGroup
}

func startPingCounter(t *testing.T, target string) *pingCounter {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pc := &pingCounter{ln: ln}
	pc.wg.Go(func() {
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
			pc.wg.Go(func() { io.Copy(c, s); c.Close() })
			pc.wg.Go(func() { pc.scan(io.TeeReader(c, s)); s.Close() })
		}
	})
	t.Cleanup(func() { ln.Close(); pc.wg.Wait() })
	return pc
}

// scan reads the client's side: the 24-byte preface, then frames (9-byte
// header: length, type, flags, stream).
func (pc *pingCounter) scan(r io.Reader) {
	if _, err := io.CopyN(io.Discard, r, 24); err != nil {
		return
	}
	var h [9]byte
	for {
		if _, err := io.ReadFull(r, h[:]); err != nil {
			return
		}
		n := int64(h[0])<<16 | int64(h[1])<<8 | int64(h[2])
		if h[3] == 0x6 && h[4]&0x1 == 0 {
			pc.pings.Add(1)
		}
		if _, err := io.CopyN(io.Discard, r, n); err != nil {
			return
		}
	}
}

// TestNoPingPerPush proves the client's default windows turn off grpc-go's
// BDP estimation: ten pushes cost the server no PING from the client. A
// plain grpc-go client (dynamic windows) draws pings for the same pushes,
// so the count is a real measure.
func TestNoPingPerPush(t *testing.T) {
	d := startDaemon(t, "127.0.0.1:0", fastServer())
	b := backend(t, d.GRPCAddr())

	pc := startPingCounter(t, d.GRPCAddr())
	_, r := startClient(t, Config{Target: pc.ln.Addr().String(), UID: "sdk", Backoff: fastBackoff})
	connected(t, r)
	for i := range 10 {
		sendText(t, b, "sdk", fmt.Sprint(i))
		r.nextPush(t)
	}
	if got := pc.pings.Load(); got != 0 {
		t.Fatalf("%d PINGs from the client for 10 pushes; want none", got)
	}

	plain := startPingCounter(t, d.GRPCAddr())
	cc, err := grpc.NewClient(plain.ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := presencev1.NewPresenceServiceClient(cc).Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&presencev1.ConnectRequest{Frame: &presencev1.ConnectRequest_Identify{Identify: &presencev1.Identify{Uid: "plain"}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil { // Identified
		t.Fatal(err)
	}
	for i := range 10 {
		sendText(t, b, "plain", fmt.Sprint(i))
		if _, err := stream.Recv(); err != nil {
			t.Fatal(err)
		}
	}
	if plain.pings.Load() == 0 {
		t.Fatal("no PING from a plain grpc-go client either: the counter does not see them")
	}
	t.Logf("plain grpc-go client: %d PINGs for 10 pushes; this client: 0", plain.pings.Load())
}
