package daemon

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/presence-dev/presence/auth"
	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
	"github.com/presence-dev/presence/server"
	"github.com/presence-dev/presence/wsbridge"
)

const testKey = "backend-key-0123456789"

var testSecret = []byte("0123456789abcdef0123456789abcdef")

// secured starts a daemon that requires tokens and an API key.
func secured(t *testing.T, mod func(*Config)) *Daemon {
	t.Helper()
	v, err := auth.NewJWTVerifier(auth.JWTConfig{HMACSecret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	keys, err := auth.NewAPIKeys("old-key-0123456789ab", testKey)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", Transport: testTransport,
		Server:  server.Options{Tokens: v},
		APIKeys: keys,
		Logger:  slog.New(slog.DiscardHandler),
	}
	if mod != nil {
		mod(&cfg)
	}
	d, err := Start(cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { d.Shutdown(context.Background()) })
	return d
}

func bearer(key string) context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+key)
}

func restPost(t *testing.T, addr, path, auth, body string) int {
	t.Helper()
	req, _ := http.NewRequest("POST", "http://"+addr+path, strings.NewReader(body))
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestBackendNeedsAPIKey proves the backend API over gRPC and REST needs a
// configured key (any of several), and that a client token is not one.
func TestBackendNeedsAPIKey(t *testing.T) {
	d := secured(t, nil)
	b := presencev1.NewBackendServiceClient(dial(t, d))
	req := &presencev1.BroadcastRequest{Payload: &presencev1.BroadcastRequest_Data{Data: structpb.NewStringValue("x")}}
	token, _ := auth.MintHS256(testSecret, "alice", time.Hour, "", "")
	for name, ctx := range map[string]context.Context{
		"no key":       context.Background(),
		"wrong key":    bearer("wrong-key-0123456789"),
		"client token": bearer(token),
	} {
		if _, err := b.Broadcast(ctx, req); status.Code(err) != codes.Unauthenticated {
			t.Errorf("gRPC Broadcast with %s = %v; want Unauthenticated", name, err)
		}
	}
	for _, key := range []string{testKey, "old-key-0123456789ab"} {
		if _, err := b.Broadcast(bearer(key), req); err != nil {
			t.Errorf("gRPC Broadcast with a configured key: %v", err)
		}
	}
	body := `{"data": 1}`
	if code := restPost(t, d.HTTPAddr(), "/v1/broadcast", "", body); code != http.StatusUnauthorized {
		t.Errorf("REST without a key = %d; want 401", code)
	}
	if code := restPost(t, d.HTTPAddr(), "/v1/broadcast", "Bearer "+token, body); code != http.StatusUnauthorized {
		t.Errorf("REST with a client token = %d; want 401", code)
	}
	// A 401 carries a valid Bearer challenge; the reason is in the body.
	resp, err := http.Post("http://"+d.HTTPAddr()+"/v1/broadcast", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get("WWW-Authenticate"); !strings.HasPrefix(got, "Bearer ") {
		t.Errorf("WWW-Authenticate = %q; want a Bearer challenge", got)
	}
	if code := restPost(t, d.HTTPAddr(), "/v1/broadcast", "Bearer "+testKey, body); code != http.StatusOK {
		t.Errorf("REST with the key = %d; want 200", code)
	}
	// Each refusal is counted: 3 over gRPC, 3 over REST (through the
	// gateway, which calls gRPC).
	mresp, err := http.Get("http://" + d.HTTPAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(mresp.Body)
	mresp.Body.Close()
	if want := `presence_auth_failures_total{stage="api_key"} 6`; !strings.Contains(string(metrics), want) {
		t.Errorf("/metrics lacks %q", want)
	}
}

// TestSplitBackendListener proves that with its own listeners the backend
// API is served only there, while Connect stays on the public listener.
func TestSplitBackendListener(t *testing.T) {
	d := secured(t, func(c *Config) { c.BackendGRPCAddr, c.BackendHTTPAddr = "127.0.0.1:0", "127.0.0.1:0" })
	pub := presencev1.NewBackendServiceClient(dial(t, d))
	req := &presencev1.BroadcastRequest{Payload: &presencev1.BroadcastRequest_Data{Data: structpb.NewStringValue("x")}}
	if _, err := pub.Broadcast(bearer(testKey), req); status.Code(err) != codes.Unimplemented {
		t.Errorf("backend API on the public listener = %v; want Unimplemented", err)
	}
	cc, err := grpc.NewClient(d.BackendGRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if _, err := presencev1.NewBackendServiceClient(cc).Broadcast(bearer(testKey), req); err != nil {
		t.Errorf("backend API on its listener: %v", err)
	}
	if code := restPost(t, d.HTTPAddr(), "/v1/broadcast", "Bearer "+testKey, `{"data":1}`); code != http.StatusNotFound {
		t.Errorf("REST on the public HTTP listener = %d; want 404", code)
	}
	if code := restPost(t, d.BackendHTTPAddr(), "/v1/broadcast", "Bearer "+testKey, `{"data":1}`); code != http.StatusOK {
		t.Errorf("REST on the backend HTTP listener = %d; want 200", code)
	}
}

// TestSafeDefaults proves open mode is refused beyond loopback, with a
// message naming the flags, unless Insecure is set.
func TestSafeDefaults(t *testing.T) {
	cfg := Config{GRPCAddr: "0.0.0.0:0", HTTPAddr: "off", Logger: slog.New(slog.DiscardHandler)}
	_, err := Start(cfg)
	if err == nil || !strings.Contains(err.Error(), "--api-key") || !strings.Contains(err.Error(), "--token-secret") {
		t.Fatalf("Start on 0.0.0.0 without credentials = %v; want a refusal naming the flags", err)
	}
	cfg.Insecure = true
	d, err := Start(cfg)
	if err != nil {
		t.Fatalf("Start with Insecure: %v", err)
	}
	d.Shutdown(context.Background())
	for addr, want := range map[string]bool{"127.0.0.1:1": true, "[::1]:1": true, "localhost:1": true, "0.0.0.0:1": false, ":1": false, "10.0.0.1:1": false} {
		if got := isLoopback(addr); got != want {
			t.Errorf("isLoopback(%q) = %v; want %v", addr, got, want)
		}
	}
}

// TestWebSocketDevModeNeedsLoopback proves WebSockets open to every
// origin are refused on a non-loopback HTTP listener, with a message
// naming the flags, even with tokens and keys, unless Insecure is set; on
// loopback (or with HTTP off) they are allowed. Nothing listens beyond
// loopback: the check runs before any listener opens.
func TestWebSocketDevModeNeedsLoopback(t *testing.T) {
	v, err := auth.NewJWTVerifier(auth.JWTConfig{HMACSecret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	keys, err := auth.NewAPIKeys(testKey)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		httpAddr string
		devMode  bool
		insecure bool
		refused  bool
	}{
		{"dev mode on a wildcard address", "0.0.0.0:8080", true, false, true},
		{"dev mode on a LAN address", "10.0.0.1:8080", true, false, true},
		{"dev mode on a wildcard address with insecure", "0.0.0.0:8080", true, true, false},
		{"dev mode on loopback", "127.0.0.1:8080", true, false, false},
		{"dev mode with HTTP off", "off", true, false, false},
		{"origin checks on a wildcard address", "0.0.0.0:8080", false, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Config{
				GRPCAddr: "127.0.0.1:9090", HTTPAddr: tt.httpAddr, Insecure: tt.insecure,
				Server: server.Options{Tokens: v}, APIKeys: keys,
				WebSocket: wsbridge.Options{DevMode: tt.devMode},
			}
			err := cfg.checkSecurity()
			switch {
			case tt.refused && (err == nil || !strings.Contains(err.Error(), "--ws-dev-mode") || !strings.Contains(err.Error(), "--ws-allowed-origins")):
				t.Errorf("checkSecurity() = %v; want a refusal naming --ws-dev-mode and --ws-allowed-origins", err)
			case !tt.refused && err != nil:
				t.Errorf("checkSecurity() = %v; want nil", err)
			}
		})
	}
	cfg := Config{GRPCAddr: "127.0.0.1:0", HTTPAddr: "0.0.0.0:0", Server: server.Options{Tokens: v}, APIKeys: keys,
		WebSocket: wsbridge.Options{DevMode: true}, Logger: slog.New(slog.DiscardHandler)}
	if d, err := Start(cfg); err == nil {
		d.Shutdown(context.Background())
		t.Fatal("Start with WebSocket dev mode on 0.0.0.0 succeeded; want a refusal")
	}
}

// writeCert writes a self-signed certificate for 127.0.0.1 and returns the
// file paths and a pool that trusts it.
func writeCert(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "presence test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:    x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600)
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// connectTLS opens a Connect stream over TLS (trusting pool, no client
// certificate) and identifies as uid with a token; cleanup closes it.
func connectTLS(t *testing.T, addr string, pool *x509.CertPool, uid string) presencev1.PresenceService_ConnectClient {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream, err := presencev1.NewPresenceServiceClient(cc).Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	token, _ := auth.MintHS256(testSecret, uid, time.Hour, "", "")
	stream.Send(&presencev1.ConnectRequest{Frame: &presencev1.ConnectRequest_Identify{Identify: &presencev1.Identify{Token: token}}})
	if f, err := stream.Recv(); err != nil || f.GetIdentified().GetUid() != uid {
		t.Fatalf("Identify over TLS = %v, %v", f, err)
	}
	return stream
}

// TestTLS proves both listeners serve TLS with the given certificate: a
// gRPC client identifies and a REST push through the gateway (which dials
// gRPC over TLS) reaches it; plaintext is refused.
func TestTLS(t *testing.T) {
	certFile, keyFile, pool := writeCert(t)
	d := secured(t, func(c *Config) { c.TLSCertFile, c.TLSKeyFile = certFile, keyFile })
	stream := connectTLS(t, d.GRPCAddr(), pool, "alice")
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	defer hc.CloseIdleConnections()
	req, _ := http.NewRequest("POST", "https://"+d.HTTPAddr()+"/v1/uids/alice/messages", strings.NewReader(`{"data":"tls"}`))
	req.Header.Set("Authorization", "Bearer "+testKey)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("REST over TLS: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("REST over TLS = %d; want 200", resp.StatusCode)
	}
	if f, err := stream.Recv(); err != nil || f.GetPush().GetData().GetStringValue() != "tls" {
		t.Fatalf("push over TLS = %v, %v", f, err)
	}
	// A TLS server answers plaintext HTTP with a 400, never a success.
	if r, err := http.Get("http://" + d.HTTPAddr() + "/healthz"); err == nil {
		r.Body.Close()
		if r.StatusCode == 200 {
			t.Error("plaintext HTTP got 200 from a TLS listener")
		}
	}
}
