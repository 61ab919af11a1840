package main

import (
	"context"
	"flag"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
)

var sendCmd = &command{
	name:    "send",
	usage:   "send (--uid U | --uids U1,U2,...) (--data JSON | --text TEXT) [--store-for D] [--ack-timeout D] [--idempotency-key K] [global flags]",
	summary: "push to every live session of one uid, or of many",
	about: `Pushes a message to every live session of one uid and prints the server's
answer as one JSON object: push_id, seq, delivered (how many sessions it was
queued to), sent_at, epoch. A uid with no live session exits 3 (NotFound),
unless --store-for keeps the push until the uid connects (stored: true).
--ack-timeout waits for the sessions to acknowledge the push and lists who
did (acked_sessions, unacked_sessions). --idempotency-key makes a retry
return the first answer (duplicate: true) and deliver nothing twice.

With --uids (up to 1,000) it sends one push to each uid and prints a result
per uid; an offline uid is a result (offline: true), not an error.`,
	setup: func(fs *flag.FlagSet) func(context.Context, *env) error {
		uid := fs.String("uid", "", "the user `id` to push to")
		uids := fs.String("uids", "", "push to each of these comma-separated user `ids` instead")
		storeFor := fs.Duration("store-for", 0, "keep the push this long for a uid with no live session")
		ackTimeout := fs.Duration("ack-timeout", 0, "wait up to this long for the sessions to acknowledge (one uid only)")
		key := fs.String("idempotency-key", "", "make retries safe: the same `key` again returns the first answer")
		payload := bindPayload(fs)
		return func(ctx context.Context, e *env) error {
			switch {
			case *uid == "" && *uids == "":
				return usageErr("send", "--uid is required (or --uids U1,U2,... for many)")
			case *uid != "" && *uids != "":
				return usageErr("send", "give --uid or --uids, not both")
			}
			data, err := payload.value("send")
			if err != nil {
				return err
			}
			if *ackTimeout >= e.timeout {
				return usageErr("send", "--ack-timeout %v must be shorter than --timeout %v", *ackTimeout, e.timeout)
			}
			optDur := func(d time.Duration) *durationpb.Duration {
				if d == 0 {
					return nil
				}
				return durationpb.New(d)
			}
			if *uids != "" {
				if *ackTimeout != 0 {
					return usageErr("send", "--ack-timeout works with --uid only")
				}
				return e.call(ctx, "send", func(ctx context.Context, b presencev1.BackendServiceClient) (proto.Message, error) {
					return b.SendToUids(ctx, &presencev1.SendToUidsRequest{Uids: strings.Split(*uids, ","),
						Payload: &presencev1.SendToUidsRequest_Data{Data: data}, StoreFor: optDur(*storeFor), IdempotencyKey: *key})
				})
			}
			return e.call(ctx, "send", func(ctx context.Context, b presencev1.BackendServiceClient) (proto.Message, error) {
				return b.SendToUid(ctx, &presencev1.SendToUidRequest{Uid: *uid, Payload: &presencev1.SendToUidRequest_Data{Data: data},
					StoreFor: optDur(*storeFor), AckTimeout: optDur(*ackTimeout), IdempotencyKey: *key})
			})
		}
	},
}

var broadcastCmd = &command{
	name:    "broadcast",
	usage:   "broadcast (--data JSON | --text TEXT) [--idempotency-key K] [global flags]",
	summary: "push to every identified session",
	about: `Pushes a message to every identified session on the server and prints the
server's answer as one JSON object: push_id, seq, delivered (zero is not an
error), sent_at, epoch.`,
	setup: func(fs *flag.FlagSet) func(context.Context, *env) error {
		key := fs.String("idempotency-key", "", "make retries safe: the same `key` again returns the first answer")
		payload := bindPayload(fs)
		return func(ctx context.Context, e *env) error {
			data, err := payload.value("broadcast")
			if err != nil {
				return err
			}
			return e.call(ctx, "broadcast", func(ctx context.Context, b presencev1.BackendServiceClient) (proto.Message, error) {
				return b.Broadcast(ctx, &presencev1.BroadcastRequest{Payload: &presencev1.BroadcastRequest_Data{Data: data}, IdempotencyKey: *key})
			})
		}
	},
}

// payloadFlags are --data and --text, one of which a push needs.
type payloadFlags struct {
	data, text *string
	textSet    bool
}

func bindPayload(fs *flag.FlagSet) *payloadFlags {
	p := &payloadFlags{
		data: fs.String("data", "", "the payload: any `JSON` value, e.g. '{\"text\":\"hi\"}' (numbers are doubles: send big integers as strings)"),
	}
	p.text = new(string)
	fs.Func("text", "shorthand for a string payload: --text `TEXT` is --data '\"TEXT\"'", func(s string) error {
		*p.text, p.textSet = s, true
		return nil
	})
	return p
}

// value returns the payload as a protobuf Value.
func (p *payloadFlags) value(cmd string) (*structpb.Value, error) {
	switch {
	case *p.data != "" && p.textSet:
		return nil, usageErr(cmd, "give --data or --text, not both")
	case p.textSet:
		return structpb.NewStringValue(*p.text), nil
	case *p.data == "":
		return nil, usageErr(cmd, "a payload is required: --data JSON or --text TEXT")
	}
	v := &structpb.Value{}
	if err := protojson.Unmarshal([]byte(*p.data), v); err != nil {
		return nil, usageErr(cmd, "--data is not valid JSON: %v", err)
	}
	return v, nil
}

// call makes one backend call with the global timeout and API key, and
// prints its response as one JSON line.
func (e *env) call(ctx context.Context, op string, do func(context.Context, presencev1.BackendServiceClient) (proto.Message, error)) error {
	cc, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return usageErr(op, "--addr %q: %v", e.addr, err)
	}
	defer cc.Close()
	ctx, cancel := e.callContext(ctx)
	defer cancel()
	resp, err := do(ctx, presencev1.NewBackendServiceClient(cc))
	if st := status.Convert(err); st.Code() == codes.Unavailable {
		return &rpcError{op: op, st: status.New(st.Code(), fmt.Sprintf(
			"%s; is presenced running at %s? (set --addr or PRESENCE_ADDR)", st.Message(), e.addr))}
	}
	if err != nil {
		return callError(op, err)
	}
	return e.printJSON(resp)
}

// callContext bounds a backend call by --timeout and adds the API key.
func (e *env) callContext(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(ctx, e.timeout)
	if e.apiKey != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+e.apiKey)
	}
	return ctx, cancel
}

// jsonOut is how protobuf messages are printed: one line, field names as in
// the .proto, zero values included so scripts always find every field.
var jsonOut = protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}

// printJSON prints m as one JSON line on stdout.
func (e *env) printJSON(m proto.Message) error {
	b, err := jsonOut.Marshal(m)
	if err != nil {
		return fmt.Errorf("encoding the answer: %w", err)
	}
	_, err = fmt.Fprintf(e.stdout, "%s\n", b)
	return err
}
