package wsbridge

import (
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"weak"

	"github.com/coder/websocket"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
	"github.com/presence-dev/presence/server"
)

// The subprotocols a client may ask for. No subprotocol means JSON.
const (
	SubprotocolJSON  = "presence.v1.json"
	SubprotocolProto = "presence.v1.proto"
)

// codec turns frames into WebSocket messages and back.
type codec struct {
	name    string                // the subprotocol, for messages
	msgType websocket.MessageType // the only message type it reads and writes
	marshal func(proto.Message) ([]byte, error)
	parse   func([]byte, proto.Message) error
}

var (
	jsonCodec = &codec{
		name:    SubprotocolJSON,
		msgType: websocket.MessageText,
		marshal: protojson.MarshalOptions{}.Marshal,
		// A misspelt field is an error, not silently dropped, as on the
		// REST API.
		parse: protojson.UnmarshalOptions{DiscardUnknown: false}.Unmarshal,
	}
	protoCodec = &codec{
		name:    SubprotocolProto,
		msgType: websocket.MessageBinary,
		marshal: proto.Marshal,
		// Unknown fields are kept, so the server can tell a newer frame
		// (Unimplemented) from an empty one (InvalidArgument).
		parse: proto.Unmarshal,
	}
)

// codecFor returns the codec for a negotiated subprotocol.
func codecFor(subprotocol string) *codec {
	if strings.EqualFold(subprotocol, SubprotocolProto) {
		return protoCodec
	}
	return jsonCodec
}

// decode parses one client message.
func (c *codec) decode(typ websocket.MessageType, b []byte) (*presencev1.ConnectRequest, error) {
	if typ != c.msgType {
		return nil, fmt.Errorf("got a %s WebSocket message on the %s subprotocol; send each frame as one %s message", kind(typ), c.name, kind(c.msgType))
	}
	req := new(presencev1.ConnectRequest)
	if err := c.parse(b, req); err != nil {
		return nil, fmt.Errorf("the frame is not a ConnectRequest in %s: %v", c.name, err)
	}
	return req, nil
}

// kind names a message type as browsers do.
func kind(t websocket.MessageType) string {
	if t == websocket.MessageBinary {
		return "binary"
	}
	return "text"
}

// encode returns f's bytes in this codec. A shared frame (a push going to
// many sessions) is encoded once and reused by every session until the
// frame is garbage.
func (c *codec) encode(f *server.Frame) ([]byte, error) {
	if !f.Shared() {
		return c.marshal(f.Msg)
	}
	return sharedEncodings.get(c, f)
}

// encodingCache holds the encodings of shared frames, keyed by a weak
// pointer to the frame, so an entry lives exactly as long as its frame: the
// cleanup registered for the frame deletes it.
type encodingCache struct {
	mu sync.Mutex
	m  map[encodingKey][]byte // guarded by mu

	encodes atomic.Int64 // shared frames encoded, for tests
}

type encodingKey struct {
	frame weak.Pointer[server.Frame]
	codec *codec
}

var sharedEncodings = &encodingCache{m: make(map[encodingKey][]byte)}

func (ec *encodingCache) get(c *codec, f *server.Frame) ([]byte, error) {
	key := encodingKey{frame: weak.Make(f), codec: c}
	ec.mu.Lock()
	b, ok := ec.m[key]
	ec.mu.Unlock()
	if ok {
		return b, nil
	}
	// Encode outside the lock; two sessions racing here both encode, and
	// the first to store wins.
	b, err := c.marshal(f.Msg)
	if err != nil {
		return nil, err
	}
	ec.encodes.Add(1)
	ec.mu.Lock()
	if prev, ok := ec.m[key]; ok {
		ec.mu.Unlock()
		return prev, nil
	}
	ec.m[key] = b
	ec.mu.Unlock()
	runtime.AddCleanup(f, ec.forget, key)
	return b, nil
}

func (ec *encodingCache) forget(key encodingKey) {
	ec.mu.Lock()
	delete(ec.m, key)
	ec.mu.Unlock()
}
