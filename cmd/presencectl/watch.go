package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/presence-dev/presence/client"
)

var watchCmd = &command{
	name:    "watch",
	usage:   "watch (--uid U | --token JWT) [--label k=v]... [global flags]",
	summary: "connect as a uid and print pushes and state changes as JSON lines",
	about: `Connects as a uid (with --token, if the server checks tokens) and prints one
JSON object per line until SIGINT or SIGTERM:

  {"type":"state","state":"connecting","attempt":1,...}
  {"type":"state","state":"connected","session_id":"...","uid":"...",...}
  {"type":"push","session_id":"...","push":{"id":"...","scope":"PUSH_SCOPE_UID","seq":"1","data":...},...}
  {"type":"state","state":"disconnected","code":"Unavailable","error":"...","goodbye":{...},"reconnect":true,"retry_in_ms":812,...}
  {"type":"state","state":"closed",...}

Every line has "time". It reconnects by itself (heartbeats, backoff, the
server's reconnect hints), and exits on its own only when the server refuses
it for good (for example an invalid uid, or Unauthenticated: exit 4).`,
	setup: func(fs *flag.FlagSet) func(context.Context, *env) error {
		uid := fs.String("uid", "", "the user `id` to connect as (required unless --token names it)")
		labels := labelsFlag{}
		fs.Var(labels, "label", "a session label `k=v`; repeat for more")
		return func(ctx context.Context, e *env) error {
			if *uid == "" && e.token == "" {
				return usageErr("watch", "--uid is required (or --token, whose subject is the uid)")
			}
			out := &lineWriter{w: e.stdout}
			c, err := client.New(client.Config{
				Target: e.addr, UID: *uid, Labels: labels, Token: e.token,
				OnPush: out.push, OnState: out.state,
			})
			if err != nil {
				return usageErr("watch", "%v", err)
			}
			defer c.Close()
			select {
			case <-ctx.Done():
				return nil
			case <-c.Done():
				if err := c.Err(); err != nil {
					return callError("watch", err)
				}
				return nil
			}
		}
	},
}

// lineWriter prints the client's reports as JSON lines. The client calls
// OnPush and OnState one at a time, so it needs no lock.
type lineWriter struct {
	w io.Writer
}

// line is one output line; omitted fields do not apply to its type.
type line struct {
	Type      string          `json:"type"` // "state" or "push"
	Time      string          `json:"time"`
	State     string          `json:"state,omitempty"`
	Attempt   int             `json:"attempt,omitempty"`
	SessionID string          `json:"session_id,omitempty"`
	UID       string          `json:"uid,omitempty"`
	Code      string          `json:"code,omitempty"`
	Error     string          `json:"error,omitempty"`
	Goodbye   json.RawMessage `json:"goodbye,omitempty"`
	Reconnect *bool           `json:"reconnect,omitempty"`
	RetryInMs *int64          `json:"retry_in_ms,omitempty"`
	Push      json.RawMessage `json:"push,omitempty"`
}

// watchJSON prints protobuf messages inside a line: field names as in the
// .proto, like the rest of the line.
var watchJSON = protojson.MarshalOptions{UseProtoNames: true}

func (l *lineWriter) state(s client.StateChange) {
	ln := line{Type: "state", State: s.State.String()}
	switch s.State {
	case client.StateConnecting:
		ln.Attempt = s.Attempt
	case client.StateConnected:
		ln.SessionID, ln.UID = s.SessionID, s.UID
	case client.StateDisconnected:
		ln.SessionID = s.SessionID
		if s.Goodbye != nil {
			ln.Goodbye, _ = watchJSON.Marshal(s.Goodbye)
		}
		retry := s.RetryIn.Milliseconds()
		ln.Reconnect, ln.RetryInMs = &s.Reconnect, &retry
		if !s.Reconnect {
			ln.RetryInMs = nil
		}
	}
	ln.Code, ln.Error = describe(s.Err)
	l.write(ln)
}

func (l *lineWriter) push(p *client.Push) {
	b, err := watchJSON.Marshal(p.Msg)
	if err != nil {
		b, _ = json.Marshal(map[string]string{"encoding_error": err.Error()})
	}
	l.write(line{Type: "push", SessionID: p.SessionID, Push: b})
}

func (l *lineWriter) write(ln line) {
	ln.Time = time.Now().UTC().Format(time.RFC3339Nano)
	b, _ := json.Marshal(ln) // cannot fail: strings, numbers and valid raw JSON
	fmt.Fprintf(l.w, "%s\n", b)
}

// describe splits an error into a gRPC code name (when it carries a
// status) and a message for people.
func describe(err error) (code, msg string) {
	if err == nil {
		return "", ""
	}
	var se interface{ GRPCStatus() *status.Status }
	if errors.As(err, &se) {
		st := se.GRPCStatus()
		return st.Code().String(), st.Message()
	}
	return "", err.Error()
}

// labelsFlag collects repeated --label k=v flags.
type labelsFlag map[string]string

func (f labelsFlag) String() string {
	var parts []string
	for k, v := range f {
		parts = append(parts, k+"="+v)
	}
	return strings.Join(parts, ",")
}

func (f labelsFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("label %q: want key=value", s)
	}
	f[k] = v
	return nil
}
