package server

import (
	"time"
)

// reapLoop is the liveness reaper: every ReapInterval it ends the sessions
// that have sent no frame for HeartbeatTimeout. It reads one atomic per
// session and touches no timer, so a sweep stays cheap as sessions grow.
// It runs until stop is closed.
func (srv *Server) reapLoop(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(srv.opts.ReapInterval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			srv.reap(now)
			srv.trimHistories(now)
		}
	}
}

// reap ends every session silent since before now-HeartbeatTimeout and
// returns how many it ended. The silent ones are collected under the shard
// read locks and ended outside them.
func (srv *Server) reap(now time.Time) int {
	deadline := now.Add(-srv.opts.HeartbeatTimeout).UnixNano()
	var silent []*session
	srv.reg.each(func(s *session) {
		if s.lastSeen.Load() < deadline {
			silent = append(silent, s)
		}
	})
	for _, s := range silent {
		idle := now.Sub(time.Unix(0, s.lastSeen.Load())).Round(time.Millisecond)
		s.end(endf(ReasonHeartbeatTimeout,
			"no frame from the client for %v (the heartbeat timeout is %v); send Ping every %v, then reconnect",
			idle, srv.opts.HeartbeatTimeout, srv.opts.HeartbeatInterval))
	}
	return len(silent)
}

// trimHistories applies the age bounds of every history and of the
// idempotency keys. Stored pushes whose time passed undelivered are
// dropped and counted.
func (srv *Server) trimHistories(now time.Time) {
	expired := srv.reg.trimHistories(now, srv.hist)
	srv.bcastMu.Lock()
	srv.bcastHist.trim(now, srv.hist)
	srv.bcastMu.Unlock()
	srv.localIdem.trim(now)
	if expired > 0 {
		srv.storedExpired.Add(int64(expired))
	}
}
