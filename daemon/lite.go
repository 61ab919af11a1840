package daemon

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"slices"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
	"github.com/presence-dev/presence/lite"
	"github.com/presence-dev/presence/server"
)

// liteServer is the lite transport as the daemon's rpcServer.
type liteServer struct{ *lite.Server }

// Serve returns nil once the server is stopped, as grpc-go's does.
func (l *liteServer) Serve(lis net.Listener) error {
	if err := l.Server.Serve(lis); !errors.Is(err, lite.ErrServerStopped) {
		return err
	}
	return nil
}

// newLiteServer makes the lite transport with the daemon's transport
// settings and interceptors.
func (c Config) newLiteServer(unary grpc.UnaryServerInterceptor, stream grpc.StreamServerInterceptor) *liteServer {
	return &liteServer{lite.NewServer(lite.Options{
		MaxRecvMsgSize:        c.MaxRecvMsgBytes,
		InitialWindowSize:     c.InitialWindowSize,
		InitialConnWindowSize: c.InitialConnWindowSize,
		Keepalive:             c.Keepalive,
		KeepalivePolicy:       c.KeepalivePolicy,
		UnaryInterceptor:      unary,
		StreamInterceptor:     stream,
		Logger:                c.Logger,
	})}
}

// liteCollector exports the lite transport's counters (lite.Stats).
type liteCollector struct {
	srv                     *lite.Server
	conns, handoffs, writes *prometheus.Desc
}

func newLiteCollector(srv *lite.Server) *liteCollector {
	return &liteCollector{
		srv:   srv,
		conns: prometheus.NewDesc("presence_transport_connections", "HTTP/2 connections open on the gRPC listener (lite transport).", nil, nil),
		handoffs: prometheus.NewDesc("presence_transport_flush_handoffs_total",
			"Pushes' writes that found the client's socket full and went on on a goroutine of their own (lite transport): clients reading slower than they are written to, seen before their queues overflow.", nil, nil),
		writes: prometheus.NewDesc("presence_transport_flush_writes_total",
			"Socket writes that carried frames handed over without waiting, pushes mostly (lite transport): against presence_push_deliveries_total, how many deliveries share a write.", nil, nil),
	}
}

func (c *liteCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.conns
	ch <- c.handoffs
	ch <- c.writes
}

func (c *liteCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.srv.Stats()
	ch <- prometheus.MustNewConstMetric(c.conns, prometheus.GaugeValue, float64(st.Conns))
	ch <- prometheus.MustNewConstMetric(c.handoffs, prometheus.CounterValue, float64(st.FlushHandoffs))
	ch <- prometheus.MustNewConstMetric(c.writes, prometheus.CounterValue, float64(st.FlushWrites))
}

// liteTLS is tlsCfg for the lite transport's listener, which speaks only
// HTTP/2 (ALPN "h2", as grpc-go's credentials set it).
func liteTLS(tlsCfg *tls.Config) *tls.Config {
	cfg := tlsCfg.Clone()
	if !slices.Contains(cfg.NextProtos, "h2") {
		cfg.NextProtos = append(cfg.NextProtos, "h2")
	}
	return cfg
}

// liteConnect serves Connect streams on the lite transport: each is
// attached to the session core, which the connection's goroutine feeds
// frame by frame, so an idle session has no goroutine of its own.
func liteConnect(srv *server.Server) lite.EventHandler {
	return func(st *lite.Stream) lite.Events {
		c := &liteConn{st: st}
		in, err := srv.Attach(c, st.Finish)
		if err != nil {
			st.Finish(err)
			return ignoreEvents{}
		}
		c.in = in
		return c
	}
}

// liteConn is one Connect stream on the lite transport: the session's
// BatchSender, and the Events that feed it.
type liteConn struct {
	st *lite.Stream
	in *server.Inbound
	// Owned by the connection's goroutine.
	stopped bool // the session said to stop reading
}

func (c *liteConn) Context() context.Context { return c.st.Context() }

func (c *liteConn) Send(f *server.Frame) error {
	b, err := f.Encoded()
	if err != nil {
		return err
	}
	return c.st.Send(b)
}

var _ server.BatchSender = (*liteConn)(nil)

// SendBatch sends frames in as few writes as the client's windows allow.
func (c *liteConn) SendBatch(frames []*server.Frame) error {
	msgs := make([][]byte, len(frames))
	for i, f := range frames {
		b, err := f.Encoded()
		if err != nil {
			return err
		}
		msgs[i] = b
	}
	return c.st.SendMsgs(msgs)
}

var _ server.DirectSender = (*liteConn)(nil)

// TrySend queues f on the connection if the client's windows hold it now.
func (c *liteConn) TrySend(f *server.Frame) (bool, error) {
	b, err := f.Encoded()
	if err != nil {
		return false, err
	}
	return c.st.TrySend(b)
}

func (c *liteConn) Msg(b []byte) {
	if c.stopped {
		return
	}
	req := new(presencev1.ConnectRequest)
	if err := proto.Unmarshal(b, req); err != nil {
		c.stopped = true
		c.in.Closed(status.Errorf(codes.InvalidArgument, "the frame is not a ConnectRequest (%v); send frames encoded from proto/presence/v1", err))
		return
	}
	c.stopped = !c.in.Frame(req)
}

func (c *liteConn) Closed(err error) { c.in.Closed(err) }

// ignoreEvents takes the frames of a stream that was refused.
type ignoreEvents struct{}

func (ignoreEvents) Msg([]byte)   {}
func (ignoreEvents) Closed(error) {}
