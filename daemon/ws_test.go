package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"

	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
	"github.com/presence-dev/presence/wsbridge"
)

// wsClient is a WebSocket session on the daemon's /v1/connect, speaking
// protobuf JSON as the browser client does. Reads are synchronous and
// bounded, so no goroutine outlives the test.
type wsClient struct {
	t  *testing.T
	ws *websocket.Conn
}

// dialWS opens a WebSocket to d's public HTTP listener with the given
// Origin ("" sends none, as a non-browser client); cleanup closes it.
func dialWS(t *testing.T, d *Daemon, origin string) (*wsClient, *http.Response, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	h := http.Header{}
	if origin != "" {
		h.Set("Origin", origin)
	}
	ws, resp, err := websocket.Dial(ctx, "ws://"+d.HTTPAddr()+"/v1/connect", &websocket.DialOptions{
		Subprotocols: []string{wsbridge.SubprotocolJSON}, HTTPHeader: h,
	})
	if err != nil {
		return nil, resp, err
	}
	t.Cleanup(func() { ws.CloseNow() })
	return &wsClient{t: t, ws: ws}, resp, nil
}

// connectWS opens a WebSocket and identifies as uid.
func connectWS(t *testing.T, d *Daemon, uid string) *wsClient {
	t.Helper()
	c, _, err := dialWS(t, d, "")
	if err != nil {
		t.Fatalf("WebSocket dial: %v", err)
	}
	c.send(&presencev1.ConnectRequest{Frame: &presencev1.ConnectRequest_Identify{Identify: &presencev1.Identify{
		Uid: uid, Labels: map[string]string{"device": "websocket"},
	}}})
	if f := c.next(); f.GetIdentified().GetUid() != uid {
		t.Fatalf("answer to Identify(%q) over WebSocket = %v; want Identified", uid, f)
	}
	return c
}

func (c *wsClient) send(req *presencev1.ConnectRequest) {
	c.t.Helper()
	b, err := protojson.Marshal(req)
	if err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.ws.Write(ctx, websocket.MessageText, b); err != nil {
		c.t.Fatalf("WebSocket write: %v", err)
	}
}

// read returns the next frame, or the error that ended the socket (a
// websocket.CloseError when the server closed it).
func (c *wsClient) read(timeout time.Duration) (*presencev1.ConnectResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	typ, b, err := c.ws.Read(ctx)
	if err != nil {
		return nil, err
	}
	if typ != websocket.MessageText {
		return nil, errors.New("a binary message on the JSON subprotocol")
	}
	f := new(presencev1.ConnectResponse)
	if err := protojson.Unmarshal(b, f); err != nil {
		return nil, err
	}
	return f, nil
}

// next returns the next frame, failing the test if none comes within 5 s.
func (c *wsClient) next() *presencev1.ConnectResponse {
	c.t.Helper()
	f, err := c.read(5 * time.Second)
	if err != nil {
		c.t.Fatalf("WebSocket read: %v", err)
	}
	return f
}

// closeCode reads until the server closes the socket and returns its
// close frame, failing the test on a frame or after 5 s.
func (c *wsClient) closeCode() websocket.CloseError {
	c.t.Helper()
	f, err := c.read(5 * time.Second)
	var ce websocket.CloseError
	if !errors.As(err, &ce) {
		c.t.Fatalf("waiting for the server to close the WebSocket: frame %v, error %v", f, err)
	}
	return ce
}

// startWith runs a daemon like start, with mod applied to its Config.
func startWith(t *testing.T, mod func(*Config)) *Daemon {
	t.Helper()
	cfg := testConfig()
	mod(&cfg)
	return startConfig(t, cfg)
}

