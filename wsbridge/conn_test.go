package wsbridge

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestRecvReturnsWhenContextDone proves the server.Conn contract: a Recv
// blocked on a client that sends nothing returns once the connection's
// context is done.
func TestRecvReturnsWhenContextDone(t *testing.T) {
	recvDone := make(chan error, 1)
	cancelRecv := make(chan struct{})
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer ws.CloseNow()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		c := &wsConn{ws: ws, ctx: ctx, codec: jsonCodec, readLimit: DefaultReadLimit, writeTimeout: time.Second}
		go func() { <-cancelRecv; cancel() }()
		_, err = c.Recv()
		recvDone <- err
	}))
	t.Cleanup(hs.Close)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	client, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(hs.URL, "http"), nil)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	defer client.CloseNow()
	select {
	case err := <-recvDone:
		t.Fatalf("Recv returned %v before the context was done", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(cancelRecv)
	select {
	case err := <-recvDone:
		if err == nil {
			t.Error("Recv after the context was done = nil error; want an error")
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Recv still blocked 2s after the context was done")
	}
}
