package lite

import (
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/grpc/keepalive"
)

func TestKeepalivePolitePinger(t *testing.T) {
	s := NewServer(Options{KeepalivePolicy: keepalive.EnforcementPolicy{MinTime: 200 * time.Millisecond, PermitWithoutStream: true}})
	rc := dialRaw(t, startServer(t, s))
	rc.handshake()
	for i := range 7 {
		data := [8]byte{byte(i)}
		if err := rc.fr.WritePing(false, data); err != nil {
			t.Fatal(err)
		}
		rc.readUntil(2*time.Second, func(f rawFrame) bool {
			if f.typ == http2.FrameGoAway {
				t.Fatalf("polite pinger got GOAWAY %v %q", f.code, f.debug)
			}
			return f.typ == http2.FramePing && f.ping == data
		})
		time.Sleep(300 * time.Millisecond)
	}
}

func TestKeepaliveTooManyPings(t *testing.T) {
	s := NewServer(Options{KeepalivePolicy: keepalive.EnforcementPolicy{MinTime: 200 * time.Millisecond, PermitWithoutStream: true}})
	rc := dialRaw(t, startServer(t, s))
	rc.handshake()
	for i := range 5 {
		rc.fr.WritePing(false, [8]byte{byte(i)}) // the server may close before the last ones
	}
	g := rc.expectClosed(5 * time.Second)
	if g == nil || g.code != http2.ErrCodeEnhanceYourCalm || g.debug != "too_many_pings" {
		t.Fatalf("GOAWAY = %+v; want ENHANCE_YOUR_CALM too_many_pings", g)
	}
}

func TestKeepaliveWithoutStreamNotPermitted(t *testing.T) {
	// Without PermitWithoutStream, pings on a connection with no stream are
	// strikes even when MinTime apart.
	s := NewServer(Options{KeepalivePolicy: keepalive.EnforcementPolicy{MinTime: 10 * time.Millisecond}})
	rc := dialRaw(t, startServer(t, s))
	rc.handshake()
	for i := range 4 {
		rc.fr.WritePing(false, [8]byte{byte(i)})
		time.Sleep(30 * time.Millisecond)
	}
	if g := rc.expectClosed(5 * time.Second); g == nil || g.debug != "too_many_pings" {
		t.Fatalf("GOAWAY = %+v", g)
	}
}

func TestKeepaliveServerPing(t *testing.T) {
	s := NewServer(Options{Keepalive: keepalive.ServerParameters{Time: 100 * time.Millisecond, Timeout: 100 * time.Millisecond}})
	addr := startServer(t, s)

	t.Run("silent client is closed", func(t *testing.T) {
		rc := dialRaw(t, addr)
		rc.handshake()
		start := time.Now()
		var pings atomic.Int32
		deadline := time.Now().Add(3 * time.Second)
		for {
			f, err := rc.read(time.Until(deadline))
			if err != nil {
				break // closed (or deadline: checked below)
			}
			if f.typ == http2.FramePing && !f.flags.Has(http2.FlagPingAck) {
				pings.Add(1) // and never answer
			}
		}
		if d := time.Since(start); d > 1500*time.Millisecond {
			t.Fatalf("connection closed after %v, want within ~1s", d)
		}
		if pings.Load() == 0 {
			t.Fatal("no keepalive PING seen")
		}
	})

	t.Run("answering client stays", func(t *testing.T) {
		rc := dialRaw(t, addr)
		rc.handshake()
		var acked int
		end := time.Now().Add(1200 * time.Millisecond)
		for time.Now().Before(end) {
			f, err := rc.read(time.Until(end))
			if err != nil {
				break
			}
			if f.typ == http2.FramePing && !f.flags.Has(http2.FlagPingAck) {
				if err := rc.fr.WritePing(true, f.ping); err != nil {
					t.Fatal(err)
				}
				acked++
			}
		}
		if acked < 2 {
			t.Fatalf("answered %d keepalive pings, want several", acked)
		}
		rc.alive()
	})
}