// TestWebSocketSession proves a WebSocket on /v1/connect is a session like
// a gRPC stream: it identifies, shows in presence over REST, and a REST
// push to its uid reaches it and a gRPC session of the same uid alike.
func TestWebSocketSession(t *testing.T) {
	d := start(t)
	ws := connectWS(t, d, "alice")
	grpcAlice := connect(t, dial(t, d), "alice")

	code, body := get(t, "http://"+d.HTTPAddr()+"/v1/uids/alice/presence")
	p, _ := body["presence"].(map[string]any)
	if code != 200 || p["online"] != true || p["sessionCount"] != float64(2) {
		t.Fatalf("GET presence = %d %v; want alice online with 2 sessions (WebSocket and gRPC)", code, body)
	}
	if raw, _ := json.Marshal(p["sessions"]); !strings.Contains(string(raw), `"device":"websocket"`) {
		t.Errorf("alice's sessions %v do not include the WebSocket one (label device=websocket)", p["sessions"])
	}

	code, body = post(t, d, "/v1/uids/alice/messages", `{"data": {"text": "over websocket"}}`)
	if code != 200 || body["delivered"] != float64(2) {
		t.Fatalf("POST messages = %d %v; want 200 delivered 2", code, body)
	}
	for name, push := range map[string]*presencev1.Push{"WebSocket": ws.next().GetPush(), "gRPC": grpcAlice.next(t).GetPush()} {
		if got := push.GetData().GetStructValue().GetFields()["text"].GetStringValue(); got != "over websocket" || push.GetId() != body["pushId"] {
			t.Errorf("%s push = %v; want text %q with id %v", name, push, "over websocket", body["pushId"])
		}
	}

	ws.send(&presencev1.ConnectRequest{Frame: &presencev1.ConnectRequest_Ping{Ping: &presencev1.Ping{Seq: 7}}})
	if pong := ws.next().GetPong(); pong.GetSeq() != 7 {
		t.Errorf("answer to Ping 7 = %v; want Pong 7", pong)
	}
}

// TestWebSocketSharesLimits proves WebSocket sessions count against the
// same session limit as gRPC streams.
func TestWebSocketSharesLimits(t *testing.T) {
	d := startWith(t, func(c *Config) { c.Server.MaxSessions = 1 })
	connect(t, dial(t, d), "alice")
	ws, _, err := dialWS(t, d, "")
	if err != nil {
		t.Fatal(err)
	}
	ws.send(&presencev1.ConnectRequest{Frame: &presencev1.ConnectRequest_Identify{Identify: &presencev1.Identify{Uid: "bob"}}})
	want := websocket.StatusCode(wsbridge.CloseCodeBase + int(codes.ResourceExhausted))
	if ce := ws.closeCode(); ce.Code != want || !strings.Contains(ce.Reason, "full") {
		t.Errorf("second session over WebSocket closed with %d %q; want %d (ResourceExhausted: the server is full)", ce.Code, ce.Reason, want)
	}
}

// TestWebSocketOrigins proves a page from a foreign origin is refused with
// 403 before the upgrade, while the daemon's own pages, clients sending no
// Origin, and configured origins are accepted.
func TestWebSocketOrigins(t *testing.T) {
	d := startWith(t, func(c *Config) { c.WebSocket.AllowedOrigins = []string{"app.example.com"} })
	tests := []struct {
		name, origin string
		ok           bool
	}{
		{"no Origin (not a browser)", "", true},
		{"the daemon's own page", "http://" + d.HTTPAddr(), true},
		{"an allowed origin", "https://app.example.com", true},
		{"a foreign origin", "https://evil.example.net", false},
		{"a look-alike of the allowed origin", "https://app.example.com.evil.net", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, resp, err := dialWS(t, d, tt.origin)
			switch {
			case tt.ok && err != nil:
				t.Errorf("dial with Origin %q: %v; want accepted", tt.origin, err)
			case !tt.ok && (err == nil || resp == nil || resp.StatusCode != http.StatusForbidden):
				t.Errorf("dial with Origin %q = %v (response %v); want HTTP 403", tt.origin, err, resp)
			}
		})
	}
}

// TestWebSocketDevModeAcceptsAnyOrigin proves DevMode accepts pages from
// any origin.
func TestWebSocketDevModeAcceptsAnyOrigin(t *testing.T) {
	d := startWith(t, func(c *Config) { c.WebSocket.DevMode = true })
	if _, resp, err := dialWS(t, d, "http://localhost:5173"); err != nil {
		t.Fatalf("dial in dev mode from another origin: %v (response %v)", err, resp)
	}
}

