package wsbridge

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/structpb"

	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
)

// TestIdentifyPingPong proves a session runs over each encoding: Identify
// is answered with the server's heartbeat settings, every Ping with its
// Pong, and a client close ends the session cleanly.
func TestIdentifyPingPong(t *testing.T) {
	for _, tc := range []struct {
		name         string
		subprotocols []string
		wantProto    string // negotiated subprotocol
		wantType     websocket.MessageType
	}{
		{"json", []string{SubprotocolJSON}, SubprotocolJSON, websocket.MessageText},
		{"proto", []string{SubprotocolProto}, SubprotocolProto, websocket.MessageBinary},
		{"no subprotocol is JSON", nil, "", websocket.MessageText},
		{"server prefers JSON when offered both", []string{SubprotocolProto, SubprotocolJSON}, SubprotocolJSON, websocket.MessageText},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := startBridge(t, fastOptions(), Options{})
			c := b.dial(t, tc.subprotocols...)
			if got := c.ws.Subprotocol(); got != tc.wantProto {
				t.Fatalf("Subprotocol() = %q; want %q", got, tc.wantProto)
			}
			if c.codec.msgType != tc.wantType {
				t.Fatalf("codec message type = %v; want %v", c.codec.msgType, tc.wantType)
			}
			id := c.identify("alice")
			if id.GetUid() != "alice" || id.GetSessionId() == "" {
				t.Errorf("Identified = %v; want uid alice and a session id", id)
			}
			if got, want := id.GetHeartbeatInterval().AsDuration(), 10*time.Second; got != want {
				t.Errorf("Identified.heartbeat_interval = %v; want %v", got, want)
			}
			if got, want := id.GetHeartbeatTimeout().AsDuration(), 30*time.Second; got != want {
				t.Errorf("Identified.heartbeat_timeout = %v; want %v", got, want)
			}
			for seq := uint64(1); seq <= 3; seq++ {
				c.send(pingReq(seq))
				pong := c.recv().GetPong()
				if pong.GetSeq() != seq || pong.GetServerTime() == nil {
					t.Fatalf("answer to Ping(%d) = %v; want Pong with seq %d and a server time", seq, pong, seq)
				}
			}
			if uids, sessions := b.srv.Counts(); uids != 1 || sessions != 1 {
				t.Errorf("Counts() = %d uids, %d sessions; want 1, 1", uids, sessions)
			}
			if err := c.ws.Close(websocket.StatusNormalClosure, "bye"); err != nil {
				t.Errorf("client Close: %v", err)
			}
			waitFor(t, "the session to end", func() bool { _, n := b.srv.Counts(); return n == 0 })
		})
	}
}

// TestJSONWireFormat pins what a browser sees: protojson with lowerCamelCase
// names, and a Ping with a JSON number accepted.
func TestJSONWireFormat(t *testing.T) {
	b := startBridge(t, fastOptions(), Options{})
	c := b.dial(t, SubprotocolJSON)
	c.sendRaw(websocket.MessageText, []byte(`{"identify":{"uid":"bob","labels":{"device":"browser"}}}`))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, msg, err := c.ws.Read(ctx)
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	for _, want := range []string{`"identified"`, `"sessionId"`, `"heartbeatInterval"`, `"10s"`, `"heartbeatTimeout"`, `"30s"`} {
		if !strings.Contains(string(msg), want) {
			t.Errorf("Identified JSON %s lacks %s", msg, want)
		}
	}
	c.sendRaw(websocket.MessageText, []byte(`{"ping":{"seq":7}}`))
	_, msg, err = c.ws.Read(ctx)
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	if !strings.Contains(string(msg), `"seq":"7"`) || !strings.Contains(string(msg), `"serverTime"`) {
		t.Errorf("Pong JSON = %s; want seq \"7\" (uint64 as a string) and serverTime", msg)
	}
}

