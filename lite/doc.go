// Package lite is a gRPC server over HTTP/2 that runs one goroutine per
// connection, for services that hold very many long-lived, mostly idle
// streams.
//
// # Why
//
// presence holds millions of long-lived bidi streams. With grpc-go's server
// an idle connection carrying one stream costs about 37 KiB: three goroutines
// per connection (frame reader, loopy writer, keepalive) plus one per stream
// (the handler), each with a stack of at least 4 KiB, plus about 10 KiB of
// heap. The target is at most 24 KiB per idle session including the
// session's own state and RSS slack, so the transport may cost about 10 KiB.
//
// lite gets there by keeping nothing per connection that an idle connection
// does not need:
//
//   - one goroutine per connection: the reader, blocked in conn.Read with a
//     shallow stack (it stays at the 4 KiB minimum);
//   - no goroutine per event-driven stream (HandleEvents): messages are
//     delivered on the reader goroutine through the Events interface, and the
//     application sends with Stream.Send from whatever goroutine it likes;
//   - writes from any goroutine, encoded under a mutex into a pooled buffer;
//     the goroutine that finds nobody writing writes the buffer, with
//     whatever other goroutines queued meanwhile (a stream's sender first
//     yields the processor once, so that a broadcast's messages to many
//     streams of a connection share one write); no writer goroutine, and no
//     write buffer kept while idle;
//   - a 256-byte read buffer while idle; a pooled 16 KiB one only while frames
//     arrive (frame I/O is hand-written, see frame.go, because http2.Framer
//     keeps its grown read and write buffers for the connection's life);
//   - HPACK: the response encoder's dynamic table is 0 bytes (no state grows
//     per connection); the decoder accepts the client's 4096-byte table;
//   - no timer per connection: one keepalive sweeper goroutine per Server.
//
// Methods registered with RegisterService (unary, server/client/bidi
// streaming: health, reflection, ...) are served the ordinary way, one
// goroutine per call, so grpcurl and grpc-go's generated code work.
//
// # Measured
//
// BenchmarkIdleConn: 2,000 grpc-go client connections, held by a child
// process so that the numbers are the server's alone, each with one chat
// stream that exchanged one message; server-side deltas after two GCs;
// go1.26, linux/amd64, 2 shared cores. Two runs:
//
//	go test -run '^$' -bench IdleConn -benchtime 1x ./lite/
//
//	                      lite           grpc.Server (handler blocked in RecvMsg)
//	goroutines/conn       1              4
//	heap bytes/conn       3,838-3,887    12,239-12,976
//	stack bytes/conn      4,112-4,129    18,579-18,891
//	heap+stack/conn       7,950-7,999    31,130-31,556
//	RSS bytes/conn        8,860-10,287   24,992-33,317 (RSS is noisy)
//
// So an idle session costs the transport about 8 KiB against grpc-go's
// 31 KiB. The heap of lite's idle connection with one stream: the conn
// struct with its inline read buffer (~700 B), the stream and its context
// (~560 B), the request metadata map (~440 B), the HPACK decoder with the
// client's dynamic table (~560 B), the HPACK encoder (~230 B), the runtime's
// goroutine descriptor (~480 B), and the net.TCPConn with its addresses
// (~350 B).
//
// Throughput on the same machine (client and server in one process):
//
//	go test -run '^$' -bench 'StreamSend|PingPong' -benchmem -count 5 ./lite/
//
//	StreamSend (one goroutine sends 100-byte messages on one stream;
//	medians of 5):
//	  lite, Send each       7.4 µs/msg, 5 allocs
//	  lite, SendMsgs of 16  1.25 µs/msg, 5 allocs
//	  lite, TrySend each    2.0 µs/msg, 5 allocs (Send when refused; a later run)
//	  grpc                  1.3 µs/msg, 7 allocs
//	PingPong (one round trip of a small message; 3 runs):
//	  lite 34.6-34.8 µs, 13 allocs     grpc 32.7-34.2 µs, 35 allocs
//
// (allocations are client plus server). A lone Send waits for its own
// write, one write system call per message, where grpc-go's Send returns
// once its loopy writer goroutine has the message and that goroutine
// batches a busy stream's messages. A sender with a backlog passes it to
// SendMsgs, which puts as many whole messages as the windows allow into
// one write (presence's session writer does). TrySend never waits: it
// queues a message the windows hold at once and leaves the write to a
// flush goroutine of the connection, so a broadcast costs a goroutine per
// connection, not per stream (presence's sessions use it when nothing is
// queued). Messages from many streams of a connection share writes (the
// broadcast case: over 100 streams per connection lite delivers about
// twice what grpc-go does per CPU-second, BENCHMARKS.md, "The lite
// transport").
//
// # Supported
//
// RFC 9113 server side over plaintext h2c (or TLS when the listener is a
// tls.NewListener with ALPN "h2"; peer.AuthInfo is then credentials.TLSInfo):
// SETTINGS (INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE, HEADER_TABLE_SIZE from the
// client are honoured), flow control both ways, PING, GOAWAY both ways,
// RST_STREAM, CONTINUATION, padding; PRIORITY and unknown frame types are
// ignored. Protocol errors end the stream (RST_STREAM) or the connection
// (GOAWAY) with the RFC's error code. gRPC over HTTP/2: grpc-timeout,
// metadata (with "-bin" values), percent-encoded grpc-message,
// grpc-status-details-bin, trailers-only responses, HTTP 415 for other
// content types, keepalive enforcement like grpc-go (GOAWAY
// ENHANCE_YOUR_CALM "too_many_pings").
//
// # Not supported
//
//   - Compression: a request with grpc-encoding other than identity gets
//     UNIMPLEMENTED; grpc-accept-encoding is never sent.
//   - Codecs other than proto.
//   - Keepalive MaxConnectionIdle, MaxConnectionAge(Grace); stats handlers,
//     tap handles, channelz, server-side TLS handshake timeouts beyond the
//     120 s preface deadline.
//   - StreamInterceptor for event streams (they have no goroutine and no
//     grpc.ServerStream to intercept).
//   - A grpc-timeout deadline only cancels an event stream's context; the
//     stream ends when the client (which enforces its deadline) resets it
//     or the application finishes it.
//   - A header value longer than MaxHeaderListSize is an HPACK
//     COMPRESSION_ERROR for the whole connection, as in grpc-go.
//   - Events.Msg runs on the reader goroutine: it must not wait for a Send
//     that needs flow-control window from the client (only the reader sees
//     the client's WINDOW_UPDATE). Sending small messages from Msg is fine
//     while the client reads.
//   - Stop waits for RegisterService handlers to return after their context
//     is cancelled.
package lite
