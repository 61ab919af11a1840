// Package daemon wires a presence server to its listeners: the gRPC
// listener (both services, health, reflection, transport keepalive) and the
// HTTP listener (the grpc-gateway REST facade, /healthz, /openapi.json,
// /metrics with the server's presence_* metrics and the Go runtime's, the
// WebSocket bridge at /v1/connect and the debug console at /).
// cmd/presenced is flags around it; tests and tools start it in-process.
package daemon

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/presence-dev/presence/auth"
	"github.com/presence-dev/presence/cluster"
	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
	"github.com/presence-dev/presence/server"
	"github.com/presence-dev/presence/wsbridge"
)

// Config is everything a daemon needs. Zero values take the defaults
// written beside each field.
type Config struct {
	// GRPCAddr is the gRPC listener. Default 127.0.0.1:9090.
	GRPCAddr string
	// HTTPAddr is the HTTP listener (REST, health, OpenAPI, the
	// WebSocket bridge and the debug console). Default 127.0.0.1:8080.
	// "off" disables it.
	HTTPAddr string
	// BackendGRPCAddr, when set, serves the backend API on its own gRPC
	// listener (for an internal network) and no longer on GRPCAddr.
	BackendGRPCAddr string
	// BackendHTTPAddr, when set, serves the REST facade, /metrics and
	// /openapi.json on their own HTTP listener and no longer on HTTPAddr.
	BackendHTTPAddr string

	// APIKeys open the backend API ("authorization: Bearer <key>"). Nil
	// with a nil Server.Tokens is open development mode, allowed only when
	// every listener is on loopback (or Insecure is set).
	APIKeys *auth.APIKeys
	// Insecure allows running without tokens or keys on non-loopback
	// listeners. Logged loudly.
	Insecure bool
	// TLSCertFile and TLSKeyFile, when set, serve TLS on every listener.
	TLSCertFile string
	TLSKeyFile  string
	// BackendClientCAFile, when set, makes the backend listeners
	// (BackendGRPCAddr, and BackendHTTPAddr) require a client certificate
	// signed by one of the CA certificates in this PEM file: mutual TLS.
	// Needs TLS and a separate backend listener for each API the backend
	// uses; the client listeners are unchanged.
	BackendClientCAFile string

	// Server configures sessions, queues and the reaper.
	Server server.Options

	// Cluster, when its URL is set, makes this daemon one node of a
	// cluster over NATS (package cluster; Server.Cluster is then set by
	// Start). Empty URL: a single node, and nothing of the cluster runs.
	Cluster cluster.Config

	// WebSocket configures the bridge at /v1/connect on HTTPAddr: browser
	// sessions, run by Server like any Connect stream. Its Logger
	// defaults to Logger. DevMode (any origin) is refused on a
	// non-loopback HTTPAddr unless Insecure is set.
	WebSocket wsbridge.Options
	// NoWebConsole stops serving the debug console and presence.js at /
	// on HTTPAddr.
	NoWebConsole bool

	// Keepalive and KeepalivePolicy are the transport keepalive settings.
	// Zero values take server.DefaultKeepaliveParams and
	// server.DefaultKeepalivePolicy.
	Keepalive       keepalive.ServerParameters
	KeepalivePolicy keepalive.EnforcementPolicy

	// MaxRecvMsgBytes caps one received gRPC message. Larger ones end the
	// call with RESOURCE_EXHAUSTED. Default 256 KiB: room for the largest
	// push payload (64 KiB by default) and its framing.
	MaxRecvMsgBytes int

	// Per-connection transport memory. Zero keeps grpc-go's defaults
	// (32 KiB read buffer, 32 KiB write buffer, 64 KiB stream and
	// connection windows growing with BDP estimation). Setting a window
	// disables BDP estimation; a window below 65,535 bytes (HTTP/2's
	// initial window) is an error, since grpc-go would ignore it. grpc-go
	// (1.85) pools both buffers between reads and writes, so an idle
	// connection holds neither and their size does not change idle memory
	// (BENCHMARKS.md, "Transport knobs").
	ReadBufferSize        int
	WriteBufferSize       int
	InitialWindowSize     int32
	InitialConnWindowSize int32

	// Transport is the server behind GRPCAddr: TransportLite (package
	// lite, the default: one goroutine per connection and none per Connect
	// stream; an idle session costs ≈12 KiB against ≈37 KiB with grpc-go,
	// BENCHMARKS.md, "The lite transport") or TransportGRPC (grpc-go). Both
	// serve every service the same (Connect, health, reflection, the
	// backend API when it is not split off), over h2c or TLS, with no
	// compression (this binary registers no compressor either way).
	// ReadBufferSize and WriteBufferSize apply to grpc-go only; the lite
	// transport has no MaxConnectionIdle or MaxConnectionAge. A separate
	// backend listener (BackendGRPCAddr) is always grpc-go.
	Transport string

	// MaxBodyBytes caps a REST request body before it is decoded. Larger
	// bodies get HTTP 413. Default 256 KiB.
	MaxBodyBytes int64

	// ShutdownTimeout bounds Shutdown when the caller's context has no
	// deadline. Default 15 s.
	ShutdownTimeout time.Duration
	// GracefulStopTimeout bounds the wait for calls other than Connect
	// (unary calls, health Watch streams) once every session has ended;
	// then they are cut. Default 3 s.
	GracefulStopTimeout time.Duration

	// Logger for the daemon and the server. Default slog.Default().
	Logger *slog.Logger
}

