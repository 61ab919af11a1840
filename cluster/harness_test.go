package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/presence-dev/presence/cluster"
	"github.com/presence-dev/presence/daemon"
	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
	"github.com/presence-dev/presence/server"
)

// TestMain checks for leaked goroutines once every test is done: the
// daemons', the NATS connections' and the embedded NATS server's.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// The cluster's timing in tests: a dead node's uids leave the directory
// between nodeTimeout and nodeTimeout+heartbeat after its last heartbeat.
const (
	heartbeat   = 100 * time.Millisecond
	nodeTimeout = 500 * time.Millisecond
	grace       = 300 * time.Millisecond
)

// startNATS runs an embedded NATS server on a loopback port; port 0 picks
// one.
func startNATS(t testing.TB, port int) *natsserver.Server {
	t.Helper()
	return startNATSWith(t, port, true)
}

// startNATSWith is startNATS with or without JetStream.
func startNATSWith(t testing.TB, port int, jetStream bool) *natsserver.Server {
	t.Helper()
	if port == 0 {
		port = -1
	}
	ns, err := natsserver.NewServer(&natsserver.Options{Host: "127.0.0.1", Port: port, NoLog: true, NoSigs: true, JetStream: jetStream, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	if !ns.ReadyForConnections(5 * time.Second) {
		ns.Shutdown()
		t.Fatal("NATS server not ready within 5s")
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	return ns
}

// node is one presence daemon of a test cluster.
type node struct {
	d       *daemon.Daemon
	c       *cluster.Node
	backend presencev1.BackendServiceClient
	cc      *grpc.ClientConn
	dialer  *cutter
}

// startNode starts a daemon named name joined to the NATS server at url;
// edit, if given, changes its configuration first.
func startNode(t testing.TB, url, name string, edit ...func(*daemon.Config)) *node {
	t.Helper()
	cfg, dialer := nodeConfigCut(url, name)
	for _, f := range edit {
		f(&cfg)
	}
	d, err := daemon.Start(cfg)
	if err != nil {
		t.Fatalf("Start %s: %v", name, err)
	}
	cc, err := grpc.NewClient(d.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := d.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown %s: %v", name, err)
		}
	})
	return &node{d: d, c: d.Server().Options().Cluster.(*cluster.Node), backend: presencev1.NewBackendServiceClient(cc), cc: cc, dialer: dialer}
}

// nodeConfig is the test configuration of node name.
func nodeConfig(url, name string) daemon.Config {
	cfg, _ := nodeConfigCut(url, name)
	return cfg
}

// nodeConfigCut is nodeConfig and the dialer that can cut the node off.
func nodeConfigCut(url, name string) (daemon.Config, *cutter) {
	dialer := &cutter{}
	return daemon.Config{
		GRPCAddr: "127.0.0.1:0",
		HTTPAddr: "off",
		Server: server.Options{
			HeartbeatInterval: time.Second, HeartbeatTimeout: 3 * time.Second,
			ShutdownReconnectMin: 100 * time.Millisecond, ShutdownReconnectJitter: 100 * time.Millisecond,
			PresenceGrace: grace,
		},
		Cluster: cluster.Config{
			URL: url, Name: name, Heartbeat: heartbeat, NodeTimeout: nodeTimeout, RequestTimeout: time.Second,
			Options: []nats.Option{nats.SetCustomDialer(dialer), nats.ReconnectWait(50 * time.Millisecond)},
		},
		Logger: slog.New(slog.DiscardHandler),
	}, dialer
}

// startCluster starts a NATS server and n nodes, and waits until every
// node knows every other.
func startCluster(t testing.TB, names ...string) (*natsserver.Server, []*node) {
	t.Helper()
	return startClusterWith(t, nil, names...)
}

// startClusterWith is startCluster with every node's configuration
// changed by edit.
func startClusterWith(t testing.TB, edit func(*daemon.Config), names ...string) (*natsserver.Server, []*node) {
	t.Helper()
	ns := startNATS(t, 0)
	var nodes []*node
	for _, name := range names {
		if edit != nil {
			nodes = append(nodes, startNode(t, ns.ClientURL(), name, edit))
		} else {
			nodes = append(nodes, startNode(t, ns.ClientURL(), name))
		}
	}
	eventually(t, "every node knows the others", func() bool {
		for _, n := range nodes {
			if len(n.c.Peers()) != len(nodes)-1 {
				return false
			}
		}
		return true
	})
	return ns, nodes
}

// eventually polls cond every 5 ms for up to 5 s.
func eventually(t testing.TB, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < 5*time.Second {
		if cond() {
			return time.Since(start)
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("%s: not within 5s", what)
	return 0
}

// onlineOn reports whether n sees uid online with want sessions.
func onlineOn(n *node, uid string, want uint32) bool {
	r, err := n.backend.BatchGetPresence(context.Background(), &presencev1.BatchGetPresenceRequest{Uids: []string{uid}})
	return err == nil && r.GetPresences()[0].GetSessionCount() == want
}

// cutter dials NATS for one node and can cut it off: close its
// connections and refuse new ones, as if the node died or its network did.
type cutter struct {
	mu    sync.Mutex
	conns []net.Conn
	cut   bool
}

func (c *cutter) Dial(network, addr string) (net.Conn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cut {
		return nil, errors.New("cut off by the test")
	}
	conn, err := net.DialTimeout(network, addr, time.Second)
	if err == nil {
		c.conns = append(c.conns, conn)
	}
	return conn, err
}

// Restore lets the node dial NATS again.
func (c *cutter) Restore() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cut = false
}

func (c *cutter) Cut() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cut = true
	for _, conn := range c.conns {
		conn.Close()
	}
}

// client is an identified Connect stream read by a goroutine.
type client struct {
	id     string
	stream presencev1.PresenceService_ConnectClient // Send only from the test goroutine
	frames chan *presencev1.ConnectResponse
	errc   chan error
	cancel context.CancelFunc
	done   chan struct{}
}

// connect opens a stream to n and identifies as uid.
func connect(t testing.TB, n *node, uid string) *client {
	t.Helper()
	c, _ := connectResume(t, n, uid, nil)
	return c
}

// connectResume opens a stream to n and identifies as uid, resuming from
// resume (nil: none); it returns the client and its Identified.
func connectResume(t testing.TB, n *node, uid string, resume *presencev1.ResumeFrom) (*client, *presencev1.Identified) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := presencev1.NewPresenceServiceClient(n.cc).Connect(ctx)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	c := &client{stream: stream, frames: make(chan *presencev1.ConnectResponse, 64), errc: make(chan error, 1), cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for {
			f, err := stream.Recv()
			if err != nil {
				c.errc <- err
				return
			}
			c.frames <- f
		}
	}()
	t.Cleanup(c.close)
	if err := stream.Send(&presencev1.ConnectRequest{Frame: &presencev1.ConnectRequest_Identify{Identify: &presencev1.Identify{Uid: uid, Resume: resume}}}); err != nil {
		t.Fatal(err)
	}
	f := c.next(t)
	if f.GetIdentified() == nil {
		t.Fatalf("first frame %v; want Identified", f)
	}
	c.id = f.GetIdentified().GetSessionId()
	return c, f.GetIdentified()
}

