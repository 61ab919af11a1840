package server

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
)

// session is one identified client stream.
//
// Goroutines: the transport's reader hands client frames to the session
// (Inbound.Frame; for a blocking transport, a reader goroutine of Serve's
// while the handler waits); a writer (writeLoop) exists only while frames
// are queued and is the only caller of conn.Send (a frame that finds
// nothing queued may go to a DirectSender's TrySend instead, under mu,
// never while the writer runs); when the session's context is done, a
// goroutine of its own flushes the Goodbye, unregisters and reports the
// status (Inbound.end). Every goroutine ends when the stream does.
type session struct {
	// Set before the session is shared, read-only after.
	srv         *Server
	conn        Sender
	direct      DirectSender // conn, if it is one; else nil
	id          string
	uid         string
	labels      map[string]string
	connectedAt time.Time
	ctx         context.Context         // derived from the stream's; done when the session ends
	cancel      context.CancelCauseFunc // ends the session with an *EndError cause; first cause wins
	identified  chan struct{}           // closed by the handler once registered; lets the reader go on

	// regIdx is the session's index in its registry shard's all. Guarded
	// by the uid's shard lock.
	regIdx int

	// uidFloor is the uid log seq up to which the session got its uid's
	// pushes by replay at Identify (pushes still on their way to this node
	// then are not queued to it again). Guarded by the uid's shard lock.
	uidFloor uint64

	// Written by the reader on every frame, read by the reaper. Unix
	// nanoseconds. An atomic store per frame: no timer is touched.
	lastSeen atomic.Int64
	// Pushes queued to the session that asked for an Ack and have not had
	// one; an Ack within this count is exempt from the frame-rate limit.
	pendingAcks atomic.Int64

	mu sync.Mutex
	// Guarded by mu.
	queue       []*Frame      // frames not yet handed to the writer, queue[head:]
	head        int           // index of the next frame to send
	queuedBytes int           // bytes in queue[head:]
	writing     bool          // a writer goroutine is running
	flushed     chan struct{} // made by finish, closed when the running writer exits
	closed      bool          // the session is ending: no more pushes are accepted
	expiry      *time.Timer   // ends the session when its token expires; nil without one
}

// end ends the session with cause. The first cause wins; later calls are
// no-ops. It never blocks.
func (s *session) end(cause *EndError) { s.cancel(cause) }

// touch records a sign of life.
func (s *session) touch(now time.Time) { s.lastSeen.Store(now.UnixNano()) }

// enqueue queues f for the writer. It reports whether f was accepted: false
// when the session is ending or f overflowed the queue, in which case the
// session is ended as a slow consumer. It never blocks on the client.
func (s *session) enqueue(f *Frame) bool {
	lim := &s.srv.opts
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return false
	}
	if n := len(s.queue) - s.head; n >= lim.QueueMaxMessages || s.queuedBytes+f.size > lim.QueueMaxBytes {
		s.closed = true
		queued := s.queuedBytes // read under the lock; the writer changes it
		s.mu.Unlock()
		s.srv.metrics.sessionOverflows.Inc()
		s.end(endf(ReasonSlowConsumer,
			"the client read too slowly: %d frames (%d bytes) were waiting to be sent; read faster or subscribe to less, then reconnect", n, queued))
		return false
	}
	if s.direct != nil && !s.writing && s.head == len(s.queue) {
		// Nothing queued ahead of f: the transport may take it at once.
		sent, err := s.direct.TrySend(f)
		if sent {
			s.mu.Unlock()
			s.srv.metrics.frameOut(f.Msg)
			return true
		}
		if err != nil {
			s.closed = true
			s.mu.Unlock()
			s.end(sendFailed(err))
			return false
		}
	}
	s.appendLocked(f)
	s.mu.Unlock()
	return true
}

// appendLocked queues f and starts a writer if none runs. s.mu must be held.
func (s *session) appendLocked(f *Frame) {
	if s.head > 0 && len(s.queue) == cap(s.queue) {
		// Reclaim the sent prefix before append would copy it along.
		n := copy(s.queue, s.queue[s.head:])
		clear(s.queue[n:])
		s.queue = s.queue[:n]
		s.head = 0
	}
	s.queue = append(s.queue, f)
	s.queuedBytes += f.size
	if !s.writing {
		s.writing = true
		go s.writeLoop()
	}
}

