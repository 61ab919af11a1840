package main

import (
	"context"
	"flag"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
)

// uidList is a repeatable --uid flag that also takes comma-separated uids.
type uidList []string

func (u *uidList) String() string { return strings.Join(*u, ",") }
func (u *uidList) Set(s string) error {
	for p := range strings.SplitSeq(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*u = append(*u, p)
		}
	}
	return nil
}

var presenceCmd = &command{
	name:    "presence",
	usage:   "presence --uid U [--uid U2 ...] [global flags]",
	summary: "is a uid online: its sessions, or when it was last seen",
	about: `With one --uid, prints that uid's presence with its live sessions (ids,
labels, connected and last-frame times), or when it was last seen. With
several (repeat --uid or separate with commas; up to 1,000), prints all of
them in one round trip, without sessions. Exit 0 whether or not they are
online.`,
	setup: func(fs *flag.FlagSet) func(context.Context, *env) error {
		var uids uidList
		fs.Var(&uids, "uid", "a user `id` (repeatable, or comma-separated)")
		return func(ctx context.Context, e *env) error {
			switch len(uids) {
			case 0:
				return usageErr("presence", "--uid is required")
			case 1:
				return e.call(ctx, "presence", func(ctx context.Context, b presencev1.BackendServiceClient) (proto.Message, error) {
					return b.GetPresence(ctx, &presencev1.GetPresenceRequest{Uid: uids[0]})
				})
			}
			return e.call(ctx, "presence", func(ctx context.Context, b presencev1.BackendServiceClient) (proto.Message, error) {
				return b.BatchGetPresence(ctx, &presencev1.BatchGetPresenceRequest{Uids: uids})
			})
		}
	},
}

var onlineCmd = &command{
	name:    "online",
	usage:   "online [--page-size N] [--page-token T] [--counts] [global flags]",
	summary: "list online uids a page at a time, or count them",
	about: `Prints one page of online uids in uid order with the token for the next
page; pass it back with --page-token. With --counts, prints how many uids are
online and how many sessions are live instead.`,
	setup: func(fs *flag.FlagSet) func(context.Context, *env) error {
		size := fs.Int("page-size", 100, "uids per page, 1 to 1,000")
		token := fs.String("page-token", "", "the next_page_token of the previous page")
		counts := fs.Bool("counts", false, "print counts instead of uids")
		return func(ctx context.Context, e *env) error {
			if *counts {
				return e.call(ctx, "online", func(ctx context.Context, b presencev1.BackendServiceClient) (proto.Message, error) {
					return b.GetCounts(ctx, &presencev1.GetCountsRequest{})
				})
			}
			return e.call(ctx, "online", func(ctx context.Context, b presencev1.BackendServiceClient) (proto.Message, error) {
				return b.ListOnline(ctx, &presencev1.ListOnlineRequest{PageSize: int32(*size), PageToken: *token})
			})
		}
	},
}

var kickCmd = &command{
	name:    "kick",
	usage:   "kick --uid U [--session S] [--reason TEXT] [--reconnect [--reconnect-after D]] [global flags]",
	summary: "end a uid's sessions (or one) with Goodbye KICKED",
	about: `Ends every live session of a uid, or only --session, with Goodbye KICKED and
prints how many ended. Without --reconnect the clients are told not to
reconnect. A uid with no live session exits 3 (NotFound).`,
	setup: func(fs *flag.FlagSet) func(context.Context, *env) error {
		uid := fs.String("uid", "", "the user `id` (required)")
		session := fs.String("session", "", "only this session `id`")
		reason := fs.String("reason", "", "told to the client in Goodbye")
		reconnect := fs.Bool("reconnect", false, "let the client reconnect")
		after := fs.Duration("reconnect-after", 0, "with --reconnect: how long the client should wait")
		return func(ctx context.Context, e *env) error {
			if *uid == "" {
				return usageErr("kick", "--uid is required")
			}
			req := &presencev1.KickRequest{Uid: *uid, SessionId: *session, Reason: *reason, Reconnect: *reconnect}
			if *after > 0 {
				req.ReconnectAfter = durationpb.New(*after)
			}
			return e.call(ctx, "kick", func(ctx context.Context, b presencev1.BackendServiceClient) (proto.Message, error) {
				return b.Kick(ctx, req)
			})
		}
	},
}
