package wsbridge

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
	"github.com/presence-dev/presence/server"
)

// wsConn adapts one WebSocket to server.Conn.
type wsConn struct {
	// Set before the session starts, read-only after.
	ws           *websocket.Conn
	ctx          context.Context // done once ServeHTTP has closed the socket
	codec        *codec
	readLimit    int64
	writeTimeout time.Duration

	mu sync.Mutex
	// badFrame is why the last frame could not be decoded; guarded by mu.
	// See Recv.
	badFrame string
}

var _ server.Conn = (*wsConn)(nil)

func (c *wsConn) Context() context.Context { return c.ctx }

// Recv reads one message and decodes it as a ConnectRequest. Called by the
// session's reader only.
//
// A client that closes the socket (any close frame: 1000, 1001 when a
// browser leaves the page, 1005 for ws.close() without a code) has hung
// up: io.EOF, which the session reports as OK. A message over the read
// limit is ResourceExhausted.
//
// A message that does not decode must end the session with
// InvalidArgument, but the server maps Recv errors other than EOF,
// cancellation and ResourceExhausted to a transport failure (Unavailable).
// So Recv returns an empty frame instead, which the server ends with
// InvalidArgument ("empty frame"), and records the decoding error; the
// bridge puts that error, the useful one, in the close reason.
func (c *wsConn) Recv() (*presencev1.ConnectRequest, error) {
	typ, r, err := c.ws.Reader(c.ctx)
	if err != nil {
		return nil, c.readError(err)
	}
	// Read at most one byte past the limit: enough to know the message is
	// too long without buffering the rest of it.
	b, err := io.ReadAll(io.LimitReader(r, c.readLimit+1))
	if err != nil {
		return nil, c.readError(err)
	}
	if int64(len(b)) > c.readLimit {
		return nil, status.Errorf(codes.ResourceExhausted, "a WebSocket message is longer than the limit of %d bytes", c.readLimit)
	}
	req, err := c.codec.decode(typ, b)
	if err != nil {
		c.mu.Lock()
		c.badFrame = err.Error()
		c.mu.Unlock()
		return &presencev1.ConnectRequest{}, nil
	}
	return req, nil
}

// readError maps a read failure to what the session understands.
func (c *wsConn) readError(err error) error {
	if websocket.CloseStatus(err) != -1 || errors.Is(err, io.EOF) {
		return io.EOF
	}
	if c.ctx.Err() != nil {
		return status.FromContextError(c.ctx.Err()).Err()
	}
	return err
}

// decodeError returns the last decoding error, if any.
func (c *wsConn) decodeError() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.badFrame
}

// Send writes one frame as one message, giving up after the write
// timeout; the library then closes the socket. Called by the session's
// writer only.
func (c *wsConn) Send(f *server.Frame) error {
	b, err := c.codec.encode(f)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(c.ctx, c.writeTimeout)
	defer cancel()
	return c.ws.Write(ctx, c.codec.msgType, b)
}
