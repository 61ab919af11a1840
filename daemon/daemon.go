// Package daemon wires a presence server to its listeners: the gRPC
// listener (both services, health, reflection, transport keepalive) and the
// HTTP listener (the grpc-gateway REST facade, /healthz, /openapi.json).
// cmd/presenced is flags around it; tests and tools start it in-process.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"

	"github.com/presence-dev/presence/server"
)

// Config is everything a daemon needs. Zero values take the defaults
// written beside each field.
type Config struct {
	// GRPCAddr is the gRPC listener. Default 127.0.0.1:9090.
	GRPCAddr string
	// HTTPAddr is the HTTP listener (REST, health, OpenAPI). Default
	// 127.0.0.1:8080. "off" disables it.
	HTTPAddr string

	// Server configures sessions, queues and the reaper.
	Server server.Options

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
	// disables BDP estimation.
	ReadBufferSize        int
	WriteBufferSize       int
	InitialWindowSize     int32
	InitialConnWindowSize int32

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
	return c
}

// Daemon is a running presence service.
type Daemon struct {
	cfg    Config
	log    *slog.Logger
	srv    *server.Server
	gs     *grpc.Server
	health *health.Server
	// metrics is this daemon's own registry (not the global one), so
	// several daemons can run in one process.
	metrics *prometheus.Registry

	grpcLis net.Listener
	httpLis net.Listener
	hs      *http.Server     // nil when HTTP is off
	gwConn  *grpc.ClientConn // the gateway's connection to our own gRPC listener

	draining atomic.Bool // /healthz answers 503 once set
	errc     chan error  // serve errors; buffered
	shutOnce sync.Once
	shutErr  error
}

// Start listens and serves until Shutdown. On error nothing is left
// running.
func Start(cfg Config) (d *Daemon, err error) {
	cfg = cfg.withDefaults()
	srv, err := server.New(cfg.Server)
	if err != nil {
		return nil, fmt.Errorf("server options: %w", err)
	}
	d = &Daemon{cfg: cfg, log: cfg.Logger, srv: srv, errc: make(chan error, 2), metrics: prometheus.NewRegistry()}
	d.metrics.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	defer func() {
		if err != nil {
			d.closeAll()
		}
	}()

	if d.grpcLis, err = net.Listen("tcp", cfg.GRPCAddr); err != nil {
		return nil, fmt.Errorf("gRPC listener: %w", err)
	}
	d.gs = grpc.NewServer(cfg.grpcOptions()...)
	srv.Register(d.gs)
	d.health = health.NewServer()
	healthpb.RegisterHealthServer(d.gs, d.health)
	reflection.Register(d.gs)

	if cfg.HTTPAddr != "off" {
		if d.httpLis, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
			return nil, fmt.Errorf("HTTP listener: %w", err)
		}
		d.gwConn, err = grpc.NewClient(dialTarget(d.grpcLis.Addr()),
			grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, fmt.Errorf("gateway client: %w", err)
		}
		h, err := d.httpHandler(context.Background())
		if err != nil {
			return nil, err
		}
		d.hs = &http.Server{
			Handler:           h,
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       120 * time.Second,
			MaxHeaderBytes:    64 << 10,
			ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
		}
	}

	go func() { d.errc <- d.gs.Serve(d.grpcLis) }()
	if d.hs != nil {
		go func() {
			if err := d.hs.Serve(d.httpLis); !errors.Is(err, http.ErrServerClosed) {
				d.errc <- err
			}
		}()
	}
	d.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	attrs := []any{"grpc", d.GRPCAddr()}
	if d.hs != nil {
		attrs = append(attrs, "http", d.HTTPAddr())
	}
	d.log.Info("presenced listening", attrs...)
	return d, nil
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

// dialTarget turns a listener address into one the gateway can dial:
// a wildcard address is dialled on loopback.
func dialTarget(a net.Addr) string {
	tcp, ok := a.(*net.TCPAddr)
	if !ok {
		return a.String()
	}
	host := tcp.IP
	if host.IsUnspecified() {
		if host.To4() != nil {
			host = net.IPv4(127, 0, 0, 1)
		} else {
			host = net.IPv6loopback
		}
	}
	return net.JoinHostPort(host.String(), fmt.Sprint(tcp.Port))
}

// Server returns the presence server.
func (d *Daemon) Server() *server.Server { return d.srv }

// GRPCAddr is the gRPC listener's address.
func (d *Daemon) GRPCAddr() string { return d.grpcLis.Addr().String() }

// HTTPAddr is the HTTP listener's address, or "" when HTTP is off.
func (d *Daemon) HTTPAddr() string {
	if d.httpLis == nil {
		return ""
	}
	return d.httpLis.Addr().String()
}

// Err delivers an error if a listener stops serving on its own.
func (d *Daemon) Err() <-chan error { return d.errc }

// Shutdown drains: health turns NOT_SERVING, every session gets Goodbye
// SHUTDOWN with a jittered reconnect hint and its stream ends, the HTTP
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
		if d.hs != nil {
			if err := d.hs.Shutdown(ctx); err != nil {
				errs = append(errs, fmt.Errorf("HTTP shutdown: %w", err))
				d.hs.Close()
			}
		}
		// Sessions are gone; what is left are unary calls, which finish
		// quickly, and health Watch streams, which end only when their
		// clients hang up. Wait a little for both, then stop hard.
		stopped := make(chan struct{})
		go func() { d.gs.GracefulStop(); close(stopped) }()
		grace := time.NewTimer(d.cfg.GracefulStopTimeout)
		defer grace.Stop()
		select {
		case <-stopped:
		case <-grace.C:
			d.log.Warn("gRPC streams still open after the graceful stop timeout; closing them", "timeout", d.cfg.GracefulStopTimeout)
			d.gs.Stop()
			<-stopped
		case <-ctx.Done():
			d.gs.Stop()
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

// closeAll releases whatever Start had opened when Start fails.
func (d *Daemon) closeAll() {
	if d.gwConn != nil {
		d.gwConn.Close()
	}
	if d.httpLis != nil {
		d.httpLis.Close()
	}
	if d.grpcLis != nil {
		d.grpcLis.Close()
	}
	d.srv.Close()
}
