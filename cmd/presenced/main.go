// Command presenced runs the presence service: a gRPC listener for clients'
// Connect streams and the backend API, and an HTTP listener for the REST
// facade, /healthz, /openapi.json, browser sessions over WebSocket at
// /v1/connect and the debug console at /.
//
// Every flag can also be set with an environment variable: PRESENCE_ and
// the flag name in upper case with - as _ (for example
// PRESENCE_HEARTBEAT_TIMEOUT=60s). A flag on the command line wins.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/presence-dev/presence/daemon"
	"github.com/presence-dev/presence/server"
)

func main() {
	if err := run(os.Args[1:], os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "presenced:", err)
		os.Exit(1)
	}
}

func run(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("presenced", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg daemon.Config
	logFormat, logLevel := bindFlags(fs, &cfg)
	sec := bindSecurityFlags(fs, &cfg)
	web := bindWebFlags(fs, &cfg)
	bindClusterFlags(fs, &cfg)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: presenced [flags]\n\nRuns the presence service. Every flag also reads PRESENCE_<NAME> from the environment.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := applyEnv(fs, os.LookupEnv); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q; presenced takes only flags", fs.Args())
	}
	if err := sec.apply(&cfg); err != nil {
		return err
	}
	web.apply(&cfg)

	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("--log-level %q: want debug, info, warn or error", *logLevel)
	}
	var h slog.Handler
	switch ho := (&slog.HandlerOptions{Level: level}); *logFormat {
	case "text":
		h = slog.NewTextHandler(stderr, ho)
	case "json":
		h = slog.NewJSONHandler(stderr, ho)
	default:
		return fmt.Errorf("--log-format %q: want text or json", *logFormat)
	}
	cfg.Logger = slog.New(h)

	d, err := daemon.Start(cfg)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	select {
	case <-ctx.Done():
	case err := <-d.Err():
		d.Shutdown(context.Background())
		return fmt.Errorf("serving: %w", err)
	}
	stop() // a second signal kills the process the usual way
	return d.Shutdown(context.Background())
}

