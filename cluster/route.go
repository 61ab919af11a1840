package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
	"github.com/presence-dev/presence/server"
)

// holders returns the other nodes holding uid (or every other node, for
// uid ""), and ErrClusterUnreachable when this node is cut off from NATS:
// then it cannot tell who holds what, whatever its last view says.
func (n *Node) holders(uid string) ([]string, error) {
	if !n.nc.IsConnected() {
		return nil, server.ErrClusterUnreachable
	}
	return n.lastHolders(uid), nil
}

// lastHolders is holders from the last view, connected or not.
func (n *Node) lastHolders(uid string) []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	if uid != "" {
		return n.dir.nodes(nil, uid, n.id)
	}
	ids := make([]string, 0, len(n.peers))
	for id := range n.peers {
		ids = append(ids, id)
	}
	return ids
}

// scatter sends the same request to every node in ids at once and calls
// each with every reply that came back; it returns an error naming the
// nodes that did not answer.
func (n *Node) scatter(ctx context.Context, ids []string, op string, body any, timeout time.Duration, each func(*reply)) error {
	var (
		mu   sync.Mutex
		errs []string
		wg   sync.WaitGroup
	)
	for _, id := range ids {
		wg.Go(func() {
			var r reply
			err := n.request(ctx, id, op, body, timeout, &r)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err.Error())
				return
			}
			each(&r)
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		return fmt.Errorf("%d of %d other nodes could not be reached (%s)", len(errs), len(ids), strings.Join(errs, "; "))
	}
	return nil
}

// SendToUid implements server.Cluster: one request to each node the
// directory says holds the uid, none to the others.
func (n *Node) SendToUid(ctx context.Context, uid string, push *presencev1.Push, prev uint64, ackTimeout time.Duration) (server.RemoteDelivery, error) {
	var rd server.RemoteDelivery
	ids, err := n.holders(uid)
	if err != nil || len(ids) == 0 {
		return rd, err
	}
	b, err := proto.Marshal(push)
	if err != nil {
		return rd, err
	}
	err = n.scatter(ctx, ids, opPush, pushReq{Uid: uid, Push: b, Prev: prev, AckTimeout: int64(ackTimeout)}, n.cfg.RequestTimeout+ackTimeout, func(r *reply) {
		rd.Delivered += r.Delivered
		if rd.Epoch == "" && r.Delivered > 0 {
			rd.Seq, rd.Epoch = r.Seq, r.Epoch
		}
		rd.Acked = append(rd.Acked, r.Acked...)
		rd.Unacked = append(rd.Unacked, r.Unacked...)
	})
	return rd, err
}

// Broadcast implements server.Cluster: one request to every other node.
func (n *Node) Broadcast(ctx context.Context, push *presencev1.Push) (uint32, error) {
	ids, err := n.holders("")
	if err != nil || len(ids) == 0 {
		return 0, err
	}
	b, err := proto.Marshal(push)
	if err != nil {
		return 0, err
	}
	var delivered uint32
	err = n.scatter(ctx, ids, opBcast, bcastReq{Push: b}, n.cfg.RequestTimeout, func(r *reply) { delivered += r.Delivered })
	return delivered, err
}

// Kick implements server.Cluster.
func (n *Node) Kick(ctx context.Context, req *presencev1.KickRequest) (uint32, error) {
	ids, err := n.holders(req.GetUid())
	if err != nil || len(ids) == 0 {
		return 0, err
	}
	b, err := proto.Marshal(req)
	if err != nil {
		return 0, err
	}
	var kicked uint32
	err = n.scatter(ctx, ids, opKick, kickReq{Req: b}, n.cfg.RequestTimeout, func(r *reply) { kicked += r.Kicked })
	return kicked, err
}

// Elsewhere implements server.Cluster.
func (n *Node) Elsewhere(uid string) (int, time.Time) {
	n.mu.Lock()
	defer n.mu.Unlock()
	count, oldest, _ := n.dir.elsewhere(uid, n.id)
	return count, oldest
}

// ReplaceOldest implements server.Cluster: one request, to the node the
// directory says holds the uid's oldest session.
func (n *Node) ReplaceOldest(ctx context.Context, uid, msg string) error {
	n.mu.Lock()
	_, _, node := n.dir.elsewhere(uid, n.id)
	n.mu.Unlock()
	if node == "" {
		return nil // gone meanwhile
	}
	var r reply
	return n.request(ctx, node, opReplace, replaceReq{Uid: uid, Msg: msg}, n.cfg.RequestTimeout, &r)
}

