package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/presence-dev/presence/auth"
)

// TestTokenMintsVerifiableToken proves the minted token verifies with the
// same secret and names the uid, and that a short secret is a usage error.
func TestTokenMintsVerifiableToken(t *testing.T) {
	secret := "0123456789abcdef0123456789abcdef"
	var out, errb bytes.Buffer
	if err := run(context.Background(), []string{"token", "--uid", "alice", "--secret", secret, "--ttl", "5m"}, &out, &errb); err != nil {
		t.Fatalf("token: %v (%s)", err, errb.String())
	}
	v, _ := auth.NewJWTVerifier(auth.JWTConfig{HMACSecret: []byte(secret)})
	c, err := v.Verify(strings.TrimSpace(out.String()))
	if err != nil || c.Subject != "alice" {
		t.Fatalf("Verify(minted) = %+v, %v; want subject alice", c, err)
	}
	err = run(context.Background(), []string{"token", "--uid", "alice", "--secret", "short"}, &out, &errb)
	if exitCode(err) != 2 {
		t.Fatalf("short secret: exit %d (%v); want 2", exitCode(err), err)
	}
}
