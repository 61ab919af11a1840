package daemon

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/presence-dev/presence/auth"
	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
	"github.com/presence-dev/presence/server"
)

var updateDocs = flag.Bool("update", false, "rewrite docs/bad-input.md from what the server answers")

// badInput is one row of docs/bad-input.md: an input, and what the server
// answered.
type badInput struct {
	transport, input string
	code             codes.Code
	http             int // 0 for gRPC-only rows
	msg              string
}

// TestBadInput sends every bad input we know of, over REST and gRPC, to a
// secured daemon with small limits; asserts each gets the documented code
// and HTTP status; checks a healthy session still works after each; and
// fails when docs/bad-input.md does not show exactly what the server said.
func TestBadInput(t *testing.T) {
	v, _ := auth.NewJWTVerifier(auth.JWTConfig{HMACSecret: testSecret, Leeway: time.Millisecond})
	keys, _ := auth.NewAPIKeys(testKey)
	d, err := Start(Config{
		GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", Transport: testTransport,
		Server: server.Options{
			Tokens: v, IdentifyTimeout: 300 * time.Millisecond, MaxPayloadBytes: 1024,
			MaxSessionsPerUid: 1, SessionsPerUidPolicy: server.RefuseNewest, MaxFrameRate: 50, FrameBurst: 10,
		},
		APIKeys: keys, MaxRecvMsgBytes: 4096, MaxBodyBytes: 8192,
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Shutdown(context.Background()) })
	cc, err := grpc.NewClient(d.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	token := func(uid string, ttl time.Duration) string {
		s, _ := auth.MintHS256(testSecret, uid, ttl, "", "")
		return s
	}
	healthy := connect(t, cc, "", token("healthy", time.Hour))
	backend := presencev1.NewBackendServiceClient(cc)
	key := bearer(testKey)

	var rows []badInput
	check := func(row badInput, wantCode codes.Code, wantHTTP int) {
		t.Helper()
		if row.code != wantCode || row.http != wantHTTP {
			t.Errorf("%s %s: got %v / HTTP %d (%q); want %v / HTTP %d", row.transport, row.input, row.code, row.http, row.msg, wantCode, wantHTTP)
		}
		// The server still serves the healthy session normally.
		resp, err := backend.SendToUid(key, &presencev1.SendToUidRequest{Uid: "healthy", Payload: &presencev1.SendToUidRequest_Data{Data: structpb.NewStringValue(row.input)}})
		if err != nil || resp.GetDelivered() != 1 {
			t.Fatalf("after %q: SendToUid(healthy) = %v, %v", row.input, resp, err)
		}
		if p := healthy.next(t).GetPush(); p.GetData().GetStringValue() != row.input {
			t.Fatalf("after %q: healthy session got %v", row.input, p)
		}
		rows = append(rows, row)
	}

	// REST.
	rest := func(method, path, auth, body string, chunked bool) badInput {
		var r io.Reader = strings.NewReader(body)
		if chunked {
			r = io.MultiReader(strings.NewReader(body)) // hides the length: sent chunked
		}
		req, _ := http.NewRequest(method, "http://"+d.HTTPAddr()+path, r)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var e struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		}
		raw, _ := io.ReadAll(resp.Body)
		json.Unmarshal(raw, &e)
		return badInput{transport: "REST", code: codes.Code(e.Code), http: resp.StatusCode, msg: e.Message}
	}
	k := "Bearer " + testKey
	// A first call with an idempotency key, so the table can reuse it.
	if row := rest("POST", "/v1/messages:batchSend", k, `{"uids": ["nobody"], "data": 1, "idempotencyKey": "order-1"}`, false); row.http != 200 {
		t.Fatalf("first call with an idempotency key: %+v", row)
	}
	restRows := []struct {
		input, method, path, auth, body string
		chunked                         bool
		code                            codes.Code
		http                            int
	}{
		{"malformed JSON", "POST", "/v1/broadcast", k, `{"data": `, false, codes.InvalidArgument, 400},
		{"unknown field", "POST", "/v1/broadcast", k, `{"dta": 1}`, false, codes.InvalidArgument, 400},
		{"wrong field type", "POST", "/v1/broadcast", k, `{"binary": "text"}`, false, codes.InvalidArgument, 400},
		{"bytes that are not base64", "POST", "/v1/broadcast", k, `{"binary": {"data": "!!"}}`, false, codes.InvalidArgument, 400},
		{"two payloads", "POST", "/v1/broadcast", k, `{"data": 1, "binary": {"data": "aGk="}}`, false, codes.InvalidArgument, 400},
		{"empty body", "POST", "/v1/broadcast", k, ``, false, codes.InvalidArgument, 400},
		{"no payload", "POST", "/v1/uids/healthy/messages", k, `{}`, false, codes.InvalidArgument, 400},
		{"payload over --max-payload-bytes", "POST", "/v1/broadcast", k, `{"data": "` + strings.Repeat("x", 2000) + `"}`, false, codes.InvalidArgument, 400},
		{"body over --max-body-bytes", "POST", "/v1/broadcast", k, `{"data": "` + strings.Repeat("x", 9000) + `"}`, false, codes.ResourceExhausted, 413},
		{"body over --max-body-bytes, chunked", "POST", "/v1/broadcast", k, `{"data": "` + strings.Repeat("x", 9000) + `"}`, true, codes.InvalidArgument, 400},
		{"bad uid", "POST", "/v1/uids/al%20ice/messages", k, `{"data": 1}`, false, codes.InvalidArgument, 400},
		{"uid too long", "POST", "/v1/uids/" + strings.Repeat("a", 129) + "/messages", k, `{"data": 1}`, false, codes.InvalidArgument, 400},
		{"offline uid", "POST", "/v1/uids/bob/messages", k, `{"data": 1}`, false, codes.NotFound, 404},
		{"store_for over --store-max", "POST", "/v1/uids/bob/messages", k, `{"data": 1, "storeFor": "100000s"}`, false, codes.InvalidArgument, 400},
		{"store_for malformed", "POST", "/v1/uids/bob/messages", k, `{"data": 1, "storeFor": "an hour"}`, false, codes.InvalidArgument, 400},
		{"ack_timeout over 30s", "POST", "/v1/uids/healthy/messages", k, `{"data": 1, "ackTimeout": "60s"}`, false, codes.InvalidArgument, 400},
		{"idempotency key with a space", "POST", "/v1/broadcast", k, `{"data": 1, "idempotencyKey": "a b"}`, false, codes.InvalidArgument, 400},
		{"idempotency key reused for another request", "POST", "/v1/messages:batchSend", k, `{"uids": ["nobody"], "data": 2, "idempotencyKey": "order-1"}`, false, codes.FailedPrecondition, 400},
		{"batch send to no uid", "POST", "/v1/messages:batchSend", k, `{"data": 1}`, false, codes.InvalidArgument, 400},
		{"batch send listing a uid twice", "POST", "/v1/messages:batchSend", k, `{"uids": ["a", "a"], "data": 1}`, false, codes.InvalidArgument, 400},
		{"missing API key", "POST", "/v1/broadcast", "", `{"data": 1}`, false, codes.Unauthenticated, 401},
		{"wrong API key", "POST", "/v1/broadcast", "Bearer not-the-key-0123456789", `{"data": 1}`, false, codes.Unauthenticated, 401},
		{"client token as API key", "POST", "/v1/broadcast", "Bearer " + token("alice", time.Hour), `{"data": 1}`, false, codes.Unauthenticated, 401},
		{"malformed Authorization", "POST", "/v1/broadcast", "Basic abc", `{"data": 1}`, false, codes.Unauthenticated, 401},
		{"wrong method", "GET", "/v1/broadcast", k, ``, false, codes.Unimplemented, 405},
		{"unknown path", "POST", "/v1/nothing", k, `{}`, false, codes.NotFound, 404},
	}
	for _, r := range restRows {
		row := rest(r.method, r.path, r.auth, r.body, r.chunked)
		row.input = r.input
		check(row, r.code, r.http)
	}

	// gRPC backend.
	grpcRow := func(input string, err error) badInput {
		st := status.Convert(err)
		return badInput{transport: "gRPC", input: input, code: st.Code(), msg: st.Message()}
	}
	data := &presencev1.SendToUidRequest_Data{Data: structpb.NewStringValue("x")}
	_, err = backend.SendToUid(context.Background(), &presencev1.SendToUidRequest{Uid: "healthy", Payload: data})
	check(grpcRow("SendToUid without API key", err), codes.Unauthenticated, 0)
	_, err = backend.SendToUid(key, &presencev1.SendToUidRequest{Uid: "a b", Payload: data})
	check(grpcRow("SendToUid with a bad uid", err), codes.InvalidArgument, 0)
	_, err = backend.SendToUid(key, &presencev1.SendToUidRequest{Uid: "healthy"})
	check(grpcRow("SendToUid without payload", err), codes.InvalidArgument, 0)
	_, err = backend.Broadcast(key, &presencev1.BroadcastRequest{Payload: &presencev1.BroadcastRequest_Binary{Binary: &presencev1.BinaryPayload{Data: make([]byte, 2000)}}})
	check(grpcRow("Broadcast with a payload over --max-payload-bytes", err), codes.InvalidArgument, 0)
	_, err = backend.Broadcast(key, &presencev1.BroadcastRequest{Payload: &presencev1.BroadcastRequest_Binary{Binary: &presencev1.BinaryPayload{Data: make([]byte, 5000)}}})
	check(grpcRow("message over --max-recv-msg-bytes", err), codes.ResourceExhausted, 0)

	// gRPC Connect.
	stream := func(input string, frames ...*presencev1.ConnectRequest) badInput {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s, err := presencev1.NewPresenceServiceClient(cc).Connect(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range frames {
			if s.Send(f) != nil {
				break
			}
		}
		for {
			if _, err := s.Recv(); err != nil {
				return grpcRow(input, err)
			}
		}
	}
	ident := func(uid, tok string) *presencev1.ConnectRequest {
		return &presencev1.ConnectRequest{Frame: &presencev1.ConnectRequest_Identify{Identify: &presencev1.Identify{Uid: uid, Token: tok}}}
	}
	ping := &presencev1.ConnectRequest{Frame: &presencev1.ConnectRequest_Ping{Ping: &presencev1.Ping{Seq: 1}}}
	unknown := &presencev1.ConnectRequest{}
	unknown.ProtoReflect().SetUnknown(protowire.AppendBytes(protowire.AppendTag(nil, 15, protowire.BytesType), []byte("x")))
	good := token("carol", time.Hour)
	flood := []*presencev1.ConnectRequest{ident("", good)}
	for range 100 {
		flood = append(flood, ping)
	}
	labels := map[string]string{}
	for i := range 17 {
		labels[fmt.Sprint("k", i)] = "v"
	}
	check(stream("Connect: no Identify within --identify-timeout"), codes.DeadlineExceeded, 0)
	check(stream("Connect: Ping before Identify", ping), codes.FailedPrecondition, 0)
	check(stream("Connect: Identify twice", ident("", good), ident("", good)), codes.FailedPrecondition, 0)
	check(stream("Connect: empty frame", &presencev1.ConnectRequest{}), codes.InvalidArgument, 0)
	check(stream("Connect: unknown frame", unknown), codes.Unimplemented, 0)
	check(stream("Connect: Identify without token", ident("carol", "")), codes.Unauthenticated, 0)
	check(stream("Connect: malformed token", ident("carol", "abc")), codes.Unauthenticated, 0)
	check(stream("Connect: expired token", ident("carol", token("carol", -time.Hour))), codes.Unauthenticated, 0)
	check(stream("Connect: API key as token", ident("carol", testKey)), codes.Unauthenticated, 0)
	check(stream("Connect: token for another uid", ident("mallory", good)), codes.PermissionDenied, 0)
	check(stream("Connect: bad uid in token", ident("", token("a b", time.Hour))), codes.InvalidArgument, 0)
	check(stream("Connect: 17 labels", &presencev1.ConnectRequest{Frame: &presencev1.ConnectRequest_Identify{Identify: &presencev1.Identify{Token: good, Labels: labels}}}), codes.InvalidArgument, 0)
	check(stream("Connect: frame over --max-recv-msg-bytes", &presencev1.ConnectRequest{Frame: &presencev1.ConnectRequest_Identify{Identify: &presencev1.Identify{Token: good, Labels: map[string]string{"k": strings.Repeat("x", 5000)}}}}), codes.ResourceExhausted, 0)
	check(stream("Connect: frame flood past --max-frame-rate", flood...), codes.ResourceExhausted, 0)
	check(stream("Connect: a second session past --max-sessions-per-uid (refuse-newest)", ident("", token("healthy", time.Hour))), codes.ResourceExhausted, 0)

	// The docs show exactly what the server answered.
	var b strings.Builder
	b.WriteString("<!-- Generated by `go test ./daemon -run TestBadInput -update`; the test fails when this differs from what the server answers. -->\n")
	b.WriteString("| transport | bad input | gRPC code | HTTP status | message |\n| --- | --- | --- | --- | --- |\n")
	for _, r := range rows {
		h := "-"
		if r.http != 0 {
			h = fmt.Sprint(r.http)
		}
		// protobuf's messages put a non-breaking space at random (on
		// purpose, so nobody parses them); compare with a plain one.
		msg := strings.ReplaceAll(r.msg, "\u00a0", " ")
		if len(msg) > 160 {
			msg = msg[:160] + "…"
		}
		msg = strings.ReplaceAll(strings.ReplaceAll(msg, "|", `\|`), "\n", " ")
		fmt.Fprintf(&b, "| %s | %s | `%s` | %s | %s |\n", r.transport, r.input, r.code, h, msg)
	}
	const docFile = "../docs/bad-input.md"
	doc, _ := os.ReadFile(docFile)
	begin, end := "<!-- table: begin -->\n", "<!-- table: end -->"
	i, j := strings.Index(string(doc), begin), strings.Index(string(doc), end)
	if i < 0 || j < i {
		t.Fatalf("%s lacks the table markers", docFile)
	}
	if got := string(doc[i+len(begin) : j]); got != b.String() {
		if *updateDocs {
			os.WriteFile(docFile, []byte(string(doc[:i+len(begin)])+b.String()+string(doc[j:])), 0o644)
			return
		}
		t.Errorf("%s is out of date; run go test ./daemon -run TestBadInput -update\n%s", docFile, b.String())
	}
}