// Sessions implements server.Cluster. Like every query it answers from
// the last view when cut off: it fails only when that view names other
// nodes holding the uid.
func (n *Node) Sessions(ctx context.Context, uid string) ([]*presencev1.SessionInfo, error) {
	ids := n.lastHolders(uid)
	if len(ids) == 0 {
		return nil, nil
	}
	var err error
	var infos []*presencev1.SessionInfo
	var bad error
	err = n.scatter(ctx, ids, opSessions, sessionsReq{Uid: uid}, n.cfg.RequestTimeout, func(r *reply) {
		for _, b := range r.Sessions {
			si := new(presencev1.SessionInfo)
			if err := proto.Unmarshal(b, si); err != nil {
				bad = err
				continue
			}
			infos = append(infos, si)
		}
	})
	return infos, errors.Join(err, bad)
}

// onRequest hands a request for this node to a goroutine of its own (a
// push may wait for acks), at most maxHandlers at once.
func (n *Node) onRequest(m *nats.Msg) {
	op := m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]
	select {
	case n.slots <- struct{}{}:
	default:
		respond(m, reply{Err: fmt.Sprintf("busy: %d requests in progress", maxHandlers)})
		return
	}
	started := n.spawn(func() {
		defer func() { <-n.slots }()
		if late(m) {
			respond(m, reply{Err: "the request arrived after its deadline; nothing was done"})
			return
		}
		respond(m, n.serve(op, m.Data))
	})
	if !started {
		<-n.slots
		respond(m, reply{Err: "the node is shutting down"})
	}
}

// late reports whether m's deadline has passed.
func late(m *nats.Msg) bool {
	ns, err := strconv.ParseInt(m.Header.Get(hdrDeadline), 10, 64)
	return err == nil && time.Now().UnixNano() > ns
}

func respond(m *nats.Msg, r reply) {
	b, _ := json.Marshal(r)
	m.Respond(b) // the asker times out if this is lost
}

// serve answers one request with this node's sessions.
func (n *Node) serve(op string, data []byte) reply {
	fail := func(err error) reply { return reply{Err: err.Error()} }
	switch op {
	case opPush:
		var req pushReq
		push := new(presencev1.Push)
		if err := json.Unmarshal(data, &req); err != nil {
			return fail(err)
		}
		if err := proto.Unmarshal(req.Push, push); err != nil {
			return fail(err)
		}
		resp, err := n.local.SendToUid(n.ctx, req.Uid, push, req.Prev, time.Duration(req.AckTimeout))
		if err != nil {
			return fail(err)
		}
		return reply{Delivered: resp.Delivered, Seq: resp.Seq, Epoch: resp.Epoch, Acked: resp.AckedSessions, Unacked: resp.UnackedSessions}
	case opBcast:
		var req bcastReq
		push := new(presencev1.Push)
		if err := json.Unmarshal(data, &req); err != nil {
			return fail(err)
		}
		if err := proto.Unmarshal(req.Push, push); err != nil {
			return fail(err)
		}
		return reply{Delivered: n.local.Broadcast(n.ctx, push)}
	case opKick:
		var req kickReq
		kr := new(presencev1.KickRequest)
		if err := json.Unmarshal(data, &req); err != nil {
			return fail(err)
		}
		if err := proto.Unmarshal(req.Req, kr); err != nil {
			return fail(err)
		}
		return reply{Kicked: n.local.Kick(kr)}
	case opSessions:
		var req sessionsReq
		if err := json.Unmarshal(data, &req); err != nil {
			return fail(err)
		}
		var r reply
		for _, si := range n.local.Sessions(req.Uid) {
			b, err := proto.Marshal(si)
			if err != nil {
				return fail(err)
			}
			r.Sessions = append(r.Sessions, b)
		}
		return r
	case opReplace:
		var req replaceReq
		if err := json.Unmarshal(data, &req); err != nil {
			return fail(err)
		}
		n.local.ReplaceOldest(req.Uid, req.Msg)
		return reply{}
	case opSnapshot:
		var req snapReq
		if err := json.Unmarshal(data, &req); err != nil {
			return fail(err)
		}
		return n.snapshot(req)
	}
	return reply{Err: fmt.Sprintf("unknown request %q (a newer node?)", op)}
}
