// Command devserver is a test-only presence server for the browser test
// (web/test/run.sh) until presenced mounts the WebSocket bridge and the
// page itself: it runs the daemon (gRPC and REST on a back HTTP port) and
// serves, on the front HTTP port, /v1/connect (the bridge on the daemon's
// server), the page at /, and everything else under /v1/ and /healthz by
// reverse proxy to the daemon's REST listener.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/presence-dev/presence/daemon"
	"github.com/presence-dev/presence/web"
	"github.com/presence-dev/presence/wsbridge"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "devserver:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		cfg      daemon.Config
		front    string
		origins  string
		devMode  bool
		shutdown time.Duration
	)
	o := &cfg.Server
	flag.StringVar(&front, "http-addr", "127.0.0.1:8080", "front HTTP address: the page, /v1/connect, and a proxy to the daemon's REST API")
	flag.StringVar(&cfg.HTTPAddr, "backend-http-addr", "127.0.0.1:8081", "the daemon's own HTTP listener (REST), reached through the front")
	flag.StringVar(&cfg.GRPCAddr, "grpc-addr", "127.0.0.1:9090", "gRPC listen address")
	flag.StringVar(&origins, "ws-allowed-origins", "", "comma-separated origin host patterns allowed to open WebSockets besides the page's own")
	flag.BoolVar(&devMode, "ws-dev-mode", false, "accept WebSockets from any origin (development only)")
	flag.DurationVar(&o.HeartbeatInterval, "heartbeat-interval", 0, "Ping interval announced to clients (default the server's)")
	flag.DurationVar(&o.HeartbeatTimeout, "heartbeat-timeout", 0, "end a session silent for this long (default the server's)")
	flag.DurationVar(&o.ShutdownReconnectMin, "shutdown-reconnect-min", 0, "smallest reconnect hint in Goodbye SHUTDOWN")
	flag.DurationVar(&o.ShutdownReconnectJitter, "shutdown-reconnect-jitter", 0, "random part of the shutdown reconnect hint")
	flag.DurationVar(&shutdown, "shutdown-timeout", 5*time.Second, "bound on a graceful shutdown")
	flag.Parse()
	cfg.ShutdownTimeout = shutdown
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	cfg.Logger = log

	d, err := daemon.Start(cfg)
	if err != nil {
		return err
	}
	var allowed []string
	for _, p := range strings.Split(origins, ",") {
		if p = strings.TrimSpace(p); p != "" {
			allowed = append(allowed, p)
		}
	}
	bridge, err := wsbridge.New(d.Server(), wsbridge.Options{AllowedOrigins: allowed, DevMode: devMode, Logger: log})
	if err != nil {
		d.Shutdown(context.Background())
		return err
	}
	backend := &url.URL{Scheme: "http", Host: d.HTTPAddr()}
	proxy := httputil.NewSingleHostReverseProxy(backend)
	proxy.FlushInterval = -1 // stream watch responses as they come

	mux := http.NewServeMux()
	mux.Handle("/v1/connect", bridge)
	mux.Handle("/v1/", proxy)
	mux.Handle("/healthz", proxy)
	mux.Handle("/", web.Handler())

	lis, err := net.Listen("tcp", front)
	if err != nil {
		d.Shutdown(context.Background())
		return fmt.Errorf("front listener: %w", err)
	}
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(lis) }()
	log.Info("devserver listening", "front", lis.Addr().String(), "backend", d.HTTPAddr(), "grpc", d.GRPCAddr())

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	select {
	case s := <-sig:
		log.Info("devserver stopping", "signal", s.String())
	case err := <-errc:
		log.Error("front listener failed", "error", err)
	case err := <-d.Err():
		log.Error("daemon listener failed", "error", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), shutdown)
	defer cancel()
	// Sessions first (gRPC and WebSocket: Goodbye SHUTDOWN), then the
	// sockets' close handshakes, then the front.
	t0 := time.Now()
	errs := []error{d.Shutdown(ctx)}
	t1 := time.Now()
	errs = append(errs, bridge.Wait(ctx))
	t2 := time.Now()
	if err := hs.Shutdown(ctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		errs = append(errs, err)
	}
	log.Info("devserver stopped", "daemon", t1.Sub(t0).Round(time.Millisecond),
		"websockets", t2.Sub(t1).Round(time.Millisecond), "front", time.Since(t2).Round(time.Millisecond))
	return errors.Join(errs...)
}
