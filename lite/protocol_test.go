package lite

import (
	"math/rand/v2"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func TestGarbageAfterPreface(t *testing.T) {
	s := NewServer(Options{})
	healthpb.RegisterHealthServer(s, health.NewServer())
	addr := startServer(t, s)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 200 {
		rc := dialRaw(t, addr)
		if i%2 == 0 {
			rc.nc.Write([]byte(http2.ClientPreface))
		} else {
			rc.handshake() // garbage after a valid SETTINGS
		}
		junk := make([]byte, 1+r.IntN(2000))
		for j := range junk {
			junk[j] = byte(r.Uint32())
		}
		if i%4 == 1 {
			// A plausible frame header with random type and flags first.
			junk = append([]byte{0, 0, byte(r.IntN(20)), byte(r.IntN(12)), byte(r.Uint32()), 0, 0, 0, byte(r.IntN(8))}, junk...)
		}
		rc.nc.Write(junk)
		rc.nc.(*net.TCPConn).CloseWrite() // a frame header may promise more bytes
		rc.expectClosed(5 * time.Second)
		rc.nc.Close()
	}
	// The server is fine.
	cc := dial(t, addr)
	if _, err := healthpb.NewHealthClient(cc).Check(t.Context(), &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
}

func TestWrongPreface(t *testing.T) {
	addr := startServer(t, NewServer(Options{}))
	rc := dialRaw(t, addr)
	rc.nc.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	if g := rc.expectClosed(5 * time.Second); g != nil {
		t.Fatalf("GOAWAY on a wrong preface: %+v", g)
	}
}

func TestHeadersOnEvenStream(t *testing.T) {
	addr, _, _ := echoServer(t, Options{})
	rc := dialRaw(t, addr)
	rc.handshake()
	rc.headers(2, requestBlock(chatMethod), false)
	g := rc.expectClosed(5 * time.Second)
	if g == nil || g.code != http2.ErrCodeProtocol {
		t.Fatalf("GOAWAY = %+v, want PROTOCOL_ERROR", g)
	}
}

func TestDataOnClosedAndIdleStreams(t *testing.T) {
	addr, _, _ := echoServer(t, Options{})
	rc := dialRaw(t, addr)
	rc.handshake()
	// An unknown method ends at once: trailers-only Unimplemented.
	rc.headers(1, requestBlock("/no.Such/Method"), true)
	f := rc.readUntil(5*time.Second, func(f rawFrame) bool { return f.typ == http2.FrameHeaders })
	if f.fields["grpc-status"] != "12" || !f.flags.Has(http2.FlagHeadersEndStream) {
		t.Fatalf("response = %+v", f)
	}
	// DATA on the now closed stream: RST_STREAM STREAM_CLOSED, and the
	// connection carries on.
	rc.fr.WriteData(1, false, []byte{0, 0, 0, 0, 0})
	f = rc.readUntil(5*time.Second, func(f rawFrame) bool { return f.typ == http2.FrameRSTStream })
	if f.streamID != 1 || f.code != http2.ErrCodeStreamClosed {
		t.Fatalf("RST = %+v, want stream 1 STREAM_CLOSED", f)
	}
	rc.alive()
	// DATA on a stream never opened is a connection error.
	rc.fr.WriteData(7, false, []byte{0, 0, 0, 0, 0})
	g := rc.expectClosed(5 * time.Second)
	if g == nil || g.code != http2.ErrCodeProtocol || g.lastID != 1 {
		t.Fatalf("GOAWAY = %+v, want PROTOCOL_ERROR last stream 1", g)
	}
}

func TestRefusedStreamAndBadRequests(t *testing.T) {
	addr, _, _ := echoServer(t, Options{MaxConcurrentStreams: 1})
	rc := dialRaw(t, addr)
	rc.handshake()
	rc.headers(1, requestBlock(chatMethod), false)
	rc.headers(3, requestBlock(chatMethod), false)
	f := rc.readUntil(5*time.Second, func(f rawFrame) bool { return f.typ == http2.FrameRSTStream })
	if f.streamID != 3 || f.code != http2.ErrCodeRefusedStream {
		t.Fatalf("RST = %+v, want stream 3 REFUSED_STREAM", f)
	}
	// Not gRPC: 415.
	rc.fr.WriteRSTStream(1, http2.ErrCodeCancel)
	rc.headers(5, requestBlock(chatMethod, "content-type", "text/plain"), true)
	f = rc.readUntil(5*time.Second, func(f rawFrame) bool { return f.typ == http2.FrameHeaders && f.streamID == 5 })
	if f.fields[":status"] != "415" {
		t.Fatalf("non-gRPC content-type: %+v", f)
	}
	// Compressed request: Unimplemented.
	rc.headers(7, requestBlock(chatMethod, "grpc-encoding", "gzip"), true)
	f = rc.readUntil(5*time.Second, func(f rawFrame) bool { return f.typ == http2.FrameHeaders && f.streamID == 7 })
	if f.fields["grpc-status"] != "12" {
		t.Fatalf("grpc-encoding gzip: %+v", f)
	}
	// Compressed flag without grpc-encoding: Internal.
	rc.headers(9, requestBlock(chatMethod), false)
	rc.fr.WriteData(9, false, []byte{1, 0, 0, 0, 1, 'x'})
	f = rc.readUntil(5*time.Second, func(f rawFrame) bool {
		return f.typ == http2.FrameHeaders && f.streamID == 9 && f.flags.Has(http2.FlagHeadersEndStream)
	})
	if f.fields["grpc-status"] != "13" {
		t.Fatalf("compressed flag: %+v", f)
	}
	// Uppercase header name: malformed, RST_STREAM PROTOCOL_ERROR.
	rc.headers(11, requestBlock(chatMethod, "X-Upper", "1"), true)
	f = rc.readUntil(5*time.Second, func(f rawFrame) bool { return f.typ == http2.FrameRSTStream && f.streamID == 11 })
	if f.code != http2.ErrCodeProtocol {
		t.Fatalf("uppercase header: %+v", f)
	}
	rc.alive()
	// HPACK garbage: COMPRESSION_ERROR.
	rc.headers(15, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, true)
	g := rc.expectClosed(5 * time.Second)
	if g == nil || g.code != http2.ErrCodeCompression {
		t.Fatalf("GOAWAY = %+v, want COMPRESSION_ERROR", g)
	}
}

// A RegisterService stream whose handler does not read holds back flow
// control credit; a client that keeps sending anyway violates the stream
// window and gets RST_STREAM FLOW_CONTROL_ERROR, and the connection lives on.
func TestStreamWindowViolation(t *testing.T) {
	s := NewServer(Options{})
	s.RegisterService(&grpc.ServiceDesc{
		ServiceName: "lite.test.Sink",
		HandlerType: (*any)(nil),
		Streams: []grpc.StreamDesc{{StreamName: "Hold", ClientStreams: true, Handler: func(_ any, ss grpc.ServerStream) error {
			<-ss.Context().Done()
			return ss.Context().Err()
		}}},
	}, struct{}{})
	rc := dialRaw(t, startServer(t, s))
	rc.handshake()
	rc.headers(1, requestBlock("/lite.test.Sink/Hold"), false)
	msg := make([]byte, 16384)
	msg[3], msg[4] = 0x3f, 0xfb // one 16379-byte message per frame
	for range 12 {
		if err := rc.fr.WriteData(1, false, msg); err != nil {
			break
		}
	}
	f := rc.readUntil(5*time.Second, func(f rawFrame) bool { return f.typ == http2.FrameRSTStream })
	if f.streamID != 1 || f.code != http2.ErrCodeFlowControl {
		t.Fatalf("RST = %+v, want stream 1 FLOW_CONTROL_ERROR", f)
	}
	rc.alive()
}

// Random but well-framed frames (right lengths, random types, flags,
// stream ids and payloads) after a valid handshake: whatever the server
// does, it must not panic or leak, and the connection must end cleanly once
// the client stops.
func TestRandomFrames(t *testing.T) {
	addr, _, _ := echoServer(t, Options{})
	r := rand.New(rand.NewPCG(3, 4))
	for range 300 {
		rc := dialRaw(t, addr)
		rc.handshake()
		var buf []byte
		if r.IntN(2) == 0 {
			// Start a real stream so that stream-level paths run too.
			blk := requestBlock(chatMethod)
			buf = append(buf, byte(len(blk)>>16), byte(len(blk)>>8), byte(len(blk)), 1, 4, 0, 0, 0, 1)
			buf = append(buf, blk...)
		}
		for range 1 + r.IntN(20) {
			n := r.IntN(64)
			if r.IntN(8) == 0 {
				n = r.IntN(20000)
			}
			typ := byte(r.IntN(11))
			sid := uint32(r.IntN(8))
			buf = append(buf, byte(n>>16), byte(n>>8), byte(n), typ, byte(r.Uint32()), byte(sid>>24), byte(sid>>16), byte(sid>>8), byte(sid))
			for range n {
				buf = append(buf, byte(r.Uint32()))
			}
		}
		rc.nc.Write(buf)
		rc.nc.(*net.TCPConn).CloseWrite()
		rc.expectClosed(5 * time.Second)
		rc.nc.Close()
	}
}

// After the client's GOAWAY the server refuses new streams, lets open ones
// finish, and closes the connection when the last one ends.
func TestClientGoAway(t *testing.T) {
	s := NewServer(Options{})
	streams := make(chan *Stream, 4)
	s.HandleEvents(chatMethod, func(st *Stream) Events {
		streams <- st
		return funcEvents{}
	})
	rc := dialRaw(t, startServer(t, s))
	rc.handshake()
	rc.headers(1, requestBlock(chatMethod), false)
	st := <-streams
	rc.fr.WriteGoAway(1, http2.ErrCodeNo, nil)
	rc.headers(3, requestBlock(chatMethod), false)
	f := rc.readUntil(5*time.Second, func(f rawFrame) bool { return f.typ == http2.FrameRSTStream })
	if f.streamID != 3 || f.code != http2.ErrCodeRefusedStream {
		t.Fatalf("RST = %+v, want stream 3 REFUSED_STREAM", f)
	}
	if err := st.Send([]byte("still open")); err != nil {
		t.Fatal(err)
	}
	rc.readUntil(5*time.Second, func(f rawFrame) bool { return f.typ == http2.FrameData && f.streamID == 1 })
	st.Finish(nil)
	rc.expectClosed(5 * time.Second)
}

func TestHeaderListTooLarge(t *testing.T) {
	addr, _, _ := echoServer(t, Options{MaxHeaderListSize: 1024})
	rc := dialRaw(t, addr)
	rc.handshake()
	big := make([]byte, 900)
	for i := range big {
		big[i] = 'a'
	}
	rc.headers(1, requestBlock(chatMethod, "x-a", string(big), "x-b", string(big)), true)
	f := rc.readUntil(5*time.Second, func(f rawFrame) bool { return f.typ == http2.FrameRSTStream })
	if f.streamID != 1 || f.code != http2.ErrCodeFrameSize {
		t.Fatalf("RST = %+v, want stream 1 FRAME_SIZE_ERROR", f)
	}
	rc.alive() // HPACK state stayed in sync
	rc.headers(3, requestBlock("/no.Such/M"), true)
	f = rc.readUntil(5*time.Second, func(f rawFrame) bool { return f.typ == http2.FrameHeaders })
	if f.streamID != 3 || f.fields["grpc-status"] != "12" {
		t.Fatalf("next stream: %+v", f)
	}
}

// Rapid reset: a client opening and resetting RegisterService streams as
// fast as it can never has more than MaxConcurrentStreams handlers running.
func TestRapidReset(t *testing.T) {
	var running, peak atomic.Int32
	release := make(chan struct{})
	s := NewServer(Options{MaxConcurrentStreams: 4})
	s.RegisterService(&grpc.ServiceDesc{
		ServiceName: "lite.test.Slow",
		HandlerType: (*any)(nil),
		Streams: []grpc.StreamDesc{{StreamName: "Hold", ClientStreams: true, Handler: func(_ any, ss grpc.ServerStream) error {
			n := running.Add(1)
			defer running.Add(-1)
			for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
			}
			<-release // ignores its context for a while
			return nil
		}}},
	}, struct{}{})
	rc := dialRaw(t, startServer(t, s))
	rc.handshake()
	blk := requestBlock("/lite.test.Slow/Hold")
	for i := range 50 {
		sid := uint32(2*i + 1)
		rc.headers(sid, blk, false)
		rc.fr.WriteRSTStream(sid, http2.ErrCodeCancel)
	}
	time.Sleep(300 * time.Millisecond)
	if p := peak.Load(); p > 4 {
		t.Fatalf("%d handlers ran at once, want at most 4", p)
	}
	close(release)
	rc.alive()
}

func TestContinuation(t *testing.T) {
	addr, _, _ := echoServer(t, Options{})
	rc := dialRaw(t, addr)
	rc.handshake()
	blk := requestBlock("/no.Such/M")
	rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: blk[:5], EndStream: true})
	rc.fr.WriteContinuation(1, false, blk[5:9])
	rc.fr.WriteContinuation(1, true, blk[9:])
	f := rc.readUntil(5*time.Second, func(f rawFrame) bool { return f.typ == http2.FrameHeaders })
	if f.streamID != 1 || f.fields["grpc-status"] != "12" {
		t.Fatalf("response = %+v", f)
	}
	// Another frame in the middle of a header block is a connection error.
	rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: blk[:5], EndStream: true})
	rc.fr.WritePing(false, [8]byte{})
	if g := rc.expectClosed(5 * time.Second); g == nil || g.code != http2.ErrCodeProtocol {
		t.Fatalf("GOAWAY = %+v, want PROTOCOL_ERROR", g)
	}
}