// Defaults.
const (
	DefaultGRPCAddr        = "127.0.0.1:9090"
	DefaultHTTPAddr        = "127.0.0.1:8080"
	DefaultMaxRecvMsgBytes = 256 << 10
	DefaultMaxBodyBytes    = 256 << 10
	DefaultShutdownTimeout = 15 * time.Second
	DefaultGracefulStop    = 3 * time.Second
	// DefaultReadBufferSize and DefaultWriteBufferSize are grpc-go's own:
	// 8 KiB and 4 KiB buffers saved no measurable idle memory (grpc-go
	// pools both) nor changed multiplexed fan-out (BENCHMARKS.md,
	// "Transport knobs").
	DefaultReadBufferSize  = 32 << 10
	DefaultWriteBufferSize = 32 << 10
)

// Transports for Config.Transport.
const (
	TransportGRPC = "grpc"
	TransportLite = "lite"
)

func (c Config) withDefaults() Config {
	if c.GRPCAddr == "" {
		c.GRPCAddr = DefaultGRPCAddr
	}
	if c.HTTPAddr == "" {
		c.HTTPAddr = DefaultHTTPAddr
	}
	if c.Keepalive == (keepalive.ServerParameters{}) {
		c.Keepalive = server.DefaultKeepaliveParams
	}
	if c.KeepalivePolicy == (keepalive.EnforcementPolicy{}) {
		c.KeepalivePolicy = server.DefaultKeepalivePolicy
	}
	if c.Transport == "" {
		c.Transport = TransportLite
	}
	if c.MaxRecvMsgBytes == 0 {
		c.MaxRecvMsgBytes = DefaultMaxRecvMsgBytes
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	if c.GracefulStopTimeout == 0 {
		c.GracefulStopTimeout = DefaultGracefulStop
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Server.Logger == nil {
		c.Server.Logger = c.Logger
	}
	if c.WebSocket.Logger == nil {
		c.WebSocket.Logger = c.Logger
	}
	return c
}

// Daemon is a running presence service.
type Daemon struct {
	cfg    Config
	log    *slog.Logger
	srv    *server.Server
	ws     *wsbridge.Handler // sessions over WebSocket, on the public HTTP listener
	health *health.Server    // shared by every gRPC server
	// metrics is this daemon's own registry (not the global one), so
	// several daemons can run in one process.
	metrics *prometheus.Registry

	public  *grpcListener // Connect (and the backend API unless split)
	backend *grpcListener // the backend API when BackendGRPCAddr is set; else nil
	https   []*httpListener
	gwConn  *grpc.ClientConn            // the gateway's connection to the gRPC server with the backend API (for WatchPresence)
	gwLis   *bufconn.Listener           // that server's in-process listener, which gwConn dials
	gwUnary grpc.UnaryServerInterceptor // that server's unary interceptors, which the gateway's in-process calls run

	draining atomic.Bool // /healthz answers 503 once set
	errc     chan error  // serve errors; buffered
	shutOnce sync.Once
	shutErr  error
}

type grpcListener struct {
	lis   net.Listener
	gs    rpcServer
	unary grpc.UnaryServerInterceptor // what gs runs around unary calls; nil: nothing
}

// rpcServer is what the daemon needs of a gRPC server: grpc-go's
// *grpc.Server or the lite transport's (liteServer).
type rpcServer interface {
	reflection.GRPCServer
	Serve(net.Listener) error
	GracefulStop()
	Stop()
}

type httpListener struct {
	lis net.Listener
	hs  *http.Server
}

// Start listens and serves until Shutdown. On error nothing is left
// running.
func Start(cfg Config) (d *Daemon, err error) {
	cfg = cfg.withDefaults()
	if err := cfg.checkSecurity(); err != nil {
		return nil, err
	}
	if err := cfg.checkTransport(); err != nil {
		return nil, err
	}
	tlsCfg, err := cfg.serverTLS()
	if err != nil {
		return nil, err
	}
	if cfg.Cluster.URL != "" {
		if cfg.Cluster.Logger == nil {
			cfg.Cluster.Logger = cfg.Logger
		}
		node, err := cluster.New(cfg.Cluster)
		if err != nil {
			return nil, err
		}
		cfg.Server.Cluster = node
	}
	srv, err := server.New(cfg.Server)
	if err != nil {
		if cfg.Server.Cluster != nil {
			cfg.Server.Cluster.Close()
		}
		return nil, fmt.Errorf("server options: %w", err)
	}
	d = &Daemon{cfg: cfg, log: cfg.Logger, srv: srv, errc: make(chan error, 8), metrics: prometheus.NewRegistry(),
		health: health.NewServer()}
	started := d // the error returns below set d to nil

	d.metrics.MustRegister(
		// The defaults, plus the live heap as the last GC marked it
		// (go_gc_heap_live_bytes): unlike go_memstats_heap_*, it does not
		// count what was allocated since, so it shows a leak, or its
		// absence, without the noise of the allocations in between.
		collectors.NewGoCollector(collectors.WithGoCollectorRuntimeMetrics(
			collectors.GoRuntimeMetricsRule{Matcher: regexp.MustCompile(`^/gc/heap/live:bytes$`)})),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		srv.Collector(),
	)
	defer func() {
		if err != nil {
			started.closeAll()
		}
	}()
	if d.ws, err = wsbridge.New(srv, cfg.WebSocket); err != nil {
		return nil, fmt.Errorf("WebSocket options: %w", err)
	}

	backendTLS, err := cfg.backendTLS(tlsCfg)
	if err != nil {
		return nil, err
	}
	split := cfg.BackendGRPCAddr != ""
	if d.public, err = d.listenGRPC("gRPC", cfg.GRPCAddr, tlsCfg, !split, cfg.Transport == TransportLite); err != nil {
		return nil, err
	}
	presencev1.RegisterPresenceServiceServer(d.public.gs, srv)
	if l, ok := d.public.gs.(*liteServer); ok {
		l.HandleEvents(presencev1.PresenceService_Connect_FullMethodName, liteConnect(srv))
		d.metrics.MustRegister(newLiteCollector(l.Server))
	}
	backendGRPC := d.public
	if split {
		if d.backend, err = d.listenGRPC("backend gRPC", cfg.BackendGRPCAddr, backendTLS, true, false); err != nil {
			return nil, err
		}
		backendGRPC = d.backend
	}
	presencev1.RegisterBackendServiceServer(backendGRPC.gs, srv)

	// The REST facade and /metrics go on the backend HTTP listener when
	// there is one, else on the main HTTP listener.
	restAddr := cfg.BackendHTTPAddr
	if restAddr == "" {
		restAddr = cfg.HTTPAddr
	}
	if restAddr != "off" {
		// The gateway reaches the backend API in process: unary calls
		// directly, through the backend gRPC server's interceptors
		// (inProcessBackend); WatchPresence through the same grpc.Server
		// (its interceptors, its TLS) on an in-memory listener. Either
		// way no REST call takes a loopback TCP round trip.
		d.gwUnary = backendGRPC.unary
		d.gwLis = bufconn.Listen(256 << 10)
		dial := func(ctx context.Context, _ string) (net.Conn, error) { return d.gwLis.DialContext(ctx) }
		if d.gwConn, err = grpc.NewClient("passthrough:///in-process", grpc.WithContextDialer(dial), cfg.gatewayDialCreds(tlsCfg)); err != nil {
			return nil, fmt.Errorf("gateway client: %w", err)
		}
	}
	if cfg.HTTPAddr != "off" {
		h, err := d.httpHandler(context.Background(), true, cfg.BackendHTTPAddr == "")
		if err != nil {
			return nil, err
		}
		if err := d.listenHTTP("HTTP", cfg.HTTPAddr, h, tlsCfg); err != nil {
			return nil, err
		}
	}
	if cfg.BackendHTTPAddr != "" && cfg.BackendHTTPAddr != "off" {
		h, err := d.httpHandler(context.Background(), false, true)
		if err != nil {
			return nil, err
		}
		if err := d.listenHTTP("backend HTTP", cfg.BackendHTTPAddr, h, backendTLS); err != nil {
			return nil, err
		}
	}

	for _, g := range []*grpcListener{d.public, d.backend} {
		if g != nil {
			go func() { d.errc <- g.gs.Serve(g.lis) }()
		}
	}
	if d.gwLis != nil {
		go func() { d.errc <- backendGRPC.gs.Serve(d.gwLis) }()
	}
	for _, h := range d.https {
		go func() {
			var err error
			if tlsCfg != nil {
				err = h.hs.ServeTLS(h.lis, "", "")
			} else {
				err = h.hs.Serve(h.lis)
			}
			if !errors.Is(err, http.ErrServerClosed) {
				d.errc <- err
			}
		}()
	}
	d.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	attrs := []any{"grpc", d.GRPCAddr(), "transport", cfg.Transport, "tls", tlsCfg != nil}
	if d.backend != nil {
		attrs = append(attrs, "backend_grpc", d.backend.lis.Addr().String())
	}
	for i, h := range d.https {
		attrs = append(attrs, fmt.Sprintf("http%d", i), h.lis.Addr().String())
	}
	d.log.Info("presenced listening", attrs...)
	d.logSecurity()
	return d, nil
}

// listenGRPC opens a gRPC listener with health and reflection, requiring
// the API key for the backend API when withKeys and keys are configured,
// served by the lite transport when lite, else by grpc-go.
func (d *Daemon) listenGRPC(name, addr string, tlsCfg *tls.Config, withKeys, lite bool) (*grpcListener, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s listener: %w", name, err)
	}
	var intercept grpc.UnaryServerInterceptor
	var streamIntercept grpc.StreamServerInterceptor
	if withKeys && d.cfg.APIKeys != nil {
		unary, stream := d.cfg.APIKeys.Interceptors("/" + presencev1.BackendService_ServiceDesc.ServiceName + "/")
		// Outside the key check: count what it refuses.
		intercept = func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			resp, err := unary(ctx, req, info, h)
			if status.Code(err) == codes.Unauthenticated {
				d.srv.CountAPIKeyFailure()
			}
			return resp, err
		}
		streamIntercept = func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			err := stream(srv, ss, info, h)
			if !info.IsClientStream && status.Code(err) == codes.Unauthenticated {
				d.srv.CountAPIKeyFailure() // server streams are backend calls (WatchPresence); Connect counts its own
			}
			return err
		}
	}
	g := &grpcListener{lis: lis, unary: intercept}
	if lite {
		g.gs = d.cfg.newLiteServer(intercept, streamIntercept)
		if tlsCfg != nil {
			g.lis = tls.NewListener(lis, liteTLS(tlsCfg))
		}
	} else {
		opts := d.cfg.grpcOptions()
		if tlsCfg != nil {
			opts = append(opts, grpc.Creds(credentials.NewTLS(tlsCfg)))
		}
		if intercept != nil {
			opts = append(opts, grpc.UnaryInterceptor(intercept), grpc.StreamInterceptor(streamIntercept))
		}
		g.gs = grpc.NewServer(opts...)
	}
	healthpb.RegisterHealthServer(g.gs, d.health)
	reflection.Register(g.gs)
	return g, nil
}

