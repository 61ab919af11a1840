package server

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	mathrand "math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"

	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
)

// Server is the presence service: sessions, the uid registry, fan-out and
// the liveness reaper. It implements both gRPC services; it knows nothing
// of listeners (see package daemon).
type Server struct {
	presencev1.UnimplementedPresenceServiceServer
	presencev1.UnimplementedBackendServiceServer

	opts  Options
	log   *slog.Logger
	reg   *registry
	pres  *presence
	total atomic.Int64 // identified sessions, for MaxSessions
	epoch string       // names the broadcast sequence; new per process

	// Broadcasts take bcastMu to number, keep and queue in one step, so
	// every session sees broadcasts in seq order; a session registers
	// under it too, so it gets each broadcast either by replay or live,
	// never both and never neither. Lock order: bcastMu, then a shard's.
	bcastMu   sync.Mutex
	bcastSeq  uint64      // guarded by bcastMu
	bcastHist pushHistory // guarded by bcastMu
	// bcastTargets is broadcast's reused copy of the sessions; guarded by
	// bcastMu.
	bcastTargets []*session

	hist          histLimits   // bounds of every history; its budget is shared
	storedExpired atomic.Int64 // stored pushes dropped undelivered at their time
	acks          ackWaiters
	localIdem     *idempotency     // this node's keys (trimmed by the reaper)
	idem          idempotencyStore // localIdem, or the cluster's shared keys
	shared        Shared           // the cluster's shared store, or nil
	uidEpoch      atomic.Value     // string: the uid log's epoch, in a cluster with Shared

	mu       sync.Mutex
	active   int                // handlers running; guarded by mu
	idle     chan struct{}      // closed when draining and active reaches 0; guarded by mu
	drainCtx context.Context    // done when Shutdown starts; ends unidentified sessions
	drained  context.CancelFunc // cancels drainCtx
	drainOn  atomic.Bool        // draining, readable without the channel

	stopReaper chan struct{}
	reaperDone chan struct{}
	closeOnce  sync.Once

	metrics *metrics
	hooks   testHooks // nil funcs in production
}

// testHooks let tests observe the engine without sleeping.
type testHooks struct {
	ended  func(*session, *EndError)
	opened func(*session) // at the end of a successful open
}

var (
	_ presencev1.PresenceServiceServer = (*Server)(nil)
	_ presencev1.BackendServiceServer  = (*Server)(nil)
)

// New returns a Server with its reaper running. Call Shutdown (or Close)
// to end its sessions and stop the reaper.
func New(opts Options) (*Server, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	srv := &Server{
		opts:       opts,
		log:        opts.Logger,
		pres:       newPresence(opts.PresenceGrace, opts.LastSeenMax),
		epoch:      newEpoch(),
		idle:       make(chan struct{}),
		stopReaper: make(chan struct{}),
		reaperDone: make(chan struct{}),
	}
	srv.drainCtx, srv.drained = context.WithCancel(context.Background())
	srv.reg = newRegistry(srv.pres)
	srv.hist = histLimits{size: opts.HistorySize, age: opts.HistoryAge, budget: &histBudget{max: opts.HistoryMaxBytes}}
	srv.acks.init()
	srv.localIdem = newIdempotency(opts.IdempotencyWindow, opts.IdempotencyMaxKeys)
	srv.idem = srv.localIdem
	srv.metrics = newMetrics(srv)
	if c := opts.Cluster; c != nil {
		srv.pres.external = true
		srv.reg.cluster = c
		if err := c.Attach(&Local{srv: srv}); err != nil {
			return nil, fmt.Errorf("joining the cluster: %w", err)
		}
		if sh := c.Shared(); sh != nil {
			srv.shared = sh
			srv.idem = &sharedIdempotency{sh: sh, window: opts.IdempotencyWindow, pending: MaxAckTimeout + time.Minute, poll: 20 * time.Millisecond, log: srv.log}
		}
	}
	go srv.reapLoop(srv.stopReaper, srv.reaperDone)
	return srv, nil
}

// Options returns the options in effect, defaults filled in.
func (srv *Server) Options() Options { return srv.opts }

// Register registers both services on gs.
func (srv *Server) Register(gs grpc.ServiceRegistrar) {
	presencev1.RegisterPresenceServiceServer(gs, srv)
	presencev1.RegisterBackendServiceServer(gs, srv)
}

// Counts returns the number of online uids and live sessions.
func (srv *Server) Counts() (uids, sessions int) { return srv.reg.counts() }

// enter admits a new stream unless the server is draining.
func (srv *Server) enter() bool {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if srv.drainOn.Load() {
		return false
	}
	srv.active++
	return true
}

// leave marks a stream's handler done.
func (srv *Server) leave() {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	srv.active--
	if srv.active == 0 && srv.drainOn.Load() {
		close(srv.idle)
	}
}

func (srv *Server) isDraining() bool { return srv.drainOn.Load() }

// shutdownCause is the cause a session ends with at shutdown: Goodbye
// SHUTDOWN with a reconnect hint jittered per session.
func (srv *Server) shutdownCause() *EndError {
	after := srv.opts.ShutdownReconnectMin
	if j := srv.opts.ShutdownReconnectJitter; j > 0 {
		after += time.Duration(mathrand.Int64N(int64(j)))
	}
	return &EndError{
		Reason:         ReasonShutdown,
		Msg:            "the server is shutting down; reconnect after the hint",
		Reconnect:      true,
		ReconnectAfter: after.Round(time.Millisecond),
	}
}

// Shutdown ends every session with Goodbye SHUTDOWN, refuses new streams,
// and waits until every Connect handler has returned or ctx is done. It
// stops the reaper. It is idempotent. Call it before grpc.Server's
// GracefulStop: open Connect streams would keep GracefulStop waiting.
func (srv *Server) Shutdown(ctx context.Context) error {
	srv.mu.Lock()
	if !srv.drainOn.Load() {
		srv.drainOn.Store(true)
		srv.drained()
		if srv.active == 0 {
			close(srv.idle)
		}
	}
	srv.mu.Unlock()
	srv.reg.each(func(s *session) { s.end(srv.shutdownCause()) })
	srv.pres.endWatchers(&EndError{Reason: ReasonShutdown, Msg: "the server is shutting down; watch again in a few seconds"})
	srv.stop()
	select {
	case <-srv.idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close stops the reaper without ending sessions; for servers that never
// served or whose streams already ended. Shutdown calls it.
func (srv *Server) Close() { srv.stop() }

func (srv *Server) stop() {
	srv.closeOnce.Do(func() {
		close(srv.stopReaper)
		<-srv.reaperDone
		if c := srv.opts.Cluster; c != nil {
			c.Close()
		}
		srv.pres.stop()
	})
}

// newID returns a random, URL-safe id (26 base32 characters, 130 bits).
func newID() string { return rand.Text() }

// newEpoch returns a short random name for a sequence.
func newEpoch() string { return rand.Text()[:10] }

func durationpbNew(d time.Duration) *durationpb.Duration { return durationpb.New(d) }
