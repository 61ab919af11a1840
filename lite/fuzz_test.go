package lite

import (
	"bytes"
	"io"
	"net"
	"testing"

	"golang.org/x/net/http2"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// FuzzFrames feeds arbitrary bytes, after the preface and an empty
// SETTINGS, to a server connection over net.Pipe. The connection must end
// once the input does, without panicking or leaking (goleak checks at the
// end of the run). The seeds run with every go test; explore with
//
//	go test -run '^$' -fuzz FuzzFrames -fuzztime 60s ./lite/
func FuzzFrames(f *testing.F) {
	var buf bytes.Buffer
	fr := http2.NewFramer(&buf, nil)
	blk := requestBlock(chatMethod)
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: blk, EndHeaders: true})
	fr.WriteData(1, false, []byte{0, 0, 0, 0, 3, 10, 1, 'x'})
	fr.WriteWindowUpdate(0, 1000)
	fr.WritePing(false, [8]byte{1})
	fr.WriteData(1, true, nil)
	f.Add(append([]byte(nil), buf.Bytes()...))
	buf.Reset()
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: requestBlock("/grpc.health.v1.Health/Check"), EndHeaders: true})
	fr.WriteData(3, true, []byte{0, 0, 0, 0, 0})
	fr.WriteRSTStream(3, http2.ErrCodeCancel)
	fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1}, http2.Setting{ID: http2.SettingMaxFrameSize, Val: 1 << 20})
	f.Add(append([]byte(nil), buf.Bytes()...))
	f.Add([]byte{0, 0, 4, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0}) // WINDOW_UPDATE of 0
	f.Add([]byte{0, 0, 0, 9, 4, 0, 0, 0, 1})             // CONTINUATION out of place

	s := NewServer(Options{MaxRecvMsgSize: 1 << 16})
	s.HandleEvents(chatMethod, func(st *Stream) Events { return newEcho(st) })
	healthpb.RegisterHealthServer(s, health.NewServer())
	defer s.Stop()
	var settings bytes.Buffer
	settings.WriteString(http2.ClientPreface)
	http2.NewFramer(&settings, nil).WriteSettings()

	f.Fuzz(func(t *testing.T, data []byte) {
		cli, srv := net.Pipe()
		c := newConn(s, srv)
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.connWG.Add(1)
		s.mu.Unlock()
		done := make(chan struct{})
		go func() {
			c.serve()
			close(done)
		}()
		go io.Copy(io.Discard, cli)
		cli.Write(append(settings.Bytes(), data...))
		cli.Close()
		<-done
	})
}
