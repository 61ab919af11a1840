package cluster

import (
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// Config says how a node reaches NATS and how fast the cluster notices a
// node gone. Zero values take the defaults written beside each field.
type Config struct {
	// URL is the NATS server to connect to (several, comma-separated, for
	// a NATS cluster). Empty: no cluster (the daemon does not call New).
	URL string
	// CredsFile is a NATS credentials file (JWT and NKey seed), as NATS
	// users expect; empty for none.
	CredsFile string
	// CAFile, CertFile and KeyFile configure TLS to NATS: a CA to trust
	// (else the system's), and a client certificate when NATS asks for
	// one. A tls:// URL or a CA alone turns TLS on.
	CAFile, CertFile, KeyFile string
	// Name names this node in subjects and logs: letters, digits, - and
	// _. Default: the host name and a random suffix. Names must be unique
	// in the cluster; a node restarting under its old name is still told
	// apart from its past self (every run has its own incarnation id).
	Name string
	// Prefix starts every subject the cluster uses, so several clusters
	// can share one NATS. Default "presence".
	Prefix string
	// Heartbeat is how often a node says it is alive (and sweeps nodes
	// that have gone silent). Default 1 s.
	Heartbeat time.Duration
	// NodeTimeout: a node silent for this long is taken for dead and its
	// uids offline. At least three heartbeats. Default 5 s.
	NodeTimeout time.Duration
	// RequestTimeout bounds one request to another node (a push, a kick,
	// a session list, one snapshot page); a push that asks for acks waits
	// its ack timeout more. Default 2 s.
	RequestTimeout time.Duration
	// NoJetStream numbers pushes and keeps history, stored pushes and
	// idempotency keys on each node, as on one node (a client resuming on
	// another node is told LOST). By default the logs that number a uid's
	// pushes and the broadcasts, stored pushes and idempotency keys are
	// kept in NATS JetStream (a key-value bucket and three streams,
	// created at start), so that they hold on every node; the NATS server
	// must then have JetStream enabled.
	NoJetStream bool
	// Replicas is how many NATS servers keep each JetStream bucket and
	// stream (1, 3 or 5; more than 1 needs a NATS cluster). Default 1.
	Replicas int
	// Options are extra nats.go options, applied last (tests use a custom
	// dialer and fast reconnects).
	Options []nats.Option
	// Logger for cluster events. Default slog.Default().
	Logger *slog.Logger
}

// Defaults.
const (
	DefaultPrefix         = "presence"
	DefaultHeartbeat      = time.Second
	DefaultNodeTimeout    = 5 * time.Second
	DefaultRequestTimeout = 2 * time.Second
)

func (c Config) withDefaults() Config {
	if c.Name == "" {
		host, _ := os.Hostname()
		host = strings.Map(func(r rune) rune {
			if nameRune(r) {
				return r
			}
			return '-'
		}, host)
		if host == "" {
			host = "node"
		}
		c.Name = host + "-" + strings.ToLower(rand.Text()[:6])
	}
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if c.Heartbeat == 0 {
		c.Heartbeat = DefaultHeartbeat
	}
	if c.NodeTimeout == 0 {
		c.NodeTimeout = DefaultNodeTimeout
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = DefaultRequestTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	return c
}

// Validate reports the first setting that cannot work, after defaults.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	if c.URL == "" {
		errs = append(errs, errors.New("no NATS URL"))
	}
	if strings.IndexFunc(c.Name, func(r rune) bool { return !nameRune(r) }) >= 0 {
		errs = append(errs, fmt.Errorf("node name %q: use letters, digits, - and _ only", c.Name))
	}
	if strings.ContainsAny(c.Prefix, " *>\t") || strings.HasPrefix(c.Prefix, ".") || strings.HasSuffix(c.Prefix, ".") {
		errs = append(errs, fmt.Errorf("subject prefix %q is not a NATS subject", c.Prefix))
	}
	if c.Heartbeat <= 0 || c.RequestTimeout <= 0 {
		errs = append(errs, errors.New("heartbeat and request timeout must be positive"))
	}
	if c.NodeTimeout < 3*c.Heartbeat {
		errs = append(errs, fmt.Errorf("node timeout %v is less than three heartbeats (%v); one late heartbeat would take a live node for dead", c.NodeTimeout, 3*c.Heartbeat))
	}
	if c.Replicas != 1 && c.Replicas != 3 && c.Replicas != 5 {
		errs = append(errs, fmt.Errorf("JetStream replicas %d: use 1, 3 or 5", c.Replicas))
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		errs = append(errs, errors.New("NATS client certificate and key go together; set both or neither"))
	}
	return errors.Join(errs...)
}

func nameRune(r rune) bool {
	return 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '-' || r == '_'
}

// natsOptions are the connection's options: credentials, TLS, endless
// reconnects, and no echo (a node never needs its own gossip).
func (c Config) natsOptions(n *Node) []nats.Option {
	opts := []nats.Option{
		nats.Name("presenced " + c.Name),
		nats.NoEcho(),
		nats.MaxReconnects(-1),
		// No buffering while reconnecting: a push request held back would
		// be delivered after its caller was told UNAVAILABLE. Gossip
		// published meanwhile is lost instead, and repaired by a snapshot
		// once the heartbeats show the gap.
		nats.ReconnectBufSize(-1),
		nats.ReconnectWait(500 * time.Millisecond),
		nats.DisconnectErrHandler(n.disconnected),
		nats.ReconnectHandler(n.reconnected),
	}
	if c.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(c.CredsFile))
	}
	if c.CAFile != "" {
		opts = append(opts, nats.RootCAs(c.CAFile))
	}
	if c.CertFile != "" {
		opts = append(opts, nats.ClientCert(c.CertFile, c.KeyFile))
	}
	return append(opts, c.Options...)
}