// keptQueueCap is the largest queue array a drained session keeps for its
// next frames. A fan-out queues one frame per session per broadcast, so
// keeping the small array saves an allocation per session per broadcast;
// an idle session holds at most 64 bytes for it.
const keptQueueCap = 8

// maxSendBatch bounds the frames a writer hands a BatchSender at once.
const maxSendBatch = 64

// writeLoop sends queued frames in order and exits when the queue is empty,
// so an idle session has no writer goroutine. With a BatchSender it sends
// what is queued (up to maxSendBatch frames) in one call.
func (s *session) writeLoop() {
	bs, _ := s.conn.(BatchSender)
	var batch []*Frame
	for {
		s.mu.Lock()
		n := len(s.queue) - s.head
		if n == 0 {
			if cap(s.queue) > keptQueueCap {
				s.queue = nil
			}
			s.queue, s.head = s.queue[:0], 0 // sent entries are already nil
			s.writerExitLocked()
			s.mu.Unlock()
			return
		}
		var f *Frame // the one frame to Send, or nil for the batch
		if bs == nil || n == 1 {
			n, f = 1, s.queue[s.head]
		} else {
			n = min(n, maxSendBatch)
			if cap(batch) < n {
				batch = make([]*Frame, 0, maxSendBatch)
			}
			batch = append(batch[:0], s.queue[s.head:s.head+n]...)
		}
		for i := range n {
			s.queuedBytes -= s.queue[s.head+i].size
			s.queue[s.head+i] = nil
		}
		s.head += n
		s.mu.Unlock()

		var err error
		if f != nil {
			if err = s.conn.Send(f); err == nil {
				s.srv.metrics.frameOut(f.Msg)
			}
		} else if err = bs.SendBatch(batch); err == nil {
			for _, f := range batch {
				s.srv.metrics.frameOut(f.Msg)
			}
		}
		if err != nil {
			s.end(sendFailed(err))
			s.mu.Lock()
			s.closed = true
			clear(s.queue)
			s.queue, s.head, s.queuedBytes = nil, 0, 0
			s.writerExitLocked()
			s.mu.Unlock()
			return
		}
		clear(batch)
	}
}

// sendFailed is the cause that ends a session whose transport failed to
// take a frame.
func sendFailed(err error) *EndError {
	return &EndError{Reason: ReasonTransport, Msg: "sending to the client failed: " + err.Error()}
}

// writerExitLocked records that the writer is exiting and tells finish,
// if it waits. s.mu must be held.
func (s *session) writerExitLocked() {
	s.writing = false
	if s.flushed != nil {
		close(s.flushed)
		s.flushed = nil
	}
}

// finish stops accepting frames, queues the Goodbye for cause (if its
// reason has one) behind what is already queued, and waits up to the
// goodbye timeout for the writer to flush. For a slow consumer the queue is
// dropped first: the client is not reading it, and Goodbye is best effort.
func (s *session) finish(cause *EndError) {
	gb := cause.goodbyeFrame()
	s.mu.Lock()
	s.closed = true
	if cause.Reason == ReasonSlowConsumer {
		clear(s.queue[s.head:])
		s.queue, s.queuedBytes = s.queue[:s.head], 0
	}
	if gb != nil && cause.Reason != ReasonTransport {
		s.appendLocked(newFrame(gb))
	}
	if !s.writing {
		s.mu.Unlock()
		return
	}
	if s.flushed == nil {
		s.flushed = make(chan struct{})
	}
	done := s.flushed
	s.mu.Unlock()
	t := time.NewTimer(s.srv.opts.GoodbyeTimeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	case <-s.conn.Context().Done():
	}
}

// enqueueFirst queues Identified and the replayed pushes. Replayed frames
// are shared with the history that keeps them, so they cost the queue no
// new memory and are not held to its bounds.
func (s *session) enqueueFirst(identified *Frame, replay ...[]*Frame) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.appendLocked(identified)
	for _, frames := range replay {
		for _, f := range frames {
			s.appendLocked(f)
			if f.Msg.GetPush().GetAckRequired() {
				s.pendingAcks.Add(1)
			}
		}
	}
}

// identified is the answer to Identify, without the resume fields.
func (s *session) identifiedMsg() *presencev1.Identified {
	o := &s.srv.opts
	return &presencev1.Identified{
		SessionId:         s.id,
		Uid:               s.uid,
		HeartbeatInterval: durationpbNew(o.HeartbeatInterval),
		HeartbeatTimeout:  durationpbNew(o.HeartbeatTimeout),
	}
}
