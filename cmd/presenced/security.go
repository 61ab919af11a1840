package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/presence-dev/presence/auth"
	"github.com/presence-dev/presence/daemon"
	"github.com/presence-dev/presence/server"
)

// securityFlags are the flags that become credentials and limits.
type securityFlags struct {
	tokenSecret, tokenSecretFile, tokenPublicKeyFile string
	tokenAudience, tokenIssuer                       string
	tokenLeeway                                      time.Duration
	apiKeys, apiKeyFile                              string
	uidPolicy                                        string
}

func bindSecurityFlags(fs *flag.FlagSet, cfg *daemon.Config) *securityFlags {
	f := &securityFlags{}
	o := &cfg.Server
	fs.StringVar(&f.tokenSecret, "token-secret", "", "HMAC secret (at least 32 bytes) verifying client tokens (HS256); prefer --token-secret-file")
	fs.StringVar(&f.tokenSecretFile, "token-secret-file", "", "file holding the HMAC secret for client tokens")
	fs.StringVar(&f.tokenPublicKeyFile, "token-public-key-file", "", "PEM public key (RSA or P-256) verifying client tokens (RS256/ES256)")
	fs.StringVar(&f.tokenAudience, "token-audience", "", "when set, client tokens must carry this aud")
	fs.StringVar(&f.tokenIssuer, "token-issuer", "", "when set, client tokens must carry this iss")
	fs.DurationVar(&f.tokenLeeway, "token-leeway", auth.DefaultLeeway, "clock skew allowed on token exp and nbf")
	fs.StringVar(&f.apiKeys, "api-key", "", "comma-separated API keys for the backend API (several allow rotation); prefer --api-key-file")
	fs.StringVar(&f.apiKeyFile, "api-key-file", "", "file with one backend API key per line")
	fs.BoolVar(&cfg.Insecure, "insecure", false, "allow non-loopback listeners without client tokens or API keys (logged loudly)")
	fs.StringVar(&cfg.TLSCertFile, "tls-cert", "", "PEM certificate: serve TLS on every listener")
	fs.StringVar(&cfg.TLSKeyFile, "tls-key", "", "PEM private key for --tls-cert")
	fs.StringVar(&cfg.BackendClientCAFile, "backend-client-ca", "", "PEM CA certificates: the backend listeners (--backend-grpc-addr, --backend-http-addr) then require client certificates they signed (mutual TLS)")
	fs.StringVar(&cfg.BackendGRPCAddr, "backend-grpc-addr", "", "serve the backend API on this gRPC listener only (an internal network)")
	fs.StringVar(&cfg.BackendHTTPAddr, "backend-http-addr", "", "serve REST, /metrics and /openapi.json on this HTTP listener only")
	fs.IntVar(&o.MaxSessionsPerUid, "max-sessions-per-uid", server.DefaultMaxSessionsPerUid, "live sessions one uid may hold")
	fs.StringVar(&f.uidPolicy, "sessions-per-uid-policy", "replace-oldest", "past --max-sessions-per-uid: replace-oldest (Goodbye REPLACED) or refuse-newest (RESOURCE_EXHAUSTED)")
	fs.IntVar(&o.MaxSessions, "max-sessions", server.DefaultMaxSessions, "live sessions on this server; past it new sessions get RESOURCE_EXHAUSTED")
	fs.Float64Var(&o.MaxFrameRate, "max-frame-rate", server.DefaultMaxFrameRate, "client frames per second per session (token bucket); a flood ends the session")
	fs.IntVar(&o.FrameBurst, "frame-burst", server.DefaultFrameBurst, "burst allowed above --max-frame-rate")
	return f
}

// apply turns the flags into verifiers and keys on cfg.
func (f *securityFlags) apply(cfg *daemon.Config) error {
	policy, err := server.ParseUidPolicy(f.uidPolicy)
	if err != nil {
		return err
	}
	cfg.Server.SessionsPerUidPolicy = policy

	jc := auth.JWTConfig{Audience: f.tokenAudience, Issuer: f.tokenIssuer, Leeway: f.tokenLeeway}
	n := 0
	if f.tokenSecret != "" {
		jc.HMACSecret, n = []byte(f.tokenSecret), n+1
	}
	if f.tokenSecretFile != "" {
		b, err := os.ReadFile(f.tokenSecretFile)
		if err != nil {
			return fmt.Errorf("--token-secret-file: %w", err)
		}
		jc.HMACSecret, n = []byte(strings.TrimRight(string(b), "\r\n")), n+1
	}
	if f.tokenPublicKeyFile != "" {
		b, err := os.ReadFile(f.tokenPublicKeyFile)
		if err != nil {
			return fmt.Errorf("--token-public-key-file: %w", err)
		}
		jc.PublicKeyPEM, n = b, n+1
	}
	switch {
	case n > 1:
		return errors.New("give one of --token-secret, --token-secret-file and --token-public-key-file")
	case n == 1:
		v, err := auth.NewJWTVerifier(jc)
		if err != nil {
			return fmt.Errorf("client tokens: %w", err)
		}
		cfg.Server.Tokens = v
	}

	var keys []string
	for k := range strings.SplitSeq(f.apiKeys, ",") {
		if k = strings.TrimSpace(k); k != "" {
			keys = append(keys, k)
		}
	}
	if f.apiKeyFile != "" {
		b, err := os.ReadFile(f.apiKeyFile)
		if err != nil {
			return fmt.Errorf("--api-key-file: %w", err)
		}
		for line := range strings.SplitSeq(string(b), "\n") {
			if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
				keys = append(keys, line)
			}
		}
	}
	if len(keys) > 0 {
		k, err := auth.NewAPIKeys(keys...)
		if err != nil {
			return fmt.Errorf("API keys: %w", err)
		}
		cfg.APIKeys = k
	}
	return nil
}
