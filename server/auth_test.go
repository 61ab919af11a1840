package server

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/presence-dev/presence/auth"
	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
)

var testSecret = []byte("0123456789abcdef0123456789abcdef")

func mint(t *testing.T, uid string, ttl time.Duration) string {
	t.Helper()
	tok, err := auth.MintHS256(testSecret, uid, ttl, "", "")
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func withTokens(t *testing.T, o Options) Options {
	t.Helper()
	v, err := auth.NewJWTVerifier(auth.JWTConfig{HMACSecret: testSecret, Leeway: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	o.Tokens = v
	return o
}

func identifyWith(uid, token string) *presencev1.ConnectRequest {
	return &presencev1.ConnectRequest{Frame: &presencev1.ConnectRequest_Identify{Identify: &presencev1.Identify{Uid: uid, Token: token}}}
}

func refresh(token string) *presencev1.ConnectRequest {
	return &presencev1.ConnectRequest{Frame: &presencev1.ConnectRequest_RefreshToken{RefreshToken: &presencev1.RefreshToken{Token: token}}}
}

// TestIdentifyTokens proves each token case at Identify gives its own code
// and a message naming the problem, and a good token identifies.
func TestIdentifyTokens(t *testing.T) {
	ts := startServer(t, withTokens(t, fastOptions()))
	other, _ := auth.MintHS256([]byte("another secret of thirty-two bytes!!"), "alice", time.Hour, "", "")
	tests := []struct {
		name string
		req  *presencev1.ConnectRequest
		code codes.Code
		msg  string
	}{
		{"missing", identifyWith("alice", ""), codes.Unauthenticated, "token missing"},
		{"malformed", identifyWith("alice", "not-a-jwt"), codes.Unauthenticated, "token malformed"},
		{"wrong key", identifyWith("alice", other), codes.Unauthenticated, "signature invalid"},
		{"expired", identifyWith("alice", mint(t, "alice", -time.Minute)), codes.Unauthenticated, "token expired"},
		{"other uid", identifyWith("bob", mint(t, "alice", time.Hour)), codes.PermissionDenied, "not the token's subject"},
		{"api key as token", identifyWith("alice", "an-api-key-0123456789"), codes.Unauthenticated, "token malformed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := open(t, ts.dial(t), false)
			c.send(tt.req)
			frames, err := c.end(5 * time.Second)
			c.wantEndFrom(frames, err, tt.code, tt.msg)
		})
	}
	t.Run("good token", func(t *testing.T) {
		c := open(t, ts.dial(t), false)
		c.send(identifyWith("", mint(t, "alice", time.Hour))) // uid taken from the token
		if id := c.next().GetIdentified(); id.GetUid() != "alice" {
			t.Fatalf("Identified = %v; want uid alice", id)
		}
	})
}

// TestTokenExpiryAndRefresh proves a session ends with Goodbye
// TOKEN_EXPIRED when its token expires, and that RefreshToken before
// expiry keeps it open.
func TestTokenExpiryAndRefresh(t *testing.T) {
	ts := startServer(t, withTokens(t, fastOptions()))
	// JWT exp has one-second resolution: tokens live 2 s here.
	expiring := open(t, ts.dial(t), false)
	expiring.send(identifyWith("alice", mint(t, "alice", 2*time.Second)))
	expiring.next()
	refreshed := open(t, ts.dial(t), false)
	refreshed.send(identifyWith("bob", mint(t, "bob", 2*time.Second)))
	refreshed.next()
	refreshed.send(refresh(mint(t, "bob", time.Hour)))
	ack := refreshed.next().GetTokenRefreshed()
	if ack == nil || time.Until(ack.GetExpiresAt().AsTime()) < 50*time.Minute {
		t.Fatalf("TokenRefreshed = %v; want an expiry about an hour away", ack)
	}
	gb := expiring.wantEnd(5*time.Second, codes.Unauthenticated, presencev1.GoodbyeReason_GOODBYE_REASON_TOKEN_EXPIRED)
	if !strings.Contains(gb.GetMessage(), "expired") {
		t.Errorf("Goodbye message %q", gb.GetMessage())
	}
	refreshed.send(ping(9))
	if p := refreshed.next().GetPong(); p.GetSeq() != 9 {
		t.Fatalf("refreshed session: %v; want Pong 9", p)
	}
	// A refresh for another uid ends the session.
	refreshed.send(refresh(mint(t, "mallory", time.Hour)))
	frames, err := refreshed.end(5 * time.Second)
	refreshed.wantEndFrom(frames, err, codes.PermissionDenied, "not this session's uid")
}

// TestSessionsPerUid proves both policies at the per-uid limit:
// replace-oldest ends the oldest with Goodbye REPLACED (ABORTED, no
// reconnect), refuse-newest refuses the new one with RESOURCE_EXHAUSTED.
func TestSessionsPerUid(t *testing.T) {
	t.Run("replace oldest", func(t *testing.T) {
		o := fastOptions()
		o.MaxSessionsPerUid = 2
		ts := startServer(t, o)
		cc := ts.dial(t)
		first, _ := connect(t, cc, "alice")
		second, _ := connect(t, cc, "alice")
		third, _ := connect(t, cc, "alice")
		gb := first.wantEnd(5*time.Second, codes.Aborted, presencev1.GoodbyeReason_GOODBYE_REASON_REPLACED)
		if gb.GetReconnect() {
			t.Errorf("REPLACED Goodbye says reconnect; two devices would replace each other forever")
		}
		resp, err := sendTo(t, ts.backend(t), "alice", "x")
		if err != nil || resp.GetDelivered() != 2 {
			t.Fatalf("SendToUid = %v, %v; want delivered 2", resp, err)
		}
		second.nextPush()
		third.nextPush()
	})
	t.Run("refuse newest", func(t *testing.T) {
		o := fastOptions()
		o.MaxSessionsPerUid = 1
		o.SessionsPerUidPolicy = RefuseNewest
		ts := startServer(t, o)
		cc := ts.dial(t)
		first, _ := connect(t, cc, "alice")
		c := open(t, cc, false)
		c.send(identify("alice"))
		frames, err := c.end(5 * time.Second)
		c.wantEndFrom(frames, err, codes.ResourceExhausted, "already has 1 sessions")
		first.send(ping(1))
		first.next()
	})
}

// TestMaxSessions proves the server-wide limit refuses the next session
// with RESOURCE_EXHAUSTED and admits one again after a session leaves.
func TestMaxSessions(t *testing.T) {
	o := fastOptions()
	o.MaxSessions = 2
	ts := startServer(t, o)
	cc := ts.dial(t)
	a, _ := connect(t, cc, "a")
	connect(t, cc, "b")
	c := open(t, cc, false)
	c.send(identify("c"))
	frames, err := c.end(5 * time.Second)
	c.wantEndFrom(frames, err, codes.ResourceExhausted, "the server is full")
	a.stream.CloseSend()
	a.end(5 * time.Second)
	waitFor(t, 5*time.Second, "a to leave", func() bool { _, n := ts.srv.Counts(); return n == 1 })
	connect(t, cc, "c")
}

// TestFrameFlood proves a client sending frames faster than the limit is
// ended with RESOURCE_EXHAUSTED, while one within the limit is not.
func TestFrameFlood(t *testing.T) {
	o := fastOptions()
	o.MaxFrameRate, o.FrameBurst = 50, 10
	ts := startServer(t, o)
	cc := ts.dial(t)
	calm, _ := connect(t, cc, "calm")
	for i := range 8 { // within the burst
		calm.send(ping(uint64(i)))
		calm.next()
	}
	flood, _ := connect(t, cc, "flood")
	for i := range 200 {
		if flood.stream.Send(ping(uint64(i))) != nil {
			break
		}
	}
	frames, err := flood.end(5 * time.Second)
	flood.wantEndFrom(frames, err, codes.ResourceExhausted, "frames/s")
	calm.send(ping(99))
	if p := calm.next().GetPong(); p.GetSeq() != 99 {
		t.Fatalf("calm client after the flood: %v", p)
	}
}