// listenHTTP opens an HTTP listener hardened like any public HTTP server.
func (d *Daemon) listenHTTP(name, addr string, h http.Handler, tlsCfg *tls.Config) error {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("%s listener: %w", name, err)
	}
	d.https = append(d.https, &httpListener{lis: lis, hs: &http.Server{
		Handler:           h,
		TLSConfig:         tlsCfg,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(d.cfg.Logger.Handler(), slog.LevelWarn),
	}})
	return nil
}

// grpcOptions are the gRPC server's transport options.
func (c Config) grpcOptions() []grpc.ServerOption {
	opts := []grpc.ServerOption{
		grpc.KeepaliveParams(c.Keepalive),
		grpc.KeepaliveEnforcementPolicy(c.KeepalivePolicy),
		grpc.MaxRecvMsgSize(c.MaxRecvMsgBytes),
	}
	if c.ReadBufferSize != 0 {
		opts = append(opts, grpc.ReadBufferSize(c.ReadBufferSize))
	}
	if c.WriteBufferSize != 0 {
		opts = append(opts, grpc.WriteBufferSize(c.WriteBufferSize))
	}
	if c.InitialWindowSize != 0 {
		opts = append(opts, grpc.InitialWindowSize(c.InitialWindowSize))
	}
	if c.InitialConnWindowSize != 0 {
		opts = append(opts, grpc.InitialConnWindowSize(c.InitialConnWindowSize))
	}
	return opts
}

