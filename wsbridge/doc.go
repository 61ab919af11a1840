// Package wsbridge serves presence sessions over WebSocket, for browsers and
// other clients that cannot speak gRPC. A WebSocket is one Connect stream:
// the same frames, the same identify rules, heartbeat and reaper, queues,
// Goodbye and limits, because the bridge wraps the socket as a server.Conn
// and hands it to (*server.Server).Serve.
//
// # Frames
//
// One ConnectRequest per client message and one ConnectResponse per server
// message. The encoding is picked by the WebSocket subprotocol:
//
//   - "presence.v1.json" (and no subprotocol at all): protobuf JSON
//     (protojson, lowerCamelCase names, uint64 as strings, durations as
//     "10s"), one frame per text message;
//   - "presence.v1.proto": binary protobuf, one frame per binary message.
//
// A client offering subprotocols none of which is one of these gets HTTP
// 400 before the upgrade.
//
// Malformed frames end the session with InvalidArgument: JSON that does not
// parse, unknown JSON field names (a typo is an error, as on the REST API),
// a message of the wrong kind (binary on the JSON subprotocol or text on
// the binary one), bytes that are not protobuf. A binary frame whose oneof
// holds only a field number this server does not know ends it with
// Unimplemented, as over gRPC: only the binary encoding can carry an
// unknown field, since an unknown JSON name cannot be told apart from a
// typo. A message longer than Options.ReadLimit ends it with
// ResourceExhausted.
//
// # Close codes
//
// When Serve returns, the bridge closes the WebSocket with a code derived
// from the status the session ended with (see CloseCode), after the
// Goodbye frame where the session sends one:
//
//	status                     close code   reason
//	OK (the client hung up)    1000         ""
//	any other gRPC code c      4000 + c     the status message, cut to 123 bytes
//
// so 4003 InvalidArgument, 4004 DeadlineExceeded (no Identify in time),
// 4008 ResourceExhausted (slow consumer, a message too large, limits), 4009
// FailedPrecondition (frame order), 4010 Aborted (replaced or kicked), 4012
// Unimplemented, 4014 Unavailable (heartbeat timeout, shutdown, transport),
// 4016 Unauthenticated. Codes below 4000 come from the WebSocket layer, not
// from the session: 1006 (no close frame: the connection dropped), 1002 (a
// WebSocket protocol error), 1001 (a browser leaving the page). A refused
// Origin is HTTP 403 before the upgrade, so a browser sees only an error
// event and close code 1006.
//
// # Origins
//
// Browsers send an Origin header and let any page open a WebSocket to any
// host, so the bridge refuses a request whose Origin host differs from the
// request's Host unless the origin matches one of Options.AllowedOrigins
// (path.Match host patterns such as "app.example.com" or
// "*.example.com", or "https://app.example.com" to match the scheme too).
// Options.DevMode accepts every origin; it is for development only.
// Requests without Origin (non-browser clients) are accepted.
//
// # Concurrency
//
// The server calls Recv from the session's reader goroutine only and Send
// from its writer only, never concurrently with themselves; the WebSocket
// library allows one reader and one writer at a time, and Close alongside
// both. Recv returns once the connection's context is done (the library
// closes the socket when a read's context ends). Send gives up after
// Options.WriteTimeout, so a browser that stopped reading cannot hold the
// writer: the socket is closed and the session ends as a transport
// failure. ServeHTTP returns only after the close handshake (bounded by
// the library at 5 s per step), which releases the reader and a stuck
// writer; Handler.Wait waits for every ServeHTTP to return, since
// http.Server.Shutdown does not wait for hijacked connections.
//
// A push shared by many sessions is encoded once per encoding, however many
// WebSockets it goes to (see codec.go).
package wsbridge