// bindFlags defines every flag on fs, writing into cfg.
func bindFlags(fs *flag.FlagSet, cfg *daemon.Config) (logFormat, logLevel *string) {
	o := &cfg.Server
	fs.StringVar(&cfg.GRPCAddr, "grpc-addr", daemon.DefaultGRPCAddr, "gRPC listen address (Connect, backend API, health, reflection)")
	fs.StringVar(&cfg.HTTPAddr, "http-addr", daemon.DefaultHTTPAddr, `HTTP listen address (REST facade, /healthz, /openapi.json, WebSockets at /v1/connect, the console at /); "off" disables it`)
	fs.DurationVar(&o.HeartbeatInterval, "heartbeat-interval", server.DefaultHeartbeatInterval, "Ping interval announced to clients; at most a third of --heartbeat-timeout")
	fs.DurationVar(&o.HeartbeatTimeout, "heartbeat-timeout", server.DefaultHeartbeatTimeout, "end a session silent for this long (Goodbye HEARTBEAT_TIMEOUT)")
	fs.DurationVar(&o.ReapInterval, "reap-interval", server.DefaultReapInterval, "how often the reaper looks for silent sessions")
	fs.DurationVar(&o.IdentifyTimeout, "identify-timeout", server.DefaultIdentifyTimeout, "end a stream whose first frame is not Identify within this time")
	fs.IntVar(&o.QueueMaxMessages, "queue-max-messages", server.DefaultQueueMaxMessages, "outbound queue bound per session, in frames; overflow ends the session (SLOW_CONSUMER)")
	fs.IntVar(&o.QueueMaxBytes, "queue-max-bytes", server.DefaultQueueMaxBytes, "outbound queue bound per session, in bytes")
	fs.IntVar(&o.MaxPayloadBytes, "max-payload-bytes", server.DefaultMaxPayloadBytes, "largest push payload; larger is INVALID_ARGUMENT (HTTP 400)")
	fs.DurationVar(&o.GoodbyeTimeout, "goodbye-timeout", server.DefaultGoodbyeTimeout, "how long an ending session waits to flush its Goodbye")
	fs.DurationVar(&o.ShutdownReconnectMin, "shutdown-reconnect-min", server.DefaultShutdownReconnectMin, "smallest reconnect hint in Goodbye SHUTDOWN")
	fs.DurationVar(&o.ShutdownReconnectJitter, "shutdown-reconnect-jitter", server.DefaultShutdownReconnectJitter, "random part added to each session's shutdown reconnect hint")
	fs.DurationVar(&o.PresenceGrace, "presence-grace", server.DefaultPresenceGrace, "WatchPresence emits OFFLINE only after a uid has had no session for this long (no flapping on reconnects); negative: at once")
	fs.IntVar(&o.LastSeenMax, "last-seen-max", server.DefaultLastSeenMax, "offline uids whose last-seen time is remembered; past it the oldest are forgotten")
	fs.IntVar(&o.WatchQueue, "watch-queue", server.DefaultWatchQueue, "events queued per presence watcher; a watcher further behind is ended (RESOURCE_EXHAUSTED)")
	fs.IntVar(&o.HistorySize, "history-size", server.DefaultHistorySize, "pushes kept per uid and for broadcasts, for resume and stored pushes; negative keeps none")
	fs.DurationVar(&o.HistoryAge, "history-age", server.DefaultHistoryAge, "how long a push is kept for resume")
	fs.Int64Var(&o.HistoryMaxBytes, "history-max-bytes", server.DefaultHistoryMaxBytes, "memory bound of all push history together; past it new pushes are not kept (resume across them reports LOST) and stores are refused")
	fs.DurationVar(&o.StoreMax, "store-max", server.DefaultStoreMax, "longest store_for a push to an offline uid may ask")
	fs.DurationVar(&o.IdempotencyWindow, "idempotency-window", server.DefaultIdempotencyWindow, "how long a retry with the same idempotency_key returns the first answer")
	fs.IntVar(&o.IdempotencyMaxKeys, "idempotency-max-keys", server.DefaultIdempotencyMaxKeys, "idempotency keys remembered; past it the oldest are forgotten early")
	fs.DurationVar(&cfg.Keepalive.Time, "keepalive-time", server.DefaultKeepaliveParams.Time, "transport: ping a connection idle this long")
	fs.DurationVar(&cfg.Keepalive.Timeout, "keepalive-timeout", server.DefaultKeepaliveParams.Timeout, "transport: close a connection whose ping is unanswered this long")
	fs.DurationVar(&cfg.KeepalivePolicy.MinTime, "keepalive-min-time", server.DefaultKeepalivePolicy.MinTime, "transport: clients pinging more often get GOAWAY too_many_pings")
	fs.BoolVar(&cfg.KeepalivePolicy.PermitWithoutStream, "keepalive-permit-without-stream", server.DefaultKeepalivePolicy.PermitWithoutStream, "transport: allow client pings on connections with no open stream")
	fs.IntVar(&cfg.MaxRecvMsgBytes, "max-recv-msg-bytes", daemon.DefaultMaxRecvMsgBytes, "largest gRPC message accepted (RESOURCE_EXHAUSTED past it)")
	fs.StringVar(&cfg.Transport, "transport", daemon.TransportLite, "the server behind --grpc-addr: lite (package lite: one goroutine per connection and none per session, ≈12 KiB per idle session) or grpc (grpc-go, ≈37 KiB); both serve every service over h2c or TLS (BENCHMARKS.md, \"The lite transport\")")
	fs.IntVar(&cfg.ReadBufferSize, "read-buffer-size", daemon.DefaultReadBufferSize, "transport: bytes read from a connection per read syscall (a buffer pooled between reads)")
	fs.IntVar(&cfg.WriteBufferSize, "write-buffer-size", daemon.DefaultWriteBufferSize, "transport: bytes of frames gathered per connection before a write syscall (a buffer pooled between writes)")
	fs.Var(int32Flag{&cfg.InitialWindowSize}, "initial-window-size", "transport: HTTP/2 flow-control window per stream in `bytes`, at least 65535; 0: 64 KiB growing with BDP estimation (a set window turns estimation off)")
	fs.Var(int32Flag{&cfg.InitialConnWindowSize}, "initial-conn-window-size", "transport: HTTP/2 flow-control window per connection in `bytes`, at least 65535; 0: as for --initial-window-size")
	fs.Int64Var(&cfg.MaxBodyBytes, "max-body-bytes", daemon.DefaultMaxBodyBytes, "largest REST request body (HTTP 413 past it)")
	fs.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", daemon.DefaultShutdownTimeout, "bound on a graceful shutdown")
	fs.DurationVar(&cfg.GracefulStopTimeout, "graceful-stop-timeout", daemon.DefaultGracefulStop, "after sessions end, how long other calls (health watches, unary calls) may take before they are cut")
	return fs.String("log-format", "text", "log format: text or json"),
		fs.String("log-level", "info", "least severe log level written: debug, info (one line per session start and end), warn or error")
}

// int32Flag is a flag.Value for an int32 field.
type int32Flag struct{ p *int32 }

func (f int32Flag) String() string {
	if f.p == nil {
		return "0"
	}
	return strconv.FormatInt(int64(*f.p), 10)
}

func (f int32Flag) Set(s string) error {
	v, err := strconv.ParseInt(s, 0, 32)
	if err != nil {
		return errors.New("want a whole number of bytes below 2^31")
	}
	*f.p = int32(v)
	return nil
}

// applyEnv sets every flag not given on the command line from
// PRESENCE_<NAME>, if that variable is set.
func applyEnv(fs *flag.FlagSet, lookup func(string) (string, bool)) error {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] {
			return
		}
		env := "PRESENCE_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := lookup(env); ok {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %w", env, v, err))
			}
		}
	})
	return errors.Join(errs...)
}
