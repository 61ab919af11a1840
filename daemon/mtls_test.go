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
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/structpb"

	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
)

// testCA is a CA generated at test time that signs client certificates.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	file string // PEM of cert
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(100), Subject: pkix.Name{CommonName: "presence test backend CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	file := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	return &testCA{cert: cert, key: key, file: file}
}

// client returns a client certificate signed by ca.
func (ca *testCA) client(t *testing.T, name string) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestBackendMutualTLS proves --backend-client-ca: the backend listeners
// (gRPC and REST) accept a client certificate the CA signed and refuse one
// it did not sign, or none; the REST gateway still reaches the backend
// gRPC listener; clients connect to the public listener without one.
func TestBackendMutualTLS(t *testing.T) {
	certFile, keyFile, pool := writeCert(t)
	ca, other := newTestCA(t), newTestCA(t)
	d := secured(t, func(c *Config) {
		c.TLSCertFile, c.TLSKeyFile = certFile, keyFile
		c.BackendGRPCAddr, c.BackendHTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
		c.BackendClientCAFile = ca.file
	})
	good, wrong := ca.client(t, "backend"), other.client(t, "intruder")

	// A client session on the public listener: TLS, no client certificate.
	stream := connectTLS(t, d.GRPCAddr(), pool, "alice")

	sendGRPC := func(cert *tls.Certificate) error {
		cfg := &tls.Config{RootCAs: pool}
		if cert != nil {
			cfg.Certificates = []tls.Certificate{*cert}
		}
		bc, err := grpc.NewClient(d.BackendGRPCAddr(), grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
		if err != nil {
			t.Fatal(err)
		}
		defer bc.Close()
		ctx, cancel := context.WithTimeout(bearer(testKey), 5*time.Second)
		defer cancel()
		_, err = presencev1.NewBackendServiceClient(bc).SendToUid(ctx, &presencev1.SendToUidRequest{Uid: "alice",
			Payload: &presencev1.SendToUidRequest_Data{Data: structpb.NewStringValue("mtls")}})
		return err
	}
	if err := sendGRPC(&good); err != nil {
		t.Fatalf("backend gRPC with a CA-signed certificate: %v", err)
	}
	if f, err := stream.Recv(); err != nil || f.GetPush().GetData().GetStringValue() != "mtls" {
		t.Fatalf("push = %v, %v", f, err)
	}
	for name, cert := range map[string]*tls.Certificate{"no certificate": nil, "another CA's certificate": &wrong} {
		if err := sendGRPC(cert); err == nil {
			t.Errorf("backend gRPC with %s succeeded; want the handshake refused", name)
		}
	}

	postREST := func(cert *tls.Certificate) (int, error) {
		cfg := &tls.Config{RootCAs: pool}
		if cert != nil {
			cfg.Certificates = []tls.Certificate{*cert}
		}
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 5 * time.Second}
		defer hc.CloseIdleConnections()
		req, _ := http.NewRequest("POST", "https://"+d.BackendHTTPAddr()+"/v1/uids/alice/messages", strings.NewReader(`{"data": "rest"}`))
		req.Header.Set("Authorization", "Bearer "+testKey)
		resp, err := hc.Do(req)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	// Through the gateway, which dials the backend gRPC listener itself.
	if code, err := postREST(&good); err != nil || code != 200 {
		t.Fatalf("REST with a CA-signed certificate = %d, %v; want 200", code, err)
	}
	if f, err := stream.Recv(); err != nil || f.GetPush().GetData().GetStringValue() != "rest" {
		t.Fatalf("push = %v, %v", f, err)
	}
	for name, cert := range map[string]*tls.Certificate{"no certificate": nil, "another CA's certificate": &wrong} {
		if code, err := postREST(cert); err == nil {
			t.Errorf("REST with %s = %d; want the handshake refused", name, code)
		}
	}
}

// TestBackendMutualTLSNeedsSplitListeners proves the client CA is refused
// where it would not protect the backend API.
func TestBackendMutualTLSNeedsSplitListeners(t *testing.T) {
	certFile, keyFile, _ := writeCert(t)
	ca := newTestCA(t)
	for name, mod := range map[string]func(*Config){
		"no TLS":                   func(c *Config) { c.TLSCertFile, c.TLSKeyFile = "", "" },
		"no backend gRPC listener": func(c *Config) { c.BackendGRPCAddr = "" },
		"REST on the public port":  func(c *Config) { c.BackendHTTPAddr = "" },
	} {
		cfg := Config{GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", BackendGRPCAddr: "127.0.0.1:0", BackendHTTPAddr: "127.0.0.1:0",
			TLSCertFile: certFile, TLSKeyFile: keyFile, BackendClientCAFile: ca.file}
		mod(&cfg)
		if d, err := Start(cfg); err == nil {
			d.Shutdown(context.Background())
			t.Errorf("%s: Start succeeded; want a refusal", name)
		} else if !strings.Contains(err.Error(), "--backend-client-ca") {
			t.Errorf("%s: error %q does not name --backend-client-ca", name, err)
		}
	}
}
