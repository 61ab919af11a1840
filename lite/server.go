package lite

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
)

// ErrServerStopped is returned by Serve after Stop or GracefulStop was called.
var ErrServerStopped = errors.New("lite: the server has been stopped")

// Options configures a Server. Zero values mean the documented defaults.
type Options struct {
	// MaxConcurrentStreams is the per-connection stream limit advertised in
	// SETTINGS; default 100. Streams beyond it get RST_STREAM REFUSED_STREAM.
	MaxConcurrentStreams uint32
	// MaxRecvMsgSize is the largest request message accepted; default 4 MiB.
	// A larger message ends its stream with RESOURCE_EXHAUSTED.
	MaxRecvMsgSize int
	// InitialWindowSize is our receive window per stream (and
	// SETTINGS_INITIAL_WINDOW_SIZE); default and minimum 65535, like grpc-go.
	InitialWindowSize int32
	// InitialConnWindowSize is our connection receive window; default and
	// minimum 65535. A larger value is announced with a WINDOW_UPDATE on
	// stream 0 right after our SETTINGS.
	InitialConnWindowSize int32
	// MaxHeaderListSize bounds a request's decoded header list (RFC 9113
	// §6.5.2 size); default 16 KiB. Larger header blocks get RST_STREAM
	// FRAME_SIZE_ERROR like grpc-go; header blocks whose compressed size
	// keeps growing far beyond it end the connection (GOAWAY).
	MaxHeaderListSize uint32
	// Keepalive: Time (default 2h) and Timeout (default 20s): a connection
	// from which nothing was received for Time is pinged and closed if
	// nothing (ack or anything else) arrives within Timeout. One sweeper
	// goroutine per Server checks all connections. MaxConnectionIdle,
	// MaxConnectionAge and MaxConnectionAgeGrace are ignored.
	Keepalive keepalive.ServerParameters
	// KeepalivePolicy enforces client pings like grpc-go: MinTime (default
	// 5 min) and PermitWithoutStream. A PING sooner than MinTime after the
	// previous one (or, with no active stream and !PermitWithoutStream,
	// sooner than 2h) is a strike; strikes reset when the server sends
	// HEADERS or DATA; a third strike gets GOAWAY ENHANCE_YOUR_CALM
	// "too_many_pings" and the connection is closed.
	KeepalivePolicy keepalive.EnforcementPolicy
	// WriteTimeout bounds every write to a connection (default 10s); a write
	// blocked this long closes the connection.
	WriteTimeout time.Duration
	// UnaryInterceptor wraps unary handlers registered with RegisterService.
	UnaryInterceptor grpc.UnaryServerInterceptor
	// StreamInterceptor wraps streaming handlers registered with
	// RegisterService. It is not called for event streams (HandleEvents):
	// those have no goroutine and no grpc.ServerStream to intercept.
	StreamInterceptor grpc.StreamServerInterceptor
	// Logger receives protocol errors at Debug and accept errors at Warn;
	// nil means slog.Default().
	Logger *slog.Logger
}

const (
	defaultMaxStreams        = 100
	defaultMaxRecvMsgSize    = 4 << 20
	defaultWindow            = 65535
	defaultMaxHeaderListSize = 16 << 10
	defaultKeepaliveTime     = 2 * time.Hour
	defaultKeepaliveTimeout  = 20 * time.Second
	defaultMinPingTime       = 5 * time.Minute
	defaultWriteTimeout      = 10 * time.Second
	// handshakeTimeout bounds how long a new connection may take to send
	// the client preface (grpc-go's default ConnectionTimeout).
	handshakeTimeout = 120 * time.Second
)

