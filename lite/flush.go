package lite

import (
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
)

// flushShard writes, from one goroutine, the queued frames of the TCP
// connections handed to it (conn.flushInBackground). A server has one
// shard per processor (GOMAXPROCS when it was made), and each connection
// belongs to one, so writes still spread over the processors. The
// goroutine exists only while the list is not empty.
type flushShard struct {
	mu      sync.Mutex
	conns   []*conn
	spare   []*conn // the list last written, kept for reuse
	running bool
	writes  atomic.Int64 // writes made, for Stats
}

// add lists c, whose flushing the caller set (wmu held), and starts the
// shard's goroutine unless it runs.
func (f *flushShard) add(c *conn) {
	f.mu.Lock()
	f.conns = append(f.conns, c)
	start := !f.running
	f.running = true
	f.mu.Unlock()
	if start {
		go f.run(c.srv)
	}
}

// run waits for the messages still coming (Server.settle), then writes
// the listed connections in the order they were listed, until the list
// stays empty. Connections listed meanwhile (the next broadcast's) go in
// the next round.
func (f *flushShard) run(s *Server) {
	s.settle()
	for {
		f.mu.Lock()
		batch := f.conns
		if len(batch) == 0 {
			f.running = false
			f.mu.Unlock()
			return
		}
		f.conns, f.spare = f.spare[:0], nil
		f.mu.Unlock()
		for i, c := range batch {
			c.flushNow(f)
			batch[i] = nil
		}
		f.mu.Lock()
		f.spare = batch[:0]
		f.mu.Unlock()
	}
}

// settle lets the other runnable goroutines run, and again while TrySend
// keeps queueing messages anywhere on the server (at most maxFlushDelays
// rounds), before a background flush writes: a write costs far more than
// the frames in it (≈40 µs on loopback, most of it the kernel's). When a
// round queues nothing (a lone push, or a broadcast's loop is over) the
// flush writes; during a stream of broadcasts the frames of the next ones
// join the same write. Writing at the first chance, a saturated fan-out
// over one connection per session made one write per 5 frames and
// delivered 67–81k/s; after one round 73–161k/s; with the rounds, 320k/s
// (bench/results/direct-send*, BENCHMARKS.md). The rounds read a counter
// of the server's, not of a connection, whose cache lines a wave over
// 10,000 connections has long evicted.
func (s *Server) settle() {
	n := s.trySends.Load()
	for range maxFlushDelays {
		runtime.Gosched()
		m := s.trySends.Load()
		if m == n {
			break
		}
		n = m
	}
}

// maxFlushDelays bounds the scheduling rounds of settle.
const maxFlushDelays = 8

// nextShard picks the flush shard of a new connection, in turn.
func (s *Server) nextShard() *flushShard {
	return &s.shards[s.shardTurn.Add(1)%uint32(len(s.shards))]
}

// errWouldBlock: writeNow stopped because the socket's send buffer is
// full.
var errWouldBlock = errors.New("lite: socket send buffer full")