// close hangs up and waits for the reader.
func (c *client) close() { c.cancel(); <-c.done }

func (c *client) next(t testing.TB) *presencev1.ConnectResponse {
	t.Helper()
	select {
	case f := <-c.frames:
		return f
	case err := <-c.errc:
		select {
		case f := <-c.frames:
			c.errc <- err
			return f
		default:
		}
		t.Fatalf("stream ended: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("no frame within 5s")
	}
	return nil
}

// push waits for the next push and returns its text.
func (c *client) push(t testing.TB) string {
	t.Helper()
	for {
		f := c.next(t)
		if p := f.GetPush(); p != nil {
			return p.GetData().GetStringValue()
		}
		if f.GetGoodbye() != nil {
			t.Fatalf("Goodbye %v; want a push", f.GetGoodbye())
		}
	}
}

// ack waits up to 5 s for the next push and acknowledges it. It may run
// on its own goroutine (it reports, it does not fail the test).
func (c *client) ack() error {
	timeout := time.After(5 * time.Second)
	for {
		select {
		case f := <-c.frames:
			if p := f.GetPush(); p != nil {
				return c.stream.Send(&presencev1.ConnectRequest{Frame: &presencev1.ConnectRequest_Ack{Ack: &presencev1.Ack{PushId: p.GetId()}}})
			}
		case err := <-c.errc:
			return err
		case <-timeout:
			return errors.New("no push within 5s")
		}
	}
}

func text(s string) *presencev1.SendToUidRequest_Data {
	return &presencev1.SendToUidRequest_Data{Data: structpb.NewStringValue(s)}
}