// TestPushArrives proves pushes reach WebSocket sessions: SendToUid to
// each session of a uid, in both encodings, and a broadcast to every
// session, encoded once per encoding however many sockets it goes to.
func TestPushArrives(t *testing.T) {
	b := startBridge(t, fastOptions(), Options{})
	jc := b.dial(t, SubprotocolJSON)
	jc.identify("carol")
	pc := b.dial(t, SubprotocolProto)
	pc.identify("carol")
	other := b.dial(t)
	other.identify("dave")

	resp, err := b.srv.SendToUid(context.Background(), &presencev1.SendToUidRequest{
		Uid:     "carol",
		Payload: &presencev1.SendToUidRequest_Data{Data: structpb.NewStringValue("hello carol")},
	})
	if err != nil {
		t.Fatalf("SendToUid(carol): %v", err)
	}
	if resp.GetDelivered() != 2 {
		t.Errorf("SendToUid(carol) delivered = %d; want 2", resp.GetDelivered())
	}
	for _, c := range []*client{jc, pc} {
		push := c.recv().GetPush()
		if push.GetId() != resp.GetPushId() || push.GetData().GetStringValue() != "hello carol" ||
			push.GetSeq() != 1 || push.GetScope() != presencev1.PushScope_PUSH_SCOPE_UID {
			t.Errorf("%s: push = %v; want id %s, data \"hello carol\", seq 1, scope UID", c.codec.name, push, resp.GetPushId())
		}
	}

	encodesBefore := sharedEncodings.encodes.Load()
	bin := &presencev1.BinaryPayload{ContentType: "application/octet-stream", Data: []byte{0, 1, 2, 255}}
	bresp, err := b.srv.Broadcast(context.Background(), &presencev1.BroadcastRequest{
		Payload: &presencev1.BroadcastRequest_Binary{Binary: bin},
	})
	if err != nil {
		t.Fatalf("Broadcast: %v", err)
	}
	if bresp.GetDelivered() != 3 {
		t.Errorf("Broadcast delivered = %d; want 3", bresp.GetDelivered())
	}
	for _, c := range []*client{jc, pc, other} {
		push := c.recv().GetPush()
		if push.GetId() != bresp.GetPushId() || string(push.GetBinary().GetData()) != string(bin.Data) ||
			push.GetScope() != presencev1.PushScope_PUSH_SCOPE_BROADCAST {
			t.Errorf("%s: broadcast push = %v; want id %s with the binary payload", c.codec.name, push, bresp.GetPushId())
		}
	}
	// The broadcast went to three sockets in two encodings: encoded
	// twice (racing writers may rarely both encode).
	if n := sharedEncodings.encodes.Load() - encodesBefore; n < 2 || n > 3 {
		t.Errorf("broadcast encoded %d times; want 2 (once per encoding)", n)
	}
}

