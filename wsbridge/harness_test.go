package wsbridge

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"

	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
	"github.com/presence-dev/presence/server"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fastOptions are server options for tests: heartbeats long enough that a
// busy machine never evicts a client that does not ping (see
// shortHeartbeat for the reaper's tests).
func fastOptions() server.Options {
	return server.Options{
		HeartbeatInterval:       10 * time.Second,
		HeartbeatTimeout:        30 * time.Second,
		ReapInterval:            100 * time.Millisecond,
		IdentifyTimeout:         2 * time.Second,
		GoodbyeTimeout:          500 * time.Millisecond,
		ShutdownReconnectMin:    time.Second,
		ShutdownReconnectJitter: 2 * time.Second,
		Logger:                  slog.New(slog.DiscardHandler),
	}
}

// shortHeartbeat sets short, real heartbeat timers for the reaper's tests.
func shortHeartbeat(o server.Options) server.Options {
	o.HeartbeatInterval = 100 * time.Millisecond
	o.HeartbeatTimeout = 600 * time.Millisecond
	o.ReapInterval = 100 * time.Millisecond
	return o
}

// testBridge is a real server.Server behind a real HTTP server on
// 127.0.0.1 serving the bridge at /v1/connect.
type testBridge struct {
	srv *server.Server
	h   *Handler
	hs  *httptest.Server
	url string // ws://127.0.0.1:port/v1/connect
}

// startBridge starts a server and the bridge; cleanup shuts the server
// down, waits for every socket to close, and stops the HTTP server.
func startBridge(t *testing.T, sopts server.Options, bopts Options) *testBridge {
	t.Helper()
	srv, err := server.New(sopts)
	if err != nil {
		t.Fatalf("server.New: %v", err)
	}
	if bopts.Logger == nil {
		bopts.Logger = slog.New(slog.DiscardHandler)
	}
	h, err := New(srv, bopts)
	if err != nil {
		srv.Close()
		t.Fatalf("wsbridge.New: %v", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/v1/connect", h)
	hs := httptest.NewServer(mux)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("server Shutdown: %v", err)
		}
		if err := h.Wait(ctx); err != nil {
			t.Errorf("bridge Wait: %v", err)
		}
		hs.Close()
	})
	return &testBridge{srv: srv, h: h, hs: hs, url: "ws" + strings.TrimPrefix(hs.URL, "http") + "/v1/connect"}
}

// client is a test WebSocket client speaking one codec.
type client struct {
	t     *testing.T
	ws    *websocket.Conn
	codec *codec
}

// dial opens a WebSocket asking for the given subprotocols (none: JSON by
// default); cleanup closes it.
func (b *testBridge) dial(t *testing.T, subprotocols ...string) *client {
	t.Helper()
	c, _, err := b.dialErr(t, nil, subprotocols...)
	if err != nil {
		t.Fatalf("Dial(%v): %v", subprotocols, err)
	}
	return c
}

// dialErr opens a WebSocket with extra headers and reports the handshake's
// HTTP response.
func (b *testBridge) dialErr(t *testing.T, header http.Header, subprotocols ...string) (*client, *http.Response, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ws, resp, err := websocket.Dial(ctx, b.url, &websocket.DialOptions{Subprotocols: subprotocols, HTTPHeader: header})
	if err != nil {
		return nil, resp, err
	}
	ws.SetReadLimit(1 << 20)
	t.Cleanup(func() { ws.CloseNow() })
	return &client{t: t, ws: ws, codec: codecFor(ws.Subprotocol())}, resp, nil
}

// sendRaw writes one message as is.
func (c *client) sendRaw(typ websocket.MessageType, b []byte) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.ws.Write(ctx, typ, b); err != nil {
		c.t.Fatalf("Write: %v", err)
	}
}

// send encodes req in the client's codec and writes it.
func (c *client) send(req *presencev1.ConnectRequest) {
	c.t.Helper()
	b, err := c.codec.marshal(req)
	if err != nil {
		c.t.Fatalf("marshal %v: %v", req, err)
	}
	c.sendRaw(c.codec.msgType, b)
}

// recv reads and decodes one server frame, failing the test on a close or
// after 5 s.
func (c *client) recv() *presencev1.ConnectResponse {
	c.t.Helper()
	resp, err := c.recvErr(5 * time.Second)
	if err != nil {
		c.t.Fatalf("reading a frame: %v", err)
	}
	return resp
}

func (c *client) recvErr(timeout time.Duration) (*presencev1.ConnectResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	typ, b, err := c.ws.Read(ctx)
	if err != nil {
		return nil, err
	}
	if typ != c.codec.msgType {
		return nil, errors.New("server sent a " + kind(typ) + " message on " + c.codec.name)
	}
	resp := new(presencev1.ConnectResponse)
	if err := c.codec.parse(b, resp); err != nil {
		return nil, err
	}
	return resp, nil
}

// identify sends Identify and returns the server's Identified.
func (c *client) identify(uid string) *presencev1.Identified {
	c.t.Helper()
	c.send(identifyReq(uid))
	resp := c.recv()
	id := resp.GetIdentified()
	if id == nil {
		c.t.Fatalf("answer to Identify(%q) = %v; want Identified", uid, resp)
	}
	return id
}

// closed reads until the server closes the socket and returns the close
// frame (and any frames that came before it), failing the test if the
// socket is not closed within timeout.
func (c *client) closed(timeout time.Duration) (websocket.CloseError, []*presencev1.ConnectResponse) {
	c.t.Helper()
	var frames []*presencev1.ConnectResponse
	deadline := time.Now().Add(timeout)
	for {
		resp, err := c.recvErr(time.Until(deadline))
		if err == nil {
			frames = append(frames, resp)
			continue
		}
		var ce websocket.CloseError
		if !errors.As(err, &ce) {
			c.t.Fatalf("waiting for the server to close: %v (frames before: %v)", err, frames)
		}
		return ce, frames
	}
}

// wantClose checks that the server closes the socket with code.
func (c *client) wantClose(code websocket.StatusCode, timeout time.Duration) (websocket.CloseError, []*presencev1.ConnectResponse) {
	c.t.Helper()
	ce, frames := c.closed(timeout)
	if ce.Code != code {
		c.t.Fatalf("close code = %d (%v) reason %q; want %d", ce.Code, ce.Code, ce.Reason, code)
	}
	return ce, frames
}

func identifyReq(uid string) *presencev1.ConnectRequest {
	return &presencev1.ConnectRequest{Frame: &presencev1.ConnectRequest_Identify{Identify: &presencev1.Identify{
		Uid: uid, Labels: map[string]string{"device": "test"},
	}}}
}

func pingReq(seq uint64) *presencev1.ConnectRequest {
	return &presencev1.ConnectRequest{Frame: &presencev1.ConnectRequest_Ping{Ping: &presencev1.Ping{Seq: seq}}}
}

// waitFor polls cond every 10 ms until it holds or 5 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
