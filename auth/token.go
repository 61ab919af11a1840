// Package auth holds the service's credentials: signed client tokens (JWT)
// that prove a uid, and API keys that open the backend API. The two never
// stand in for each other.
package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Claims are what a verified token says.
type Claims struct {
	// Subject is the uid the token proves.
	Subject string
	// ExpiresAt is when the token stops being valid (zero: never).
	ExpiresAt time.Time
}

// TokenVerifier checks a client token and returns its claims. Errors wrap
// one of the Err* values below, so callers can tell the user which.
type TokenVerifier interface {
	Verify(token string) (Claims, error)
}

// Why a token was refused.
var (
	ErrTokenMissing     = errors.New("token missing")
	ErrTokenMalformed   = errors.New("token malformed")
	ErrTokenSignature   = errors.New("token signature invalid")
	ErrTokenExpired     = errors.New("token expired")
	ErrTokenNotYetValid = errors.New("token not valid yet")
	ErrTokenClaims      = errors.New("token claims rejected")
)

// JWTConfig configures JWT verification. Exactly one of HMACSecret and
// PublicKeyPEM must be set.
type JWTConfig struct {
	// HMACSecret verifies HS256 tokens.
	HMACSecret []byte
	// PublicKeyPEM verifies RS256 (RSA key) or ES256 (P-256 key) tokens: a
	// PEM "PUBLIC KEY" (PKIX) block.
	PublicKeyPEM []byte
	// Audience and Issuer, when set, must match the token's aud and iss.
	Audience string
	Issuer   string
	// Leeway is the clock skew allowed on exp and nbf. Default 30 s.
	Leeway time.Duration
}

// DefaultLeeway is the clock skew allowed when JWTConfig.Leeway is zero.
const DefaultLeeway = 30 * time.Second

// JWTVerifier verifies JWTs. It is safe for concurrent use.
type JWTVerifier struct {
	key    crypto.PublicKey // or []byte for HMAC
	parser *jwt.Parser
}

var _ TokenVerifier = (*JWTVerifier)(nil)

// NewJWTVerifier returns a verifier for cfg.
func NewJWTVerifier(cfg JWTConfig) (*JWTVerifier, error) {
	v := &JWTVerifier{}
	var method string
	switch {
	case len(cfg.HMACSecret) > 0 && len(cfg.PublicKeyPEM) > 0:
		return nil, errors.New("set either an HMAC secret or a public key, not both")
	case len(cfg.HMACSecret) > 0:
		if len(cfg.HMACSecret) < 32 {
			return nil, fmt.Errorf("the HMAC secret is %d bytes; use at least 32 random bytes", len(cfg.HMACSecret))
		}
		v.key, method = cfg.HMACSecret, "HS256"
	case len(cfg.PublicKeyPEM) > 0:
		block, _ := pem.Decode(cfg.PublicKeyPEM)
		if block == nil {
			return nil, errors.New("public key: no PEM block found")
		}
		pub, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("public key: %w", err)
		}
		switch k := pub.(type) {
		case *rsa.PublicKey:
			method = "RS256"
		case *ecdsa.PublicKey:
			if k.Curve.Params().BitSize != 256 {
				return nil, fmt.Errorf("public key: ES256 needs a P-256 key, not %s", k.Curve.Params().Name)
			}
			method = "ES256"
		default:
			return nil, fmt.Errorf("public key: %T is not an RSA or ECDSA key", pub)
		}
		v.key = pub
	default:
		return nil, errors.New("set an HMAC secret or a public key")
	}
	leeway := cfg.Leeway
	if leeway == 0 {
		leeway = DefaultLeeway
	}
	opts := []jwt.ParserOption{jwt.WithValidMethods([]string{method}), jwt.WithLeeway(leeway), jwt.WithIssuedAt()}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	v.parser = jwt.NewParser(opts...)
	return v, nil
}

// Verify checks token's signature, exp, nbf, and aud/iss when configured,
// and that it names a subject.
func (v *JWTVerifier) Verify(token string) (Claims, error) {
	if token == "" {
		return Claims{}, ErrTokenMissing
	}
	var rc jwt.RegisteredClaims
	_, err := v.parser.ParseWithClaims(token, &rc, func(*jwt.Token) (any, error) { return v.key, nil })
	if err != nil {
		return Claims{}, classify(err)
	}
	if rc.Subject == "" {
		return Claims{}, fmt.Errorf("%w: no subject (sub), which must be the uid", ErrTokenClaims)
	}
	c := Claims{Subject: rc.Subject}
	if rc.ExpiresAt != nil {
		c.ExpiresAt = rc.ExpiresAt.Time
	}
	return c, nil
}

// classify maps the jwt library's errors to ours, keeping its detail
// where it adds any.
func classify(err error) error {
	var ours error
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		ours = ErrTokenExpired
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		ours = ErrTokenNotYetValid
	case errors.Is(err, jwt.ErrTokenSignatureInvalid), errors.Is(err, jwt.ErrTokenUnverifiable):
		ours = ErrTokenSignature
	case errors.Is(err, jwt.ErrTokenInvalidAudience), errors.Is(err, jwt.ErrTokenInvalidIssuer), errors.Is(err, jwt.ErrTokenInvalidClaims):
		ours = ErrTokenClaims
	default:
		ours = ErrTokenMalformed
	}
	if d := jwtDetail(err); d != "" {
		return fmt.Errorf("%w: %s", ours, d)
	}
	return ours
}

// jwtDetail is the innermost part of a jwt error ("token is malformed:
// token contains an invalid number of segments" gives the latter), or ""
// when that only restates the kind of error ("signature is invalid").
func jwtDetail(err error) string {
	msg := err.Error()
	if i := strings.LastIndex(msg, ": "); i >= 0 {
		msg = msg[i+2:]
	}
	for _, e := range []error{
		jwt.ErrTokenMalformed, jwt.ErrTokenUnverifiable, jwt.ErrTokenSignatureInvalid, jwt.ErrTokenExpired,
		jwt.ErrTokenUsedBeforeIssued, jwt.ErrTokenNotValidYet, jwt.ErrTokenInvalidClaims, jwt.ErrSignatureInvalid,
		jwt.ErrECDSAVerification, jwt.ErrEd25519Verification, jwt.ErrTokenRequiredClaimMissing,
	} {
		if msg == e.Error() {
			return ""
		}
	}
	return msg
}

// MintHS256 signs a development token for uid with an HMAC secret: subject
// uid, issued now, expiring after ttl, with aud and iss when not empty.
func MintHS256(secret []byte, uid string, ttl time.Duration, aud, iss string) (string, error) {
	if len(secret) == 0 {
		return "", errors.New("an HMAC secret is required")
	}
	now := time.Now()
	rc := jwt.RegisteredClaims{
		Subject:   uid,
		IssuedAt:  jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
		Issuer:    iss,
	}
	if aud != "" {
		rc.Audience = jwt.ClaimStrings{aud}
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, rc).SignedString(secret)
}
