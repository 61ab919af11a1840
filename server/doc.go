// Package server is the presence service: sessions, the uid registry,
// fan-out of pushes, and the liveness reaper. It implements the two gRPC
// services of proto/presence/v1 and knows nothing of listeners, flags or
// HTTP (package daemon wires those).
//
// # Lifecycle
//
// New starts the reaper. Register adds the services to a grpc.Server.
// Shutdown ends every session with Goodbye SHUTDOWN (a jittered reconnect
// hint each), refuses new streams, waits for every Connect handler to
// return, and stops the reaper; only then may the caller GracefulStop the
// grpc.Server, which would otherwise wait for open streams forever.
//
// # Concurrency contract
//
// A transport hands a session its client frames in one of two ways:
// Serve (gRPC's Connect, the WebSocket bridge) runs a reader goroutine
// that calls Recv while the handler waits; Attach takes frames from a
// transport that reads them itself (the lite transport reads every stream
// of a connection on one goroutine), so an idle session there has no
// goroutine of the server's. Either way:
//
//   - the session's context owns its life: anything ends a session by
//     cancelling it with a cause (the reaper, a queue overflow, shutdown,
//     a protocol error, the client leaving). When it is done, a goroutine
//     of its own queues the Goodbye for the cause, waits for it to flush,
//     unregisters, and reports the status for the cause (Serve's handler
//     returns it, which ends a gRPC stream and releases a reader or writer
//     stuck on the wire);
//   - the reader records every frame as a sign of life (one atomic store)
//     and answers Ping; Identify is checked and the session registered on
//     a short-lived goroutine, so the reader's stack stays small;
//   - the writer, the only caller of Send (and SendBatch), exists only
//     while frames are queued; it hands a backlog to a BatchSender in one
//     call. A session with nothing queued gives a frame to a
//     DirectSender's TrySend first (lite: onto the connection's write
//     queue, if the client's windows hold it), so a broadcast to idle
//     sessions starts no goroutine per session. An idle session served by
//     Serve costs the handler and the reader, one served through Attach
//     nothing but its state.
//
// Pushes never block on a client: they go to a bounded queue (count and
// bytes); a session whose queue overflows ends as a slow consumer. A push
// frame is encoded once per codec and compressor, however many sessions it
// goes to.
//
// # Metrics
//
// Each Server has its own Prometheus metrics (presence_*), registered on no
// registry: Collector returns them for the caller's. Counting on the hot
// paths is an atomic add on a counter resolved at New; the gauges
// (sessions, online uids, watchers) are read at scrape time. See
// metrics.go.
//
// Locks: registry shard locks are taken before session locks and never
// around I/O. See registry.go.
//
// # Many nodes
//
// Options.Cluster (nil by default: one node, nothing else runs) makes the
// server one node of several. The registry tells the Cluster every change
// of a uid's local session count, under the uid's shard lock; pushes,
// kicks and presence queries ask it for what other nodes hold; and it, not
// the local registry, says when a uid comes online or goes offline for
// watchers. See cluster.go, package cluster (over NATS) and
// docs/cluster.md.
package server
