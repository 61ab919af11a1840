package main

import (
	"bytes"
	"flag"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/presence-dev/presence/daemon"
)

// TestEnvOverrides proves PRESENCE_* variables set flags the command line
// did not, and that the command line wins.
func TestEnvOverrides(t *testing.T) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	var cfg daemon.Config
	bindFlags(fs, &cfg)
	if err := fs.Parse([]string{"--heartbeat-interval=5s"}); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"PRESENCE_HEARTBEAT_TIMEOUT":  "60s",
		"PRESENCE_HEARTBEAT_INTERVAL": "1s", // the flag wins
		"PRESENCE_GRPC_ADDR":          "127.0.0.1:7000",
	}
	if err := applyEnv(fs, func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
		t.Fatal(err)
	}
	if cfg.Server.HeartbeatTimeout != 60*time.Second || cfg.Server.HeartbeatInterval != 5*time.Second || cfg.GRPCAddr != "127.0.0.1:7000" {
		t.Errorf("config = timeout %v interval %v addr %q; want 60s, 5s, 127.0.0.1:7000",
			cfg.Server.HeartbeatTimeout, cfg.Server.HeartbeatInterval, cfg.GRPCAddr)
	}
	if err := applyEnv(fs, func(k string) (string, bool) { return "soon", k == "PRESENCE_REAP_INTERVAL" }); err == nil ||
		!strings.Contains(err.Error(), "PRESENCE_REAP_INTERVAL") {
		t.Errorf("bad env value error = %v; want one naming PRESENCE_REAP_INTERVAL", err)
	}
}

// TestBadFlagsRefuseToStart proves settings that cannot work stop the
// daemon before it listens, with a message naming the problem.
func TestBadFlagsRefuseToStart(t *testing.T) {
	var stderr bytes.Buffer
	err := run([]string{"--heartbeat-interval=30s", "--heartbeat-timeout=40s", "--grpc-addr=127.0.0.1:0", "--http-addr=off"}, &stderr)
	if err == nil || !strings.Contains(err.Error(), "more than a third") {
		t.Fatalf("run = %v; want an error about the heartbeat interval", err)
	}
	if err := run([]string{"extra"}, &stderr); err == nil {
		t.Fatal("run with a positional argument succeeded")
	}
}

// TestWebSocketFlags proves the WebSocket flags and their PRESENCE_*
// variables reach the daemon's config, the origin list split and trimmed.
func TestWebSocketFlags(t *testing.T) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	var cfg daemon.Config
	web := bindWebFlags(fs, &cfg)
	if err := fs.Parse([]string{"--ws-allowed-origins= app.example.com, *.example.org ,", "--ws-read-limit=1024", "--no-web-console"}); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"PRESENCE_WS_DEV_MODE": "true", "PRESENCE_WS_WRITE_TIMEOUT": "3s", "PRESENCE_WS_READ_LIMIT": "9"}
	if err := applyEnv(fs, func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
		t.Fatal(err)
	}
	web.apply(&cfg)
	w := cfg.WebSocket
	if got := strings.Join(w.AllowedOrigins, "|"); got != "app.example.com|*.example.org" {
		t.Errorf("AllowedOrigins = %q; want app.example.com, *.example.org", w.AllowedOrigins)
	}
	if !w.DevMode || w.ReadLimit != 1024 || w.WriteTimeout != 3*time.Second || !cfg.NoWebConsole {
		t.Errorf("config = dev mode %v, read limit %d, write timeout %v, no console %v; want true, 1024, 3s, true",
			w.DevMode, w.ReadLimit, w.WriteTimeout, cfg.NoWebConsole)
	}
}

// TestWebSocketDevModeRefusedBeyondLoopback proves presenced will not
// start with WebSockets open to every origin on a non-loopback HTTP
// listener (the check runs before anything listens).
func TestWebSocketDevModeRefusedBeyondLoopback(t *testing.T) {
	var stderr bytes.Buffer
	err := run([]string{"--ws-dev-mode", "--grpc-addr=127.0.0.1:0", "--http-addr=0.0.0.0:0"}, &stderr)
	if err == nil || !strings.Contains(err.Error(), "--ws-dev-mode") {
		t.Fatalf("run = %v; want a refusal naming --ws-dev-mode", err)
	}
}

