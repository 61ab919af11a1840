package wsbridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/presence-dev/presence/server"
)

// Options configures a Handler. Zero values take the defaults written
// beside each field.
type Options struct {
	// AllowedOrigins lists the origins, besides the request's own host,
	// whose pages may open a session: host patterns matched with
	// path.Match ("app.example.com", "*.example.com", "localhost:*"), or
	// "scheme://host" patterns to match the scheme as well. Default none:
	// only same-host pages and non-browser clients (no Origin header).
	AllowedOrigins []string
	// DevMode accepts every origin, so a page served from anywhere (a
	// file, another dev server) can connect. For development only: any
	// web page a user visits could then open sessions in the user's name.
	DevMode bool
	// ReadLimit caps one client message in bytes; a longer one ends the
	// session with ResourceExhausted (close code 4008). Default 64 KiB.
	ReadLimit int64
	// WriteTimeout bounds one write to the client; a write that takes
	// longer closes the socket and ends the session. Default 10 s.
	WriteTimeout time.Duration
	// Logger receives refused upgrades and session-level decoding
	// errors. Default slog.Default().
	Logger *slog.Logger
}

// Defaults.
const (
	DefaultReadLimit    = 64 << 10
	DefaultWriteTimeout = 10 * time.Second
)

func (o Options) withDefaults() Options {
	if o.ReadLimit == 0 {
		o.ReadLimit = DefaultReadLimit
	}
	if o.WriteTimeout == 0 {
		o.WriteTimeout = DefaultWriteTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// Validate reports settings that cannot work.
func (o Options) Validate() error {
	var errs []error
	for _, p := range o.AllowedOrigins {
		if _, err := path.Match(strings.ToLower(p), ""); err != nil {
			errs = append(errs, fmt.Errorf("allowed origin %q is not a valid pattern: %w", p, err))
		}
	}
	if o.ReadLimit < 0 {
		errs = append(errs, fmt.Errorf("read limit is %d; it must be positive", o.ReadLimit))
	}
	if o.WriteTimeout < 0 {
		errs = append(errs, fmt.Errorf("write timeout is %v; it must be positive", o.WriteTimeout))
	}
	return errors.Join(errs...)
}

// Handler serves presence sessions over WebSocket. Mount it at
// /v1/connect.
type Handler struct {
	srv    *server.Server
	opts   Options
	accept websocket.AcceptOptions
	log    *slog.Logger

	mu     sync.Mutex
	active int           // ServeHTTP calls that accepted a socket; guarded by mu
	idle   chan struct{} // closed when active drops to 0; guarded by mu
}

var _ http.Handler = (*Handler)(nil)

// New returns a Handler that runs every accepted WebSocket as a session of
// srv.
func New(srv *server.Server, opts Options) (*Handler, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	h := &Handler{
		srv:  srv,
		opts: opts,
		log:  opts.Logger,
		accept: websocket.AcceptOptions{
			Subprotocols:       []string{SubprotocolJSON, SubprotocolProto},
			OriginPatterns:     opts.AllowedOrigins,
			InsecureSkipVerify: opts.DevMode,
		},
		idle: make(chan struct{}),
	}
	close(h.idle)
	return h, nil
}

// ServeHTTP upgrades the request, runs the session until it ends, then
// closes the WebSocket with the session's close code (see CloseCode).
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if offered := offeredSubprotocols(r); len(offered) > 0 && !knownSubprotocol(offered) {
		http.Error(w, fmt.Sprintf("none of the WebSocket subprotocols %q is supported; ask for %q or %q, or for none (JSON)",
			offered, SubprotocolJSON, SubprotocolProto), http.StatusBadRequest)
		return
	}
	ws, err := websocket.Accept(w, r, &h.accept)
	if err != nil {
		// Accept has answered (403 for a foreign origin, 426 for a
		// request that is not an upgrade).
		h.log.LogAttrs(r.Context(), slog.LevelInfo, "WebSocket refused",
			slog.String("remote", r.RemoteAddr), slog.String("origin", r.Header.Get("Origin")), slog.String("error", err.Error()))
		return
	}
	h.enter()
	defer h.leave()
	// Large enough that the library's own limit (which closes with 1009)
	// never trips before Recv's, which ends the session with its status.
	ws.SetReadLimit(h.opts.ReadLimit + 1)

	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	conn := &wsConn{
		ws:           ws,
		ctx:          ctx,
		codec:        codecFor(ws.Subprotocol()),
		readLimit:    h.opts.ReadLimit,
		writeTimeout: h.opts.WriteTimeout,
	}
	err = h.srv.Serve(conn)
	if bad := conn.decodeError(); bad != "" && status.Code(err) == codes.InvalidArgument {
		// See wsConn.Recv: the server saw an empty frame; say what was
		// wrong with the message.
		err = status.Error(codes.InvalidArgument, bad)
		h.log.LogAttrs(ctx, slog.LevelInfo, "WebSocket frame invalid",
			slog.String("remote", r.RemoteAddr), slog.String("error", bad))
	}
	code, reason := CloseCode(err)
	// Close sends the close frame and waits (bounded) for the client's;
	// it releases the session's reader and a writer stuck on the socket.
	ws.Close(code, reason)
}

// Wait blocks until every accepted WebSocket has been closed, or ctx is
// done. Call it after srv.Shutdown: http.Server.Shutdown does not wait for
// hijacked connections.
func (h *Handler) Wait(ctx context.Context) error {
	h.mu.Lock()
	idle := h.idle
	h.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (h *Handler) enter() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.active == 0 {
		h.idle = make(chan struct{})
	}
	h.active++
}

func (h *Handler) leave() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.active--
	if h.active == 0 {
		close(h.idle)
	}
}

// offeredSubprotocols lists the subprotocols in the request's
// Sec-WebSocket-Protocol headers.
func offeredSubprotocols(r *http.Request) []string {
	var out []string
	for _, v := range r.Header.Values("Sec-WebSocket-Protocol") {
		for _, p := range strings.Split(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}

func knownSubprotocol(offered []string) bool {
	for _, p := range offered {
		if strings.EqualFold(p, SubprotocolJSON) || strings.EqualFold(p, SubprotocolProto) {
			return true
		}
	}
	return false
}
