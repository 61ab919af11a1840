package main

import (
	"flag"
	"strconv"

	"github.com/presence-dev/presence/cluster"
	"github.com/presence-dev/presence/daemon"
)

// bindClusterFlags defines the flags that make presenced one node of a
// cluster over NATS. With --nats-url empty nothing of the cluster runs.
func bindClusterFlags(fs *flag.FlagSet, cfg *daemon.Config) {
	c := &cfg.Cluster
	fs.StringVar(&c.URL, "nats-url", "", "NATS server URL(s), comma-separated: run as one node of a cluster (empty: a single node, nothing else needed)")
	fs.StringVar(&c.CredsFile, "nats-creds", "", "NATS credentials file (JWT and NKey seed)")
	fs.StringVar(&c.CAFile, "nats-ca", "", "PEM CA certificate(s) to trust for TLS to NATS (else the system's)")
	fs.StringVar(&c.CertFile, "nats-cert", "", "PEM client certificate for TLS to NATS, when NATS asks for one")
	fs.StringVar(&c.KeyFile, "nats-key", "", "PEM private key for --nats-cert")
	fs.StringVar(&c.Name, "nats-name", "", "this node's name in the cluster, unique: letters, digits, - and _ (empty: the host name and a random suffix)")
	fs.StringVar(&c.Prefix, "nats-prefix", cluster.DefaultPrefix, "first token of every NATS subject the cluster uses, so clusters can share a NATS")
	fs.DurationVar(&c.Heartbeat, "nats-heartbeat", cluster.DefaultHeartbeat, "how often a node tells the others it is alive")
	fs.DurationVar(&c.NodeTimeout, "nats-node-timeout", cluster.DefaultNodeTimeout, "a node silent this long is taken for dead and its uids offline (at least 3 heartbeats)")
	fs.DurationVar(&c.RequestTimeout, "nats-request-timeout", cluster.DefaultRequestTimeout, "bound on one request to another node (a push waits its ack_timeout more); past it the call is UNAVAILABLE")
	fs.Var(notFlag{&c.NoJetStream}, "nats-jetstream", "keep push logs, stored pushes and idempotency keys in NATS JetStream, so clients resume on any node and keys and stored pushes hold on every node (NATS must run with JetStream: nats-server -js); false: all per node")
	fs.IntVar(&c.Replicas, "nats-replicas", 1, "NATS servers keeping each JetStream bucket and stream: 1, 3 or 5 (more than 1 needs a NATS cluster)")
}

// notFlag is a boolean flag that sets the negation of its target, for an
// option that is on by default and a Config field whose zero is "on".
type notFlag struct{ p *bool }

func (f notFlag) String() string {
	if f.p == nil {
		return "false" // the zero Value, for flag's default detection
	}
	return strconv.FormatBool(!*f.p)
}

func (f notFlag) Set(s string) error {
	v, err := strconv.ParseBool(s)
	if err != nil {
		return err
	}
	*f.p = !v
	return nil
}

func (f notFlag) IsBoolFlag() bool { return true }
