package client

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/presence-dev/presence/auth"
)

// TestRefreshesTokenOnOpenStream proves a client with TokenFunc keeps its
// session past its token's expiry by refreshing on the open stream: the
// server (with no clock-skew leeway) would otherwise end it with Goodbye
// TOKEN_EXPIRED.
func TestRefreshesTokenOnOpenStream(t *testing.T) {
	secret := []byte("a-test-secret-of-at-least-32-bytes!!")
	v, err := auth.NewJWTVerifier(auth.JWTConfig{HMACSecret: secret, Leeway: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	opts := fastServer()
	opts.Tokens = v
	d := startDaemon(t, "127.0.0.1:0", opts)
	var asked atomic.Int32
	_, r := startClient(t, Config{Target: d.GRPCAddr(), TokenFunc: func(context.Context) (string, error) {
		asked.Add(1)
		return auth.MintHS256(secret, "refresher", 2*time.Second, "", "")
	}})
	sid := connected(t, r)
	time.Sleep(4 * time.Second) // two token lifetimes
	if n := asked.Load(); n < 3 {
		t.Fatalf("TokenFunc asked %d times in two token lifetimes; want at least 3 (connect and refreshes)", n)
	}
	for _, s := range r.allStates() {
		if s.State == StateDisconnected {
			t.Fatalf("session %s ended (%v) though its token was refreshed", sid, s.Err)
		}
	}
}
