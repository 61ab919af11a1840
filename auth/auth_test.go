package auth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

var secret = []byte("0123456789abcdef0123456789abcdef")

func pemOf(t *testing.T, pub crypto.PublicKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func sign(t *testing.T, m jwt.SigningMethod, key any, c jwt.RegisteredClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(m, c).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func at(d time.Duration) *jwt.NumericDate { return jwt.NewNumericDate(time.Now().Add(d)) }

// TestVerifyAlgorithms proves HS256, RS256 and ES256 tokens verify with
// their key and that a token signed with another method is refused.
func TestVerifyAlgorithms(t *testing.T) {
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	claims := jwt.RegisteredClaims{Subject: "alice", ExpiresAt: at(time.Hour)}
	tests := []struct {
		name  string
		cfg   JWTConfig
		token string
	}{
		{"HS256", JWTConfig{HMACSecret: secret}, sign(t, jwt.SigningMethodHS256, secret, claims)},
		{"RS256", JWTConfig{PublicKeyPEM: pemOf(t, &rsaKey.PublicKey)}, sign(t, jwt.SigningMethodRS256, rsaKey, claims)},
		{"ES256", JWTConfig{PublicKeyPEM: pemOf(t, &ecKey.PublicKey)}, sign(t, jwt.SigningMethodES256, ecKey, claims)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := NewJWTVerifier(tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			c, err := v.Verify(tt.token)
			if err != nil || c.Subject != "alice" || c.ExpiresAt.IsZero() {
				t.Fatalf("Verify = %+v, %v; want subject alice with an expiry", c, err)
			}
		})
	}
	// The classic algorithm confusion: an HS256 token "signed" with the
	// RSA public key must not pass an RS256 verifier.
	v, _ := NewJWTVerifier(JWTConfig{PublicKeyPEM: pemOf(t, &rsaKey.PublicKey)})
	forged := sign(t, jwt.SigningMethodHS256, pemOf(t, &rsaKey.PublicKey), claims)
	if _, err := v.Verify(forged); !errors.Is(err, ErrTokenSignature) && !errors.Is(err, ErrTokenMalformed) {
		t.Fatalf("HS256 token against an RS256 key: %v; want refused", err)
	}
}

// TestVerifyRefusals proves each kind of bad token maps to its error.
func TestVerifyRefusals(t *testing.T) {
	v, err := NewJWTVerifier(JWTConfig{HMACSecret: secret, Audience: "presence", Issuer: "auth.example", Leeway: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	good := jwt.RegisteredClaims{Subject: "alice", Audience: jwt.ClaimStrings{"presence"}, Issuer: "auth.example", ExpiresAt: at(time.Hour)}
	with := func(f func(*jwt.RegisteredClaims)) string {
		c := good
		f(&c)
		return sign(t, jwt.SigningMethodHS256, secret, c)
	}
	tests := []struct {
		name  string
		token string
		want  error
	}{
		{"missing", "", ErrTokenMissing},
		{"garbage", "a.b.c", ErrTokenMalformed},
		{"wrong secret", sign(t, jwt.SigningMethodHS256, []byte("x0123456789abcdef0123456789abcdef"), good), ErrTokenSignature},
		{"expired past leeway", with(func(c *jwt.RegisteredClaims) { c.ExpiresAt = at(-10 * time.Second) }), ErrTokenExpired},
		{"not yet valid", with(func(c *jwt.RegisteredClaims) { c.NotBefore = at(time.Minute) }), ErrTokenNotYetValid},
		{"wrong audience", with(func(c *jwt.RegisteredClaims) { c.Audience = jwt.ClaimStrings{"other"} }), ErrTokenClaims},
		{"wrong issuer", with(func(c *jwt.RegisteredClaims) { c.Issuer = "evil" }), ErrTokenClaims},
		{"no subject", with(func(c *jwt.RegisteredClaims) { c.Subject = "" }), ErrTokenClaims},
		{"alg none", "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhbGljZSJ9.", ErrTokenSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := v.Verify(tt.token); !errors.Is(err, tt.want) {
				t.Fatalf("Verify = %v; want %v", err, tt.want)
			}
		})
	}
	// Inside the leeway both ways.
	for _, tok := range []string{
		with(func(c *jwt.RegisteredClaims) { c.ExpiresAt = at(-2 * time.Second) }),
		with(func(c *jwt.RegisteredClaims) { c.NotBefore = at(2 * time.Second) }),
	} {
		if _, err := v.Verify(tok); err != nil {
			t.Errorf("token within the clock-skew leeway refused: %v", err)
		}
	}
}

// TestVerifierConfig proves unusable configurations are refused.
func TestVerifierConfig(t *testing.T) {
	for name, cfg := range map[string]JWTConfig{
		"nothing":      {},
		"both":         {HMACSecret: secret, PublicKeyPEM: []byte("x")},
		"short secret": {HMACSecret: []byte("short")},
		"bad pem":      {PublicKeyPEM: []byte("not pem")},
	} {
		if _, err := NewJWTVerifier(cfg); err == nil {
			t.Errorf("%s: NewJWTVerifier succeeded", name)
		}
	}
}

// TestAPIKeys proves any configured key passes, others and malformed
// headers are Unauthenticated with a message that says which.
func TestAPIKeys(t *testing.T) {
	keys, err := NewAPIKeys("old-key-0123456789", "new-key-0123456789")
	if err != nil {
		t.Fatal(err)
	}
	ctx := func(v ...string) context.Context {
		md := metadata.MD{}
		if len(v) > 0 {
			md.Set("authorization", v...)
		}
		return metadata.NewIncomingContext(context.Background(), md)
	}
	for _, h := range []string{"Bearer old-key-0123456789", "bearer new-key-0123456789"} {
		if err := keys.Check(ctx(h)); err != nil {
			t.Errorf("Check(%q) = %v; want ok", h, err)
		}
	}
	for h, msg := range map[string]string{
		"":                          "API key missing",
		"Basic old-key-0123456789":  "malformed",
		"Bearer":                    "malformed",
		"Bearer wrong-key-01234567": "API key invalid",
	} {
		var err error
		if h == "" {
			err = keys.Check(ctx())
		} else {
			err = keys.Check(ctx(h))
		}
		if status.Code(err) != codes.Unauthenticated || !strings.Contains(status.Convert(err).Message(), msg) {
			t.Errorf("Check(%q) = %v; want Unauthenticated %q", h, err, msg)
		}
	}
	if _, err := NewAPIKeys("short"); err == nil {
		t.Error("NewAPIKeys accepted a 5-character key")
	}
}

// FuzzVerify feeds arbitrary strings to the verifier: it must never panic
// and never accept a token it did not sign.
func FuzzVerify(f *testing.F) {
	v, err := NewJWTVerifier(JWTConfig{HMACSecret: secret})
	if err != nil {
		f.Fatal(err)
	}
	good, _ := MintHS256(secret, "alice", time.Hour, "", "")
	for _, s := range []string{"", "a.b.c", good, good[:len(good)-2], "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", "...", "\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		c, err := v.Verify(tok)
		if err == nil && tok != good {
			// Only a correctly signed token can pass; re-sign to check.
			if _, perr := jwt.Parse(tok, func(*jwt.Token) (any, error) { return secret, nil }, jwt.WithValidMethods([]string{"HS256"})); perr != nil {
				t.Fatalf("Verify accepted %q (%+v) that jwt itself rejects: %v", tok, c, perr)
			}
		}
	})
}