// The client's SETTINGS_INITIAL_WINDOW_SIZE bounds what the server sends
// on a stream; a WINDOW_UPDATE, or a SETTINGS raising the initial window
// (applied to open streams), lets the rest through.
func TestPeerWindowSettings(t *testing.T) {
	addr, _, _ := echoServer(t, Options{})
	rc := dialRaw(t, addr)
	if _, err := rc.nc.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	rc.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 100})
	rc.readUntil(5*time.Second, func(f rawFrame) bool { return f.typ == http2.FrameSettings && !f.flags.Has(http2.FlagSettingsAck) })
	rc.fr.WriteSettingsAck()
	rc.headers(1, requestBlock(chatMethod), false)
	payload := make([]byte, 1000) // a BytesValue-like blob; the echo does not parse it
	msg := append([]byte{0, 0, 0, 0x03, 0xe8}, payload...)
	rc.fr.WriteData(1, false, msg)

	got := 0
	readData := func(want int) {
		t.Helper()
		for got < want {
			f, err := rc.fr.ReadFrame()
			if err != nil {
				t.Fatal(err)
			}
			if d, ok := f.(*http2.DataFrame); ok {
				got += len(d.Data())
			}
		}
	}
	rc.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	readData(100)
	// Nothing more until the window grows.
	rc.nc.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	for {
		f, err := rc.fr.ReadFrame()
		if err != nil {
			break
		}
		if _, ok := f.(*http2.DataFrame); ok {
			t.Fatalf("DATA beyond the stream window (had %d bytes)", got)
		}
	}
	if got != 100 {
		t.Fatalf("got %d bytes, want exactly the 100-byte window", got)
	}
	rc.fr.WriteWindowUpdate(1, 400)
	rc.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	readData(500)
	rc.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 2000})
	readData(1005)
	if got != 1005 {
		t.Fatalf("got %d bytes, want 1005", got)
	}
}