// TestProtocolErrors proves each malformed or out-of-order frame ends the
// session with the right close code, and a reason saying what was wrong.
func TestProtocolErrors(t *testing.T) {
	unknownFrame := protowire.AppendTag(nil, 15, protowire.BytesType)
	unknownFrame = protowire.AppendBytes(unknownFrame, nil)
	for _, tc := range []struct {
		name        string
		subprotocol string
		identify    bool // identify first
		typ         websocket.MessageType
		msg         string
		wantCode    codes.Code
		wantReason  string
	}{
		{"malformed JSON", SubprotocolJSON, false, websocket.MessageText, `{"identify":`, codes.InvalidArgument, "not a ConnectRequest"},
		{"malformed JSON after identify", SubprotocolJSON, true, websocket.MessageText, `not json`, codes.InvalidArgument, "not a ConnectRequest"},
		{"unknown JSON field", SubprotocolJSON, true, websocket.MessageText, `{"pingg":{}}`, codes.InvalidArgument, "pingg"},
		{"unknown JSON field in Identify", SubprotocolJSON, false, websocket.MessageText, `{"identify":{"uid":"a","colour":"red"}}`, codes.InvalidArgument, "colour"},
		{"empty JSON frame", SubprotocolJSON, true, websocket.MessageText, `{}`, codes.InvalidArgument, "empty frame"},
		{"binary message on JSON", SubprotocolJSON, false, websocket.MessageBinary, `{}`, codes.InvalidArgument, "binary WebSocket message"},
		{"text message on proto", SubprotocolProto, false, websocket.MessageText, `{}`, codes.InvalidArgument, "text WebSocket message"},
		{"bytes that are not protobuf", SubprotocolProto, false, websocket.MessageBinary, "\xff\xff\xff", codes.InvalidArgument, "not a ConnectRequest"},
		{"unknown binary frame", SubprotocolProto, true, websocket.MessageBinary, string(unknownFrame), codes.Unimplemented, "does not know the frame"},
		{"ping before identify", SubprotocolJSON, false, websocket.MessageText, `{"ping":{"seq":"1"}}`, codes.FailedPrecondition, "must be Identify"},
		{"second identify", SubprotocolJSON, true, websocket.MessageText, `{"identify":{"uid":"a"}}`, codes.FailedPrecondition, "twice"},
		{"invalid uid", SubprotocolJSON, false, websocket.MessageText, `{"identify":{"uid":"no spaces"}}`, codes.InvalidArgument, "uid"},
		{"message over the read limit", SubprotocolJSON, true, websocket.MessageText, `{"ping":{"seq":"1"}}` + strings.Repeat(" ", 1024), codes.ResourceExhausted, "limit of 1024 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := startBridge(t, fastOptions(), Options{ReadLimit: 1024})
			c := b.dial(t, tc.subprotocol)
			if tc.identify {
				c.identify("alice")
			}
			c.sendRaw(tc.typ, []byte(tc.msg))
			ce, frames := c.wantClose(websocket.StatusCode(CloseCodeBase+int(tc.wantCode)), 5*time.Second)
			if !strings.Contains(ce.Reason, tc.wantReason) {
				t.Errorf("close reason = %q; want it to contain %q", ce.Reason, tc.wantReason)
			}
			if len(ce.Reason) > maxCloseReason {
				t.Errorf("close reason is %d bytes; a close frame holds %d", len(ce.Reason), maxCloseReason)
			}
			if len(frames) != 0 {
				t.Errorf("frames before the close = %v; want none", frames)
			}
			waitFor(t, "the session to end", func() bool { _, n := b.srv.Counts(); return n == 0 })
		})
	}
}

// TestIdentifyTimeout proves a socket that never identifies is closed with
// DeadlineExceeded once the identify timeout passes.
func TestIdentifyTimeout(t *testing.T) {
	o := fastOptions()
	o.IdentifyTimeout = 200 * time.Millisecond
	b := startBridge(t, o, Options{})
	c := b.dial(t)
	start := time.Now()
	ce, _ := c.wantClose(websocket.StatusCode(CloseCodeBase+int(codes.DeadlineExceeded)), 5*time.Second)
	if el := time.Since(start); el < 150*time.Millisecond {
		t.Errorf("closed after %v; want the identify timeout (200ms) first", el)
	}
	if !strings.Contains(ce.Reason, "Identify") {
		t.Errorf("close reason = %q; want it to say Identify", ce.Reason)
	}
}

