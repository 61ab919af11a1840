package server

import (
	"context"
	"math"
	"time"

	"google.golang.org/protobuf/proto"

	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
)

// The uid log: in a cluster with Shared, a uid's pushes are numbered in
// the cluster's log (one sequence per uid, the same on every node) rather
// than by each node, so that a client resumes on any node. The node
// taking a push appends it (compare-and-set on the uid's last entry, so
// each entry names the one before it: Prev), then delivers it here and
// routes it to the nodes holding the uid, as before. Every node delivers
// a uid's pushes in the log's order: a push whose Prev is not the last
// one delivered here waits while the node reads the missing ones from
// the log (two nodes pushing at once; a node that joined the uid just
// after a push was routed), and a push already delivered is not queued
// again. A uid's history on a node holds the log's entries it delivered,
// so a resume there is served locally when it can be, else from the log.

// LoggedPush is one entry of a uid's log.
type LoggedPush struct {
	Push *presencev1.Push // Seq set: its seq in the log
	Prev uint64           // the seq of the uid's entry before it; 0: none
}

// noRead asks ReadUid for the uid's last seq only.
const noRead = math.MaxUint64

// uidLogEpoch is the uid log's epoch ("" when pushes are numbered per
// node: one node, or a cluster without Shared).
func (srv *Server) uidLogEpoch() string {
	if e, ok := srv.uidEpoch.Load().(string); ok {
		return e
	}
	return ""
}

// StartUidLog says the cluster numbers uid pushes in its log, whose epoch
// this is. A cluster with Shared calls it in Attach, before any request,
// and again if the log was made anew.
func (l *Local) StartUidLog(epoch string) { l.srv.uidEpoch.Store(epoch) }

// uidLogRead is what Identify read from the log before registering.
type uidLogRead struct {
	epoch  string
	resume bool   // the client resumes in this epoch, from after
	after  uint64 // its position
	pushes []LoggedPush
	last   uint64 // the uid's last entry (0: none)
	err    error
}