func (o *Options) setDefaults() {
	if o.MaxConcurrentStreams == 0 {
		o.MaxConcurrentStreams = defaultMaxStreams
	}
	if o.MaxRecvMsgSize <= 0 {
		o.MaxRecvMsgSize = defaultMaxRecvMsgSize
	}
	if o.InitialWindowSize < defaultWindow {
		o.InitialWindowSize = defaultWindow
	}
	if o.InitialConnWindowSize < defaultWindow {
		o.InitialConnWindowSize = defaultWindow
	}
	if o.MaxHeaderListSize == 0 {
		o.MaxHeaderListSize = defaultMaxHeaderListSize
	}
	if o.Keepalive.Time <= 0 {
		o.Keepalive.Time = defaultKeepaliveTime
	}
	if o.Keepalive.Timeout <= 0 {
		o.Keepalive.Timeout = defaultKeepaliveTimeout
	}
	if o.KeepalivePolicy.MinTime <= 0 {
		o.KeepalivePolicy.MinTime = defaultMinPingTime
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = defaultWriteTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// methodKind says how a full method name is served.
type methodKind uint8

const (
	kindUnary methodKind = iota + 1
	kindStream
	kindEvents
)

type methodHandler struct {
	kind   methodKind
	impl   any
	unary  *grpc.MethodDesc
	stream *grpc.StreamDesc
	events EventHandler
}

type serviceInfo struct {
	methods  map[string]*grpc.MethodDesc
	streams  map[string]*grpc.StreamDesc
	metadata any
}

// Server is a gRPC server over HTTP/2 that runs one goroutine per
// connection. It implements grpc.ServiceRegistrar and reflection's
// GRPCServer interface.
type Server struct {
	opts Options
	log  *slog.Logger

	// handlers and services are written only before the first Serve.
	handlers map[string]*methodHandler // by full method "/svc/m"
	services map[string]*serviceInfo

	// trySends counts the messages TrySend queued, on every connection:
	// a background flush waits while it still rises (see
	// conn.flushInBackground).
	trySends atomic.Uint64

	// shards write TrySend's frames (see flushShard), one per processor;
	// shardTurn hands them to new connections in turn. handedOff counts
	// the flushes that found a socket full and went on on a goroutine of
	// their own.
	shards    []flushShard
	shardTurn atomic.Uint32
	handedOff atomic.Uint64

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	serving   bool
	draining  bool          // GracefulStop called
	stopped   bool          // Stop or GracefulStop called
	quit      chan struct{} // closed by Stop/GracefulStop
	sweeping  bool
	sweepStop chan struct{} // closed once every connection is gone

	connWG    sync.WaitGroup // connection goroutines
	handlerWG sync.WaitGroup // RegisterService handler goroutines
	sweepWG   sync.WaitGroup // the keepalive sweeper
	serveWG   sync.WaitGroup // Serve loops

	stopOnce sync.Once
	done     chan struct{} // closed when Stop/GracefulStop finished
}

var _ grpc.ServiceRegistrar = (*Server)(nil)

// NewServer returns a Server with options o (zero fields take their
// defaults). It starts no goroutine until Serve.
func NewServer(o Options) *Server {
	o.setDefaults()
	return &Server{
		opts:      o,
		log:       o.Logger,
		handlers:  make(map[string]*methodHandler),
		services:  make(map[string]*serviceInfo),
		listeners: make(map[net.Listener]struct{}),
		conns:     make(map[*conn]struct{}),
		quit:      make(chan struct{}),
		sweepStop: make(chan struct{}),
		done:      make(chan struct{}),
		shards:    make([]flushShard, runtime.GOMAXPROCS(0)),
	}
}

func (s *Server) checkNotServing(what string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.serving {
		panic(fmt.Sprintf("lite: %s called after Serve", what))
	}
}

// RegisterService registers a service and its implementation. Unary and
// streaming methods are served the ordinary way: one goroutine per call.
// It panics if impl does not implement desc.HandlerType, if the service is
// registered twice, or if Serve was already called.
func (s *Server) RegisterService(desc *grpc.ServiceDesc, impl any) {
	s.checkNotServing("RegisterService")
	if impl != nil && desc.HandlerType != nil {
		ht := reflect.TypeOf(desc.HandlerType).Elem()
		if st := reflect.TypeOf(impl); !st.Implements(ht) {
			panic(fmt.Sprintf("lite: RegisterService found the handler of type %v that does not satisfy %v", st, ht))
		}
	}
	if _, dup := s.services[desc.ServiceName]; dup {
		panic(fmt.Sprintf("lite: RegisterService found duplicate service registration for %q", desc.ServiceName))
	}
	info := &serviceInfo{
		methods:  make(map[string]*grpc.MethodDesc),
		streams:  make(map[string]*grpc.StreamDesc),
		metadata: desc.Metadata,
	}
	for i := range desc.Methods {
		d := &desc.Methods[i]
		info.methods[d.MethodName] = d
		full := "/" + desc.ServiceName + "/" + d.MethodName
		if h := s.handlers[full]; h == nil || h.kind != kindEvents {
			s.handlers[full] = &methodHandler{kind: kindUnary, impl: impl, unary: d}
		}
	}
	for i := range desc.Streams {
		d := &desc.Streams[i]
		info.streams[d.StreamName] = d
		full := "/" + desc.ServiceName + "/" + d.StreamName
		if h := s.handlers[full]; h == nil || h.kind != kindEvents {
			s.handlers[full] = &methodHandler{kind: kindStream, impl: impl, stream: d}
		}
	}
	s.services[desc.ServiceName] = info
}

// GetServiceInfo returns the registered services and their methods, like
// grpc.Server's, so that reflection.Register(s) works. Methods served only
// through HandleEvents (without a RegisterService of their service) are not
// listed.
func (s *Server) GetServiceInfo() map[string]grpc.ServiceInfo {
	ret := make(map[string]grpc.ServiceInfo, len(s.services))
	for name, info := range s.services {
		methods := make([]grpc.MethodInfo, 0, len(info.methods)+len(info.streams))
		for m := range info.methods {
			methods = append(methods, grpc.MethodInfo{Name: m})
		}
		for m, d := range info.streams {
			methods = append(methods, grpc.MethodInfo{Name: m, IsClientStream: d.ClientStreams, IsServerStream: d.ServerStreams})
		}
		ret[name] = grpc.ServiceInfo{Methods: methods, Metadata: info.metadata}
	}
	return ret
}

// HandleEvents serves fullMethod (e.g. "/presence.v1.PresenceService/Connect")
// as event-driven streams: h is called on the connection's goroutine when a
// stream's HEADERS arrive, and the returned Events receive its messages
// there; no goroutine is started per stream. It overrides a streaming method
// of that name registered with RegisterService (before or after), and panics
// if that name is a unary method or if Serve was already called.
func (s *Server) HandleEvents(fullMethod string, h EventHandler) {
	s.checkNotServing("HandleEvents")
	if h == nil {
		panic("lite: HandleEvents with a nil handler")
	}
	if !strings.HasPrefix(fullMethod, "/") || strings.Count(fullMethod, "/") != 2 {
		panic(fmt.Sprintf("lite: HandleEvents: malformed method name %q", fullMethod))
	}
	if old := s.handlers[fullMethod]; old != nil && old.kind == kindUnary {
		panic(fmt.Sprintf("lite: HandleEvents: %s is a unary method", fullMethod))
	}
	s.handlers[fullMethod] = &methodHandler{kind: kindEvents, events: h}
}

// Serve accepts connections on l and serves each on its own goroutine. It
// blocks until l fails or the server is stopped, and then returns
// ErrServerStopped after Stop or GracefulStop, or the accept error.
// Temporary accept errors are retried with backoff (5 ms doubling to 1 s),
// like net/http. l may be a tls.NewListener (ALPN "h2") listener.
//
// A connection that exposes its socket (syscall.Conn, as *net.TCPConn
// does) gets the messages TrySend queued written to that socket directly
// with write(2), not through its Write method: a wrapper listener whose
// connections transform or meter what is written must not expose it.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		l.Close()
		return ErrServerStopped
	}
	s.serving = true
	s.listeners[l] = struct{}{}
	if !s.sweeping {
		s.sweeping = true
		s.sweepWG.Add(1)
		go s.sweep()
	}
	s.serveWG.Add(1)
	s.mu.Unlock()
	defer s.serveWG.Done()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, l)
		s.mu.Unlock()
	}()

	var delay time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			if s.isStopped() {
				return ErrServerStopped
			}
			if te, ok := err.(interface{ Temporary() bool }); ok && te.Temporary() {
				if delay == 0 {
					delay = 5 * time.Millisecond
				} else if delay *= 2; delay > time.Second {
					delay = time.Second
				}
				s.log.Warn("lite: accept error; retrying", "err", err, "delay", delay)
				t := time.NewTimer(delay)
				select {
				case <-t.C:
				case <-s.quit:
					t.Stop()
					return ErrServerStopped
				}
				continue
			}
			s.log.Warn("lite: accept error", "err", err)
			return err
		}
		delay = 0
		s.mu.Lock()
		if s.stopped {
			s.mu.Unlock()
			nc.Close()
			return ErrServerStopped
		}
		c := newConn(s, nc)
		s.conns[c] = struct{}{}
		s.connWG.Add(1)
		s.mu.Unlock()
		go c.serve()
	}
}

