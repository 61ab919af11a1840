package daemon

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// devMode reports whether the daemon runs without client tokens or without
// API keys.
func (c Config) devMode() (noTokens, noKeys bool) {
	return c.Server.Tokens == nil, c.APIKeys == nil
}

// addrs lists every configured listener address.
func (c Config) addrs() []string {
	var out []string
	for _, a := range []string{c.GRPCAddr, c.HTTPAddr, c.BackendGRPCAddr, c.BackendHTTPAddr} {
		if a != "" && a != "off" {
			out = append(out, a)
		}
	}
	return out
}

// isLoopback reports whether a listen address binds loopback only.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// checkSecurity refuses to listen beyond loopback without client tokens
// and API keys, or with WebSockets open to every origin, unless Insecure
// is set.
func (c Config) checkSecurity() error {
	if c.WebSocket.DevMode && c.HTTPAddr != "off" && !isLoopback(c.HTTPAddr) && !c.Insecure {
		return fmt.Errorf("refusing --ws-dev-mode on %s, which is not loopback: any web page a user visits could open presence sessions in the user's name; list the pages' origins in --ws-allowed-origins, listen on 127.0.0.1, or pass --insecure to run it anyway",
			c.HTTPAddr)
	}
	noTokens, noKeys := c.devMode()
	if !noTokens && !noKeys || c.Insecure {
		return nil
	}
	for _, a := range c.addrs() {
		if !isLoopback(a) {
			var missing []string
			if noTokens {
				missing = append(missing, "--token-secret-file (or --token-secret, or --token-public-key-file)")
			}
			if noKeys {
				missing = append(missing, "--api-key-file (or --api-key)")
			}
			return fmt.Errorf("refusing to listen on %s, which is not loopback, without %s: anyone who reaches it could read any user's pushes or push to everyone; set them, listen on 127.0.0.1, or pass --insecure to run open anyway",
				a, strings.Join(missing, " and "))
		}
	}
	return nil
}

// logSecurity says at start what the daemon allows.
func (d *Daemon) logSecurity() {
	noTokens, noKeys := d.cfg.devMode()
	switch {
	case !noTokens && !noKeys:
		d.log.Info("security: clients need a signed token; the backend API needs an API key")
	case d.cfg.Insecure:
		d.log.Warn("INSECURE: --insecure is set and tokens or API keys are missing on non-loopback listeners; anyone who reaches this server can impersonate users or push to everyone",
			"client_tokens", !noTokens, "api_keys", !noKeys)
	default:
		d.log.Warn("open development mode: allowed because every listener is on loopback",
			"any_uid_accepted", noTokens, "backend_api_open", noKeys)
	}
	if d.cfg.WebSocket.DevMode && d.cfg.HTTPAddr != "off" {
		d.log.Warn("WebSocket development mode: pages from any origin may open sessions at /v1/connect", "insecure", d.cfg.Insecure)
	}
}

// serverTLS loads the certificate, or returns nil for plaintext.
func (c Config) serverTLS() (*tls.Config, error) {
	if c.TLSCertFile == "" && c.TLSKeyFile == "" {
		return nil, nil
	}
	if c.TLSCertFile == "" || c.TLSKeyFile == "" {
		return nil, errors.New("TLS needs both --tls-cert and --tls-key")
	}
	cert, err := tls.LoadX509KeyPair(c.TLSCertFile, c.TLSKeyFile)
	if err != nil {
		return nil, fmt.Errorf("TLS certificate: %w", err)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		NextProtos:   []string{"h2", "http/1.1"},
	}, nil
}

// backendTLS is the TLS configuration of the backend listeners: the
// server's, plus, with BackendClientCAFile, a required client certificate
// that chains to one of its CAs. The daemon's own certificate is accepted
// too: the REST gateway presents it when it dials the backend gRPC
// server (in process, through the same TLS).
func (c Config) backendTLS(server *tls.Config) (*tls.Config, error) {
	if c.BackendClientCAFile == "" {
		return server, nil
	}
	switch {
	case server == nil:
		return nil, errors.New("--backend-client-ca needs TLS: set --tls-cert and --tls-key")
	case c.BackendGRPCAddr == "":
		return nil, errors.New("--backend-client-ca applies to the backend listeners: set --backend-grpc-addr (the client listener keeps plain TLS)")
	case c.BackendHTTPAddr == "" && c.HTTPAddr != "off":
		return nil, errors.New("--backend-client-ca: the REST facade would stay on --http-addr without client certificates; set --backend-http-addr (or --http-addr off)")
	}
	pemBytes, err := os.ReadFile(c.BackendClientCAFile)
	if err != nil {
		return nil, fmt.Errorf("--backend-client-ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		return nil, fmt.Errorf("--backend-client-ca %s: no PEM certificate in it", c.BackendClientCAFile)
	}
	own := server.Certificates[0].Certificate[0]
	b := server.Clone()
	b.ClientAuth = tls.RequireAnyClientCert
	b.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error {
		if bytes.Equal(raw[0], own) {
			return nil // the daemon's own gateway
		}
		certs := make([]*x509.Certificate, len(raw))
		for i, r := range raw {
			if certs[i], err = x509.ParseCertificate(r); err != nil {
				return fmt.Errorf("client certificate: %w", err)
			}
		}
		inter := x509.NewCertPool()
		for _, ic := range certs[1:] {
			inter.AddCert(ic)
		}
		_, err := certs[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
		if err != nil {
			return fmt.Errorf("client certificate not signed by --backend-client-ca: %w", err)
		}
		return nil
	}
	return b, nil
}

// gatewayDialCreds are the credentials the REST gateway dials its own gRPC
// server with (over an in-memory listener, so the server's TLS and
// interceptors apply as to any client): plaintext, or TLS pinned to the
// daemon's own certificate (no address to check a name against), which it
// also presents as its client certificate for mutual TLS.
func (c Config) gatewayDialCreds(server *tls.Config) grpc.DialOption {
	if server == nil {
		return grpc.WithTransportCredentials(insecure.NewCredentials())
	}
	own := server.Certificates[0].Certificate[0]
	return grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		Certificates:       server.Certificates,
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: true, // replaced by the pin below
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 || !bytes.Equal(cs.PeerCertificates[0].Raw, own) {
				return errors.New("gateway: the gRPC listener did not present this daemon's certificate")
			}
			return nil
		},
	}))
}