// readUidLog reads, for an Identify, the uid's log after the client's
// position (or only where it stands).
func (srv *Server) readUidLog(ctx context.Context, uid string, resume *presencev1.ResumeFrom) *uidLogRead {
	r := &uidLogRead{epoch: srv.uidLogEpoch()}
	after := uint64(noRead)
	if e := resume.GetUidEpoch(); e != "" && e == r.epoch {
		r.resume, r.after, after = true, resume.GetUidSeq(), resume.GetUidSeq()
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	r.pushes, r.last, r.err = srv.shared.ReadUid(ctx, uid, after)
	if n := len(r.pushes); n > 0 {
		r.last = max(r.last, r.pushes[n-1].Push.GetSeq()) // appended during the read
	}
	return r
}

// chained reports whether ps are every entry after pos, up to last.
func chained(pos uint64, ps []LoggedPush, last uint64) bool {
	if len(ps) == 0 {
		return last == pos
	}
	prev := pos
	for _, lp := range ps {
		if lp.Prev != prev {
			return false
		}
		prev = lp.Push.GetSeq()
	}
	return prev == last
}

// joinLogged answers the uid half of an Identify in log mode, under the
// uid's shard lock, with s already in e.sessions: where s starts, what
// it is replayed, and how its resume went.
func (srv *Server) joinLogged(e *uidEntry, s *session, ul *uidLogRead, resume *presencev1.ResumeFrom) (res presencev1.ResumeResult, frames []*Frame, epoch string, seq uint64) {
	others := len(e.sessions) - 1
	synced := e.epoch == ul.epoch && others > 0 // this node follows the uid's log
	switch {
	case resume.GetUidEpoch() == "":
		res = presencev1.ResumeResult_RESUME_RESULT_UNSPECIFIED
	case synced && (ul.err != nil || e.seq >= ul.last) && resume.GetUidEpoch() == e.epoch && e.hist.covers(resume.GetUidSeq(), e.seq):
		// Served here, exactly as on one node.
		res = presencev1.ResumeResult_RESUME_RESULT_RESUMED
		frames = e.hist.replayFrames(nil, resume.GetUidSeq(), true)
	case ul.err == nil && ul.resume && chained(ul.after, ul.pushes, ul.last):
		res = presencev1.ResumeResult_RESUME_RESULT_RESUMED
		for _, lp := range ul.pushes {
			frames = append(frames, replayFrame(lp.Push, ul.epoch))
		}
		if synced && e.seq > ul.last {
			// Delivered here since the read: this node's history has them.
			if !e.hist.covers(ul.last, e.seq) {
				res, frames = presencev1.ResumeResult_RESUME_RESULT_LOST, nil
				break
			}
			frames = e.hist.replayFrames(frames, ul.last, true)
		}
	default:
		res = presencev1.ResumeResult_RESUME_RESULT_LOST
	}
	switch {
	case synced:
		if ul.err == nil && ul.last > e.seq {
			// Pushes on their way here: s has them from the log (or
			// needs none from before it joined), so they are not queued
			// to s again.
			s.uidFloor = ul.last
		}
	case ul.err == nil:
		// This node starts following the uid's log where it stands.
		if e.epoch != ul.epoch {
			e.hist.reset(ul.last, srv.hist.budget)
		} else if ul.last > e.seq {
			e.hist.skip(ul.last, srv.hist.budget)
		}
		e.epoch, e.seq = ul.epoch, ul.last
	default:
		// The log cannot be read (NATS is away): follow the uid from its
		// next push (deliverLogged starts the chain there). Nothing can
		// be published to the log meanwhile, so nothing is missed.
		e.epoch, e.seq = "", 0
	}
	return res, frames, ul.epoch, max(e.seq, s.uidFloor)
}

// replayFrame is a logged push as replayed.
func replayFrame(p *presencev1.Push, epoch string) *Frame {
	c := proto.CloneOf(p)
	c.Epoch, c.Replay = epoch, true
	return pushFrame(c)
}

// deliverLogged delivers a logged push (Seq set, prev its Prev) to the
// uid's sessions here, in the log's order.
func (srv *Server) deliverLogged(ctx context.Context, uid string, push *presencev1.Push, prev uint64) uidDelivery {
	r := uidDelivery{UidDelivery: &presencev1.UidDelivery{Uid: uid, Seq: push.GetSeq(), Epoch: push.GetEpoch()}}
	for attempt := 0; ; attempt++ {
		gap, from := false, uint64(0)
		srv.reg.withUid(uid, false, func(e *uidEntry) {
			if e == nil || len(e.sessions) == 0 {
				r.Offline = true
				return
			}
			if e.epoch != push.GetEpoch() {
				// Not following the log (it could not be read at
				// Identify, or it was made anew): start here.
				e.hist.reset(prev, srv.hist.budget)
				e.epoch, e.seq = push.GetEpoch(), prev
			}
			switch {
			case push.GetSeq() <= e.seq:
				// Delivered here already (read from the log to fill a gap).
				r.Delivered = uint32(len(e.sessions))
				for _, s := range e.sessions {
					r.sessions = append(r.sessions, s.id)
				}
			case prev == e.seq || attempt >= 2:
				if prev != e.seq {
					srv.missedLocked(e, uid, prev)
				}
				srv.queueLoggedLocked(e, push, &r)
			default:
				gap, from = true, e.seq
			}
		})
		if !gap {
			return r
		}
		srv.fillUid(ctx, uid, from, prev)
	}
}

// queueLoggedLocked keeps p in e's history and queues it to e's sessions
// (but those that got it at Identify). The uid's shard lock must be held.
func (srv *Server) queueLoggedLocked(e *uidEntry, p *presencev1.Push, r *uidDelivery) {
	f := pushFrame(p)
	if n, _ := e.hist.add(p, f.Size(), time.Now(), time.Time{}, srv.hist); n > 0 {
		srv.storedExpired.Add(int64(n))
	}
	e.seq = p.GetSeq()
	if r == nil {
		r = &uidDelivery{UidDelivery: &presencev1.UidDelivery{}}
	}
	srv.queueUidLocked(e, f, p.GetAckRequired(), r, p.GetSeq())
}

// missedLocked handles a uid whose pushes up to prev this node cannot
// deliver (gone from the log, or the log unreachable): its sessions here
// missed them for good, so they are ended with Goodbye SLOW_CONSUMER and
// their clients' resume says LOST, rather than going on past a silent
// gap. The uid's shard lock must be held.
func (srv *Server) missedLocked(e *uidEntry, uid string, prev uint64) {
	srv.log.Warn("pushes of a uid missed for good: gone from the cluster's log, or it cannot be read; its sessions here are ended so that their clients resume and learn it",
		"uid", uid, "after", e.seq, "to", prev)
	e.hist.skip(prev, srv.hist.budget)
	e.seq = prev
	for _, s := range e.sessions {
		s.end(endf(ReasonSlowConsumer, "this node missed pushes of uid %q it cannot get again; reconnect with resume (it will say LOST)", uid))
	}
}

// fillUid delivers here the uid's logged pushes after from, up to prev,
// reading them from the log.
func (srv *Server) fillUid(ctx context.Context, uid string, from, prev uint64) {
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	ps, _, err := srv.shared.ReadUid(rctx, uid, from)
	cancel()
	epoch := srv.uidLogEpoch()
	srv.reg.withUid(uid, false, func(e *uidEntry) {
		if e == nil || len(e.sessions) == 0 || e.epoch != epoch {
			return
		}
		for _, lp := range ps {
			if lp.Push.GetSeq() <= e.seq {
				continue
			}
			if lp.Prev != e.seq || lp.Push.GetSeq() > prev {
				break
			}
			lp.Push.Epoch = epoch
			srv.queueLoggedLocked(e, lp.Push, nil)
		}
		if e.seq < prev {
			if err != nil {
				srv.log.Warn("the cluster's log could not be read", "uid", uid, "err", err)
			}
			srv.missedLocked(e, uid, prev)
		}
	})
}

// CatchUpUid delivers the uid's logged pushes this node has not had: a
// cluster calls it a heartbeat after a uid's first session here started,
// since a node pushing just then may not have known to route here.
func (l *Local) CatchUpUid(ctx context.Context, uid string) error {
	srv := l.srv
	if srv.uidLogEpoch() == "" {
		return nil
	}
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	_, last, err := srv.shared.ReadUid(rctx, uid, noRead)
	cancel()
	if err != nil {
		return err
	}
	var from uint64
	behind := false
	srv.reg.withUid(uid, false, func(e *uidEntry) {
		if e != nil && len(e.sessions) > 0 && e.epoch == srv.uidLogEpoch() && e.seq < last {
			behind, from = true, e.seq
		}
	})
	if behind {
		srv.fillUid(ctx, uid, from, last)
	}
	return nil
}

// queueUnlogged queues a push the log could not take (NATS away) to the
// uid's sessions here: seq 0, no epoch, kept in no history (a client's
// resume position does not move past it, and no resume replays it).
func (srv *Server) queueUnlogged(push *presencev1.Push, uid string) uidDelivery {
	r := uidDelivery{UidDelivery: &presencev1.UidDelivery{Uid: uid}}
	p := pushCopy(push)
	f := pushFrame(p)
	srv.reg.withUid(uid, false, func(e *uidEntry) {
		if e == nil || len(e.sessions) == 0 {
			r.Offline = true
			return
		}
		srv.queueUidLocked(e, f, p.AckRequired, &r, 0)
	})
	return r
}