// Stats are a Server's transport counters, read for metrics.
type Stats struct {
	// Conns is the number of HTTP/2 connections open now.
	Conns int
	// FlushHandoffs counts the TrySend flushes that found the client's
	// socket full and went on on a goroutine of their own: a client that
	// reads slower than it is written to, seen before its queue fills.
	FlushHandoffs uint64
	// FlushWrites counts the batches the flush shards wrote to sockets,
	// each one write(2) unless the kernel took only part of it: against
	// the messages TrySend took, how well a broadcast's frames to one
	// connection share a write.
	FlushWrites uint64
}

// Stats returns the server's counters now.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	n := len(s.conns)
	s.mu.Unlock()
	var writes int64
	for i := range s.shards {
		writes += s.shards[i].writes.Load()
	}
	return Stats{Conns: n, FlushHandoffs: s.handedOff.Load(), FlushWrites: uint64(writes)}
}

func (s *Server) isStopped() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopped
}

func (s *Server) removeConn(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// GracefulStop stops accepting connections, sends GOAWAY (with the last
// stream id it accepted) on every connection, waits for every stream to
// finish and then closes the connections. It is idempotent; a Stop during
// GracefulStop ends the remaining streams and makes GracefulStop return.
func (s *Server) GracefulStop() {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		<-s.done
		return
	}
	s.stopped, s.draining = true, true
	close(s.quit)
	conns := s.closeListenersLocked()
	s.mu.Unlock()
	for _, c := range conns {
		c.drain()
	}
	s.finish()
}

// closeListenersLocked closes every listener and returns the connections
// open now; s.mu must be held.
func (s *Server) closeListenersLocked() []*conn {
	for l := range s.listeners {
		l.Close()
	}
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	return conns
}

// Stop closes every listener and connection now: every stream ends (event
// streams get Closed with status Unavailable, goroutine-backed streams see
// their context cancelled). It waits for the server's goroutines, including
// RegisterService handlers (which must return once their context is done).
// It is idempotent and may follow GracefulStop.
func (s *Server) Stop() {
	s.mu.Lock()
	if !s.stopped {
		s.stopped = true
		close(s.quit)
	}
	conns := s.closeListenersLocked()
	s.mu.Unlock()
	for _, c := range conns {
		c.closeConn()
	}
	s.finish()
}

// finish waits for all goroutines once; concurrent callers wait for the
// first.
func (s *Server) finish() {
	s.stopOnce.Do(func() {
		go func() {
			s.serveWG.Wait()
			s.connWG.Wait()
			s.handlerWG.Wait()
			close(s.sweepStop)
			s.sweepWG.Wait()
			close(s.done)
		}()
	})
	<-s.done
}