// TestWebSocketShutdown proves daemon Shutdown gives a WebSocket session
// Goodbye SHUTDOWN with a reconnect hint, closes it with 4014
// (Unavailable), returns without error, and stops accepting sockets.
func TestWebSocketShutdown(t *testing.T) {
	d := start(t)
	ws := connectWS(t, d, "alice")

	shutdownDone := make(chan error, 1)
	go func() { shutdownDone <- d.Shutdown(context.Background()) }()

	gb := ws.next().GetGoodbye()
	if gb.GetReason() != presencev1.GoodbyeReason_GOODBYE_REASON_SHUTDOWN || !gb.GetReconnect() || gb.GetReconnectAfter().AsDuration() < 100*time.Millisecond {
		t.Fatalf("frame %v; want Goodbye SHUTDOWN with a reconnect hint", gb)
	}
	if ce, want := ws.closeCode(), websocket.StatusCode(wsbridge.CloseCodeBase+int(codes.Unavailable)); ce.Code != want {
		t.Errorf("close code %d %q; want %d (Unavailable)", ce.Code, ce.Reason, want)
	}
	select {
	case err := <-shutdownDone:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return")
	}
	if _, _, err := dialWS(t, d, ""); err == nil {
		t.Error("WebSocket dial after Shutdown succeeded")
	}
}

// TestWebConsole proves the public HTTP listener serves the debug console
// and presence.js at / beside the other routes, which keep their own
// answers; unknown paths are 404 and other methods 405.
func TestWebConsole(t *testing.T) {
	d := start(t)
	base := "http://" + d.HTTPAddr()
	tests := []struct {
		method, path string
		status       int
		contentType  string // prefix
		body         string // substring
	}{
		{"GET", "/", 200, "text/html", "<title>presence"},
		{"HEAD", "/", 200, "text/html", ""},
		{"GET", "/presence.js", 200, "text/javascript", "export class PresenceClient"},
		{"GET", "/nothing", 404, "text/plain", ""},
		{"POST", "/", 405, "text/plain", ""},
		{"POST", "/healthz", 405, "text/plain", ""},
		{"GET", "/healthz", 200, "text/plain", "ok"},
		{"GET", "/openapi.json", 200, "application/json", `"/v1/uids/{uid}/messages"`},
		{"GET", "/metrics", 200, "text/plain", "go_goroutines"},
		{"GET", "/v1/broadcast", 405, "application/json", "not allowed"},
		{"GET", "/v1/nothing", 404, "application/json", ""},
		{"GET", "/v1/connect", 426, "text/plain", ""}, // not an upgrade
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			code, ctype, body := fetch(t, tt.method, base+tt.path)
			if code != tt.status || !strings.HasPrefix(ctype, tt.contentType) || !strings.Contains(body, tt.body) {
				t.Errorf("%s %s = %d %q %.60q; want %d %s containing %q", tt.method, tt.path, code, ctype, body, tt.status, tt.contentType, tt.body)
			}
		})
	}
}

// TestNoWebConsole proves NoWebConsole turns the page off (404) and leaves
// the WebSocket bridge on.
func TestNoWebConsole(t *testing.T) {
	d := startWith(t, func(c *Config) { c.NoWebConsole = true })
	for _, path := range []string{"/", "/presence.js"} {
		if code, _, body := fetch(t, "GET", "http://"+d.HTTPAddr()+path); code != 404 {
			t.Errorf("GET %s with NoWebConsole = %d %.60q; want 404", path, code, body)
		}
	}
	connectWS(t, d, "alice")
}

// TestSplitListenersWebSocket proves that with a backend HTTP listener the
// bridge and the console stay on the public one (which still answers 404,
// not the console's 405, under /v1/) and are absent from the backend one.
func TestSplitListenersWebSocket(t *testing.T) {
	d := startWith(t, func(c *Config) { c.BackendGRPCAddr, c.BackendHTTPAddr = "127.0.0.1:0", "127.0.0.1:0" })
	connectWS(t, d, "alice")
	pub, back := "http://"+d.HTTPAddr(), "http://"+d.BackendHTTPAddr()
	for _, tt := range []struct {
		method, url string
		status      int
	}{
		{"GET", pub + "/", 200},
		{"POST", pub + "/v1/broadcast", 404},
		{"GET", pub + "/v1/uids/alice/presence", 404},
		{"GET", back + "/", 404},
		{"GET", back + "/v1/connect", 404},
		{"GET", back + "/v1/uids/alice/presence", 200},
	} {
		if code, _, body := fetch(t, tt.method, tt.url); code != tt.status {
			t.Errorf("%s %s = %d %.60q; want %d", tt.method, tt.url, code, body, tt.status)
		}
	}
}

// fetch makes a request and returns the status, Content-Type and body.
func fetch(t *testing.T, method, url string) (int, string, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Content-Type"), string(raw)
}