// TestTransportFlags proves the transport knobs reach daemon.Config from
// flags and PRESENCE_* variables, and that their defaults are the measured
// ones.
func TestTransportFlags(t *testing.T) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	var cfg daemon.Config
	_, level := bindFlags(fs, &cfg)
	if err := fs.Parse([]string{"--initial-window-size=1048576", "--log-level=warn"}); err != nil {
		t.Fatal(err)
	}
	if cfg.ReadBufferSize != daemon.DefaultReadBufferSize || cfg.WriteBufferSize != daemon.DefaultWriteBufferSize {
		t.Errorf("buffer defaults = %d, %d; want %d, %d", cfg.ReadBufferSize, cfg.WriteBufferSize, daemon.DefaultReadBufferSize, daemon.DefaultWriteBufferSize)
	}
	env := map[string]string{
		"PRESENCE_READ_BUFFER_SIZE":         "8192",
		"PRESENCE_WRITE_BUFFER_SIZE":        "4096",
		"PRESENCE_INITIAL_CONN_WINDOW_SIZE": "2097152",
		"PRESENCE_INITIAL_WINDOW_SIZE":      "65535", // the flag wins
	}
	if err := applyEnv(fs, func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
		t.Fatal(err)
	}
	if cfg.ReadBufferSize != 8192 || cfg.WriteBufferSize != 4096 || cfg.InitialWindowSize != 1<<20 || cfg.InitialConnWindowSize != 2<<20 || *level != "warn" {
		t.Errorf("config = read %d write %d window %d conn window %d level %q; want 8192 4096 1048576 2097152 warn",
			cfg.ReadBufferSize, cfg.WriteBufferSize, cfg.InitialWindowSize, cfg.InitialConnWindowSize, *level)
	}
	if err := fs.Set("initial-window-size", "3000000000"); err == nil {
		t.Error("--initial-window-size=3000000000 accepted; want an error (it does not fit HTTP/2's 31 bits)")
	}
}

// TestBadTransportFlagsRefuseToStart proves a window grpc-go would ignore
// and an unknown log level stop the daemon before it listens.
func TestBadTransportFlagsRefuseToStart(t *testing.T) {
	for _, tt := range []struct {
		flag, want string
	}{
		{"--initial-window-size=4096", "below HTTP/2's 65535"},
		{"--initial-conn-window-size=1", "below HTTP/2's 65535"},
		{"--read-buffer-size=-1", "must not be negative"},
		{"--log-level=loud", "--log-level"},
	} {
		var stderr bytes.Buffer
		err := run([]string{tt.flag, "--grpc-addr=127.0.0.1:0", "--http-addr=off"}, &stderr)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("run(%s) = %v; want an error containing %q", tt.flag, err, tt.want)
		}
	}
}

// TestClusterFlags proves the cluster flags and their PRESENCE_*
// variables reach the daemon's config, and that without --nats-url no
// cluster is configured.
func TestClusterFlags(t *testing.T) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	var cfg daemon.Config
	bindClusterFlags(fs, &cfg)
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	if cfg.Cluster.URL != "" {
		t.Fatalf("default --nats-url = %q; want empty (a single node)", cfg.Cluster.URL)
	}
	if err := fs.Parse([]string{"--nats-url=nats://127.0.0.1:4222", "--nats-name=n1"}); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"PRESENCE_NATS_NODE_TIMEOUT": "9s", "PRESENCE_NATS_NAME": "ignored"}
	if err := applyEnv(fs, func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
		t.Fatal(err)
	}
	c := cfg.Cluster
	if c.URL != "nats://127.0.0.1:4222" || c.Name != "n1" || c.NodeTimeout != 9*time.Second || c.Heartbeat != time.Second {
		t.Errorf("cluster config = %+v; want the URL, name n1, node timeout 9s, heartbeat 1s", c)
	}
}

// TestClusterRefusesUnreachableNATS proves presenced with --nats-url
// pointing nowhere stops at start with an error naming NATS, instead of
// running as a lone node that believes it is in a cluster.
func TestClusterRefusesUnreachableNATS(t *testing.T) {
	var stderr bytes.Buffer
	err := run([]string{"--nats-url=nats://" + closedPort(t), "--grpc-addr=127.0.0.1:0", "--http-addr=off"}, &stderr)
	if err == nil || !strings.Contains(err.Error(), "NATS") {
		t.Fatalf("run = %v; want an error about NATS", err)
	}
}

// closedPort returns a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}
