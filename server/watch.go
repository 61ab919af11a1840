package server

import (
	"context"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
)

// MaxWatchUids bounds WatchPresenceRequest.uids.
const MaxWatchUids = 1000

// watcher is one WatchPresence stream: a filter, a bounded queue filled by
// presence.emitLocked, and a writer goroutine that sends it. Like a
// session, its handler only waits, so a watcher that stops reading can be
// ended without the handler being stuck in Send.
type watcher struct {
	uids     map[string]bool // nil: every uid
	sessions bool            // include session events
	max      int
	cancel   context.CancelCauseFunc
	wake     chan struct{}      // one slot; signalled when events are queued
	overflow prometheus.Counter // presence_queue_overflows_total{queue="watcher"}

	mu    sync.Mutex
	queue []*presencev1.WatchPresenceResponse // guarded by mu
}

// offer queues ev if the watcher wants it; a full queue ends the watcher.
// Called under presence.mu; never blocks.
func (w *watcher) offer(ev *presencev1.WatchPresenceResponse) {
	if w.uids != nil && !w.uids[ev.Uid] {
		return
	}
	if !w.sessions && (ev.Type == presencev1.PresenceEventType_PRESENCE_EVENT_TYPE_SESSION_STARTED ||
		ev.Type == presencev1.PresenceEventType_PRESENCE_EVENT_TYPE_SESSION_ENDED) {
		return
	}
	w.mu.Lock()
	if len(w.queue) >= w.max {
		n := len(w.queue)
		w.mu.Unlock()
		w.overflow.Inc()
		w.cancel(endf(ReasonSlowConsumer, "the watcher fell behind: %d events were waiting to be sent; read faster or watch fewer uids, then watch again", n))
		return
	}
	w.queue = append(w.queue, ev)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// take returns and clears the queued events.
func (w *watcher) take() []*presencev1.WatchPresenceResponse {
	w.mu.Lock()
	defer w.mu.Unlock()
	q := w.queue
	w.queue = nil
	return q
}

// watcherCount returns the number of open watchers.
func (p *presence) watcherCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.watchers)
}

// endWatchers ends every watcher with cause.
func (p *presence) endWatchers(cause *EndError) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for w := range p.watchers {
		w.cancel(cause)
	}
}

// WatchPresence implements BackendService.WatchPresence.
func (srv *Server) WatchPresence(req *presencev1.WatchPresenceRequest, stream presencev1.BackendService_WatchPresenceServer) error {
	if n := len(req.GetUids()); n > MaxWatchUids {
		return status.Errorf(codes.InvalidArgument, "%d uids; watch at most %d, or none for every uid", n, MaxWatchUids)
	}
	w := &watcher{sessions: req.GetIncludeSessions(), max: srv.opts.WatchQueue, wake: make(chan struct{}, 1),
		overflow: srv.metrics.watcherOverflows}
	if len(req.GetUids()) > 0 {
		w.uids = make(map[string]bool, len(req.GetUids()))
		for _, uid := range req.GetUids() {
			if err := validateUid(uid); err != nil {
				return status.Errorf(codes.InvalidArgument, "uids: %q: %v", uid, err)
			}
			w.uids[uid] = true
		}
	}
	if !srv.enter() {
		return status.Error(codes.Unavailable, "the server is shutting down; watch again in a few seconds")
	}
	defer srv.leave()
	ctx, cancel := context.WithCancelCause(stream.Context())
	defer cancel(nil)
	w.cancel = cancel

	p := srv.pres
	p.mu.Lock()
	if req.GetIncludeInitial() {
		for uid := range p.announce {
			if w.uids == nil || w.uids[uid] {
				w.queue = append(w.queue, &presencev1.WatchPresenceResponse{
					Type: presencev1.PresenceEventType_PRESENCE_EVENT_TYPE_ONLINE, Uid: uid, Initial: true,
				})
			}
		}
	}
	w.queue = append(w.queue, &presencev1.WatchPresenceResponse{
		Type: presencev1.PresenceEventType_PRESENCE_EVENT_TYPE_SUBSCRIBED, Seq: p.seq, Time: timestamppb.Now(),
	})
	// The initial snapshot may exceed the queue bound; live events may not.
	w.max += len(w.queue)
	p.watchers[w] = struct{}{}
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.watchers, w)
		p.mu.Unlock()
	}()
	if srv.isDraining() {
		cancel(&EndError{Reason: ReasonShutdown, Msg: "the server is shutting down; watch again in a few seconds"})
	}

	// The writer sends whatever is queued (the initial snapshot first),
	// then waits to be woken. It ends with the stream.
	go func() {
		for {
			for _, ev := range w.take() {
				if err := stream.Send(ev); err != nil {
					cancel(err)
					return
				}
			}
			select {
			case <-w.wake:
			case <-ctx.Done():
				return
			}
		}
	}()
	<-ctx.Done()
	cause := asEndError(context.Cause(ctx))
	if cause.Reason == ReasonClientClosed {
		return nil
	}
	return status.Error(cause.Reason.Code(), cause.Msg)
}
