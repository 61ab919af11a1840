package server

import (
	"context"
	"encoding/base64"
	"slices"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
)

// Query limits.
const (
	MaxBatchUids        = 1000
	DefaultListPageSize = 100
	MaxListPageSize     = 1000
)

// GetPresence implements BackendService.GetPresence.
func (srv *Server) GetPresence(ctx context.Context, req *presencev1.GetPresenceRequest) (*presencev1.GetPresenceResponse, error) {
	if err := validateUid(req.GetUid()); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "uid: %v", err)
	}
	if srv.opts.Cluster != nil {
		p, err := srv.clusterPresenceOf(ctx, req.GetUid(), true)
		if err != nil {
			return nil, err
		}
		return &presencev1.GetPresenceResponse{Presence: p}, nil
	}
	return &presencev1.GetPresenceResponse{Presence: srv.presenceOf(req.GetUid(), true)}, nil
}

// BatchGetPresence implements BackendService.BatchGetPresence.
func (srv *Server) BatchGetPresence(ctx context.Context, req *presencev1.BatchGetPresenceRequest) (*presencev1.BatchGetPresenceResponse, error) {
	uids := req.GetUids()
	if len(uids) == 0 || len(uids) > MaxBatchUids {
		return nil, status.Errorf(codes.InvalidArgument, "%d uids; ask for 1 to %d", len(uids), MaxBatchUids)
	}
	for i, uid := range uids {
		if err := validateUid(uid); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "uids[%d]: %v", i, err)
		}
	}
	resp := &presencev1.BatchGetPresenceResponse{Presences: make([]*presencev1.UidPresence, len(uids))}
	for i, uid := range uids {
		resp.Presences[i] = srv.presenceOf(uid, false)
	}
	return resp, nil
}

// presenceOf reports uid's live presence, with its sessions if asked.
func (srv *Server) presenceOf(uid string, withSessions bool) *presencev1.UidPresence {
	if srv.opts.Cluster != nil && !withSessions {
		p, _ := srv.clusterPresenceOf(context.Background(), uid, false) // no I/O, no error
		return p
	}
	p := &presencev1.UidPresence{Uid: uid}
	sessions := srv.reg.sessionsOf(uid) // a copy, oldest first
	if len(sessions) == 0 {
		if at, ok := srv.pres.lastSeenAt(uid); ok {
			p.LastSeen = timestamppb.New(at)
		}
		return p
	}
	p.Online = true
	p.SessionCount = uint32(len(sessions))
	p.ConnectedSince = timestamppb.New(sessions[0].connectedAt)
	if withSessions {
		p.Sessions = sessionInfos(sessions)
	}
	return p
}

// sessionInfos describes sessions for a query.
func sessionInfos(sessions []*session) []*presencev1.SessionInfo {
	var infos []*presencev1.SessionInfo
	for _, s := range sessions {
		infos = append(infos, &presencev1.SessionInfo{
			SessionId:   s.id,
			Labels:      s.labels,
			ConnectedAt: timestamppb.New(s.connectedAt),
			LastFrameAt: timestamppb.New(time.Unix(0, s.lastSeen.Load())),
		})
	}
	return infos
}

// ListOnline implements BackendService.ListOnline. Pages are keyed by the
// last uid returned, so concurrent joins and leaves never make a listing
// repeat a uid or skip one that stayed online. Each page costs a pass over
// the online uids (copied shard by shard) and a sort of those after the
// key.
func (srv *Server) ListOnline(ctx context.Context, req *presencev1.ListOnlineRequest) (*presencev1.ListOnlineResponse, error) {
	size := int(req.GetPageSize())
	switch {
	case size == 0:
		size = DefaultListPageSize
	case size < 0 || size > MaxListPageSize:
		return nil, status.Errorf(codes.InvalidArgument, "page_size %d; use 1 to %d (0 means %d)", size, MaxListPageSize, DefaultListPageSize)
	}
	after := ""
	if tok := req.GetPageToken(); tok != "" {
		b, err := base64.RawURLEncoding.DecodeString(tok)
		if err != nil || validateUid(string(b)) != nil {
			return nil, status.Error(codes.InvalidArgument, "page_token is not one this server gave; start again with an empty token")
		}
		after = string(b)
	}
	uids := srv.onlineAfter(nil, after)
	slices.Sort(uids)
	resp := &presencev1.ListOnlineResponse{}
	if len(uids) > size {
		uids = uids[:size]
		resp.NextPageToken = base64.RawURLEncoding.EncodeToString([]byte(uids[size-1]))
	}
	resp.Uids = uids
	return resp, nil
}

// GetCounts implements BackendService.GetCounts.
func (srv *Server) GetCounts(ctx context.Context, req *presencev1.GetCountsRequest) (*presencev1.GetCountsResponse, error) {
	uids, sessions := srv.onlineCounts()
	return &presencev1.GetCountsResponse{OnlineUids: uint64(uids), Sessions: uint64(sessions)}, nil
}

// Kick implements BackendService.Kick.
func (srv *Server) Kick(ctx context.Context, req *presencev1.KickRequest) (*presencev1.KickResponse, error) {
	if err := validateUid(req.GetUid()); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "uid: %v", err)
	}
	if len(req.GetReason()) > 256 {
		return nil, status.Errorf(codes.InvalidArgument, "reason is %d bytes; the limit is 256", len(req.GetReason()))
	}
	after := req.GetReconnectAfter().AsDuration()
	if after < 0 || after > time.Hour {
		return nil, status.Error(codes.InvalidArgument, "reconnect_after must be between 0 and 1h")
	}
	kicked := srv.kickLocal(req)
	if srv.opts.Cluster != nil {
		var err error
		if kicked, err = srv.kickCluster(ctx, req, kicked); err != nil {
			return nil, err
		}
	}
	if kicked == 0 {
		if req.GetSessionId() != "" {
			return nil, status.Errorf(codes.NotFound, "uid %q has no live session %q; nothing was ended", req.GetUid(), req.GetSessionId())
		}
		return nil, status.Errorf(codes.NotFound, "uid %q has no live session; nothing was ended", req.GetUid())
	}
	return &presencev1.KickResponse{Kicked: kicked}, nil
}

// kickLocal ends the sessions here that req names and returns how many.
func (srv *Server) kickLocal(req *presencev1.KickRequest) uint32 {
	after := req.GetReconnectAfter().AsDuration()
	msg := "a backend ended this session"
	if r := req.GetReason(); r != "" {
		msg += ": " + r
	}
	if !req.GetReconnect() {
		msg += "; do not reconnect automatically"
	}
	var kicked uint32
	for _, s := range srv.reg.sessionsOf(req.GetUid()) {
		if id := req.GetSessionId(); id != "" && s.id != id {
			continue
		}
		s.end(&EndError{Reason: ReasonKicked, Msg: msg, Reconnect: req.GetReconnect(), ReconnectAfter: after})
		kicked++
	}
	return kicked
}