// TestHeartbeat proves both sides of the heartbeat limit over WebSocket:
// a client that pings on time survives several timeouts, a silent one is
// ended with Goodbye HEARTBEAT_TIMEOUT and close code 4014.
func TestHeartbeat(t *testing.T) {
	b := startBridge(t, shortHeartbeat(fastOptions()), Options{})
	live := b.dial(t, SubprotocolProto)
	interval := live.identify("pinger").GetHeartbeatInterval().AsDuration()
	silent := b.dial(t, SubprotocolJSON)
	silent.identify("silent")

	// The silent client's end, read concurrently with the pinger's loop.
	type ending struct {
		ce     websocket.CloseError
		frames []*presencev1.ConnectResponse
	}
	ended := make(chan ending, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var e ending
		for {
			_, msg, err := silent.ws.Read(ctx)
			if err != nil {
				e.ce.Code = websocket.CloseStatus(err)
				if e.ce.Code == -1 {
					e.ce.Reason = err.Error()
				}
				ended <- e
				return
			}
			resp := new(presencev1.ConnectResponse)
			if err := jsonCodec.parse(msg, resp); err == nil {
				e.frames = append(e.frames, resp)
			}
		}
	}()

	timeout := 600 * time.Millisecond
	deadline := time.Now().Add(4 * timeout)
	for seq := uint64(1); time.Now().Before(deadline); seq++ {
		live.send(pingReq(seq))
		if pong := live.recv().GetPong(); pong.GetSeq() != seq {
			t.Fatalf("pinger: answer to Ping(%d) = %v; want its Pong", seq, pong)
		}
		time.Sleep(interval)
	}

	e := <-ended
	if want := websocket.StatusCode(CloseCodeBase + int(codes.Unavailable)); e.ce.Code != want {
		t.Fatalf("silent client: close code = %d (%s); want %d", e.ce.Code, e.ce.Reason, want)
	}
	if len(e.frames) != 1 || e.frames[0].GetGoodbye().GetReason() != presencev1.GoodbyeReason_GOODBYE_REASON_HEARTBEAT_TIMEOUT ||
		!e.frames[0].GetGoodbye().GetReconnect() {
		t.Errorf("silent client: frames before the close = %v; want Goodbye HEARTBEAT_TIMEOUT with reconnect", e.frames)
	}
	if uids, sessions := b.srv.Counts(); uids != 1 || sessions != 1 {
		t.Errorf("after %v of pings, Counts() = %d uids, %d sessions; want the pinger alone", 4*timeout, uids, sessions)
	}
}

// TestShutdown proves a server shutdown reaches WebSocket clients as
// Goodbye SHUTDOWN with a reconnect hint, then close code 4014.
func TestShutdown(t *testing.T) {
	b := startBridge(t, fastOptions(), Options{})
	c := b.dial(t)
	c.identify("erin")
	shutdown := make(chan error, 1)
	go func() { shutdown <- b.srv.Shutdown(context.Background()) }()
	_, frames := c.wantClose(websocket.StatusCode(CloseCodeBase+int(codes.Unavailable)), 5*time.Second)
	gb := frames[len(frames)-1].GetGoodbye()
	if gb.GetReason() != presencev1.GoodbyeReason_GOODBYE_REASON_SHUTDOWN || !gb.GetReconnect() || gb.GetReconnectAfter().AsDuration() < time.Second {
		t.Errorf("last frame = %v; want Goodbye SHUTDOWN, reconnect after at least 1s", frames[len(frames)-1])
	}
	// A socket opened while draining is refused the same way.
	late := b.dial(t)
	late.wantClose(websocket.StatusCode(CloseCodeBase+int(codes.Unavailable)), 5*time.Second)
	if err := <-shutdown; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}

// TestClientCloseIsNormal proves a browser leaving the page (close 1001)
// ends its session as a normal hang-up: the server completes the close
// handshake and the session is gone.
func TestClientCloseIsNormal(t *testing.T) {
	b := startBridge(t, fastOptions(), Options{})
	c := b.dial(t)
	c.identify("frank")
	// The close handshake completes only if the server answers with the
	// same code: Close returns nil then.
	if err := c.ws.Close(websocket.StatusGoingAway, "page closed"); err != nil {
		t.Errorf("client Close(1001): %v; want a clean handshake", err)
	}
	waitFor(t, "the session to end", func() bool { _, n := b.srv.Counts(); return n == 0 })
}