// checkTransport reports transport settings grpc-go would silently ignore
// or misread.
func (c Config) checkTransport() error {
	var errs []error
	for _, w := range []struct {
		name string
		v    int32
	}{{"initial window size", c.InitialWindowSize}, {"initial connection window size", c.InitialConnWindowSize}} {
		if w.v != 0 && w.v < 65535 {
			errs = append(errs, fmt.Errorf("%s %d is below HTTP/2's 65535 bytes, which grpc-go would use instead; give 0 (the default) or at least 65535", w.name, w.v))
		}
	}
	if c.ReadBufferSize < 0 || c.WriteBufferSize < 0 {
		errs = append(errs, errors.New("read and write buffer sizes must not be negative"))
	}
	switch c.Transport {
	case TransportGRPC:
	case TransportLite:
		if c.Keepalive.MaxConnectionIdle != 0 || c.Keepalive.MaxConnectionAge != 0 {
			errs = append(errs, errors.New("the lite transport has no MaxConnectionIdle or MaxConnectionAge (sessions end by Goodbye, not by closing connections); leave them 0 or use the grpc transport"))
		}
	default:
		errs = append(errs, fmt.Errorf("transport %q: want %q or %q", c.Transport, TransportGRPC, TransportLite))
	}
	return errors.Join(errs...)
}

