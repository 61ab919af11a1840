package server

import (
	"errors"
	"net"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
)

// rawH2 is a bare HTTP/2 client connection: grpc-go clients cannot ping
// faster than every 10 s, so the enforcement policy is tested by speaking
// HTTP/2 directly (TOOLCHAIN.md).
type rawH2 struct {
	t    *testing.T
	conn net.Conn
	fr   *http2.Framer
}

func dialH2(t *testing.T, addr string) *rawH2 {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := conn.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatalf("preface: %v", err)
	}
	fr := http2.NewFramer(conn, conn)
	if err := fr.WriteSettings(); err != nil {
		t.Fatalf("settings: %v", err)
	}
	return &rawH2{t: t, conn: conn, fr: fr}
}

func (h *rawH2) ping(n byte) {
	h.t.Helper()
	if err := h.fr.WritePing(false, [8]byte{n}); err != nil {
		h.t.Fatalf("ping: %v", err)
	}
}

// goaway reads frames for up to d and returns the first GOAWAY, or nil.
// It acknowledges the server's SETTINGS like a real client.
func (h *rawH2) goaway(d time.Duration) *http2.GoAwayFrame {
	h.t.Helper()
	h.conn.SetReadDeadline(time.Now().Add(d))
	for {
		f, err := h.fr.ReadFrame()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return nil
			}
			h.t.Fatalf("read frame: %v", err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				h.fr.WriteSettingsAck()
			}
		case *http2.GoAwayFrame:
			return f
		}
	}
}

// TestKeepaliveEnforcement proves both sides of the ping policy: a client
// pinging no faster than MinTime keeps its connection, and one pinging in a
// burst gets GOAWAY ENHANCE_YOUR_CALM "too_many_pings".
func TestKeepaliveEnforcement(t *testing.T) {
	policy := keepalive.EnforcementPolicy{MinTime: 200 * time.Millisecond, PermitWithoutStream: true}
	ts := startServer(t, fastOptions(), grpc.KeepaliveEnforcementPolicy(policy))

	polite := dialH2(t, ts.addr)
	for i := range 4 {
		polite.ping(byte(i))
		if ga := polite.goaway(policy.MinTime + 100*time.Millisecond); ga != nil {
			t.Fatalf("polite client pinging every %v got GOAWAY %v", policy.MinTime+100*time.Millisecond, ga.ErrCode)
		}
	}

	rude := dialH2(t, ts.addr)
	for i := range 10 {
		rude.ping(byte(i))
	}
	ga := rude.goaway(5 * time.Second)
	if ga == nil {
		t.Fatal("client pinging in a burst got no GOAWAY")
	}
	if ga.ErrCode != http2.ErrCodeEnhanceYourCalm || string(ga.DebugData()) != "too_many_pings" {
		t.Fatalf("GOAWAY %v %q; want ENHANCE_YOUR_CALM too_many_pings", ga.ErrCode, ga.DebugData())
	}
}

// TestDefaultKeepaliveFitsHeartbeat checks the documented relations between
// the transport defaults and the heartbeat defaults.
func TestDefaultKeepaliveFitsHeartbeat(t *testing.T) {
	p, e := DefaultKeepaliveParams, DefaultKeepalivePolicy
	if p.Time+p.Timeout > DefaultHeartbeatTimeout {
		t.Errorf("a dead peer is found after %v by keepalive; want no later than the heartbeat timeout %v", p.Time+p.Timeout, DefaultHeartbeatTimeout)
	}
	if e.MinTime > 10*time.Second {
		t.Errorf("MinTime %v would cut off grpc-go clients pinging every 10 s", e.MinTime)
	}
	if p.MaxConnectionAge != 0 || p.MaxConnectionIdle != 0 {
		t.Errorf("connection age/idle limits would end long-lived sessions")
	}
}