// TestOrigin proves browsers' cross-origin sockets are refused unless the
// origin is allowed or the bridge runs in dev mode.
func TestOrigin(t *testing.T) {
	for _, tc := range []struct {
		name   string
		opts   Options
		origin string
		ok     bool
	}{
		{"no Origin (not a browser)", Options{}, "", true},
		{"same host", Options{}, "http://{host}", true},
		{"foreign origin", Options{}, "https://evil.example", false},
		{"foreign origin on another port", Options{}, "http://127.0.0.1:1", false},
		{"allowed host", Options{AllowedOrigins: []string{"app.example.com"}}, "https://app.example.com", true},
		{"allowed pattern", Options{AllowedOrigins: []string{"*.example.com"}}, "https://app.example.com", true},
		{"pattern does not match", Options{AllowedOrigins: []string{"*.example.com"}}, "https://example.org", false},
		{"scheme pattern", Options{AllowedOrigins: []string{"https://app.example.com"}}, "http://app.example.com", false},
		{"dev mode", Options{DevMode: true}, "https://evil.example", true},
		{"null origin", Options{}, "null", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := startBridge(t, fastOptions(), tc.opts)
			h := http.Header{}
			if tc.origin != "" {
				h.Set("Origin", strings.ReplaceAll(tc.origin, "{host}", strings.TrimPrefix(b.hs.URL, "http://")))
			}
			c, resp, err := b.dialErr(t, h)
			if !tc.ok {
				if err == nil {
					t.Fatalf("Dial with Origin %q succeeded; want it refused", tc.origin)
				}
				if resp == nil || resp.StatusCode != http.StatusForbidden {
					t.Fatalf("Dial with Origin %q: %v (response %v); want HTTP 403", tc.origin, err, resp)
				}
				return
			}
			if err != nil {
				t.Fatalf("Dial with Origin %q: %v; want it accepted", tc.origin, err)
			}
			c.identify("grace")
		})
	}
}

// TestUnknownSubprotocol proves a client asking only for subprotocols the
// bridge does not speak is told so before the upgrade.
func TestUnknownSubprotocol(t *testing.T) {
	b := startBridge(t, fastOptions(), Options{})
	_, resp, err := b.dialErr(t, nil, "presence.v2.json")
	if err == nil || resp == nil || resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("Dial(presence.v2.json): %v (response %v); want HTTP 400", err, resp)
	}
}

// TestOptionsValidate proves a bad origin pattern is refused at New, not
// at the first request.
func TestOptionsValidate(t *testing.T) {
	if err := (Options{AllowedOrigins: []string{"[bad"}}).Validate(); err == nil {
		t.Error("Validate(AllowedOrigins [bad) = nil; want an error")
	}
	if err := (Options{ReadLimit: -1}).Validate(); err == nil {
		t.Error("Validate(ReadLimit -1) = nil; want an error")
	}
	if err := (Options{AllowedOrigins: []string{"*.example.com", "https://x.example"}}).Validate(); err != nil {
		t.Errorf("Validate(good patterns) = %v; want nil", err)
	}
}

// TestStuckClientWriteTimeout proves a client that stopped reading cannot
// hold the session's writer: once the socket buffers are full, a write
// gives up after the write timeout and the session ends, though its queue
// never overflows.
func TestStuckClientWriteTimeout(t *testing.T) {
	o := fastOptions()
	o.QueueMaxMessages = 100000
	o.QueueMaxBytes = 1 << 30
	b := startBridge(t, o, Options{WriteTimeout: 200 * time.Millisecond})
	c := b.dial(t)
	c.identify("stuck")
	// From here the client reads nothing.
	payload := structpb.NewStringValue(strings.Repeat("x", 32<<10))
	deadline := time.Now().Add(10 * time.Second)
	pushes := 0
	for {
		_, err := b.srv.SendToUid(context.Background(), &presencev1.SendToUidRequest{
			Uid: "stuck", Payload: &presencev1.SendToUidRequest_Data{Data: payload},
		})
		if status.Code(err) == codes.NotFound {
			break
		}
		if err != nil {
			t.Fatalf("SendToUid: %v", err)
		}
		pushes++
		if time.Now().After(deadline) {
			t.Fatalf("the session still takes pushes after %d pushes and 10s; want it ended by the write timeout", pushes)
		}
		time.Sleep(time.Millisecond)
	}
	t.Logf("session ended after %d pushes of 32 KiB", pushes)
}