// Server returns the presence server.
func (d *Daemon) Server() *server.Server { return d.srv }

// GRPCAddr is the main gRPC listener's address.
func (d *Daemon) GRPCAddr() string { return d.public.lis.Addr().String() }

// BackendGRPCAddr is the gRPC address serving the backend API.
func (d *Daemon) BackendGRPCAddr() string {
	if d.backend != nil {
		return d.backend.lis.Addr().String()
	}
	return d.GRPCAddr()
}

// HTTPAddr is the main HTTP listener's address, or "" when it is off.
func (d *Daemon) HTTPAddr() string {
	if d.cfg.HTTPAddr == "off" || len(d.https) == 0 {
		return ""
	}
	return d.https[0].lis.Addr().String()
}

// BackendHTTPAddr is the HTTP address serving the REST facade, or "".
func (d *Daemon) BackendHTTPAddr() string {
	if d.cfg.BackendHTTPAddr != "" && d.cfg.BackendHTTPAddr != "off" {
		return d.https[len(d.https)-1].lis.Addr().String()
	}
	return d.HTTPAddr()
}

// Err delivers an error if a listener stops serving on its own.
func (d *Daemon) Err() <-chan error { return d.errc }

// Shutdown drains: health turns NOT_SERVING, every session (gRPC and
// WebSocket) gets Goodbye SHUTDOWN with a jittered reconnect hint and its
// stream ends, the WebSockets finish their close handshakes, the HTTP
// server stops, then the gRPC server stops gracefully, falling back to a
// hard stop when ctx (or the configured timeout) runs out. Idempotent.
func (d *Daemon) Shutdown(ctx context.Context) error {
	d.shutOnce.Do(func() {
		if _, ok := ctx.Deadline(); !ok {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, d.cfg.ShutdownTimeout)
			defer cancel()
		}
		d.log.Info("presenced shutting down")
		d.draining.Store(true)
		d.health.Shutdown()
		var errs []error
		if err := d.srv.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("ending sessions: %w", err))
		}
		// http.Server.Shutdown does not wait for hijacked connections:
		// wait here, so every WebSocket has sent its Goodbye and closed.
		if err := d.ws.Wait(ctx); err != nil {
			errs = append(errs, fmt.Errorf("closing WebSockets: %w", err))
		}
		for _, h := range d.https {
			if err := h.hs.Shutdown(ctx); err != nil {
				errs = append(errs, fmt.Errorf("HTTP shutdown: %w", err))
				h.hs.Close()
			}
		}
		// Sessions are gone; what is left are unary calls, which finish
		// quickly, and health Watch streams, which end only when their
		// clients hang up. Wait a little for both, then stop hard.
		stopped := make(chan struct{})
		go func() {
			for _, g := range d.grpcServers() {
				g.GracefulStop()
			}
			close(stopped)
		}()
		grace := time.NewTimer(d.cfg.GracefulStopTimeout)
		defer grace.Stop()
		select {
		case <-stopped:
		case <-grace.C:
			d.log.Warn("gRPC streams still open after the graceful stop timeout; closing them", "timeout", d.cfg.GracefulStopTimeout)
			d.stopGRPC()
			<-stopped
		case <-ctx.Done():
			d.stopGRPC()
			<-stopped
			errs = append(errs, errors.New("gRPC graceful stop timed out; stopped hard"))
		}
		if d.gwConn != nil {
			d.gwConn.Close()
		}
		d.shutErr = errors.Join(errs...)
		d.log.Info("presenced stopped")
	})
	return d.shutErr
}

func (d *Daemon) grpcServers() []rpcServer {
	var gs []rpcServer
	for _, g := range []*grpcListener{d.public, d.backend} {
		if g != nil {
			gs = append(gs, g.gs)
		}
	}
	return gs
}

func (d *Daemon) stopGRPC() {
	for _, g := range d.grpcServers() {
		g.Stop()
	}
}

// closeAll releases whatever Start had opened when Start fails.
func (d *Daemon) closeAll() {
	if d.gwConn != nil {
		d.gwConn.Close()
	}
	if d.gwLis != nil {
		d.gwLis.Close()
	}
	for _, h := range d.https {
		h.lis.Close()
	}
	for _, g := range []*grpcListener{d.public, d.backend} {
		if g != nil {
			g.lis.Close()
		}
	}
	d.srv.Close()
}
