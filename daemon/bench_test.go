package daemon

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
)

// The per-call costs of the hot paths end to end, over loopback sockets:
// one REST push, one gRPC push, one Ping. Client and server share the
// process, so allocs/op counts both sides; compare runs, not absolutes.
//
//	go test -run '^$' -bench . -benchmem -count 6 ./daemon

// BenchmarkRESTPush is SendToUid through the REST facade (keep-alive HTTP,
// JSON body) to one identified session, timed until the push arrives.
func BenchmarkRESTPush(b *testing.B) {
	d := start(b)
	c := connect(b, dial(b, d), "u1")
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	defer hc.CloseIdleConnections()
	url := "http://" + d.HTTPAddr() + "/v1/uids/u1/messages"
	const body = `{"data":{"t":"1764136800000000000","i":"42"}}`
	b.ReportAllocs()
	for b.Loop() {
		resp, err := hc.Post(url, "application/json", strings.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body) // drained, so the connection is reused
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("status %d", resp.StatusCode)
		}
		if c.next(b).GetPush() == nil {
			b.Fatal("want a push")
		}
	}
}

// BenchmarkGRPCPush is the same push through the gRPC backend API.
func BenchmarkGRPCPush(b *testing.B) {
	d := start(b)
	cc := dial(b, d)
	c := connect(b, cc, "u1")
	api := presencev1.NewBackendServiceClient(cc)
	req := &presencev1.SendToUidRequest{Uid: "u1", Payload: &presencev1.SendToUidRequest_Binary{
		Binary: &presencev1.BinaryPayload{ContentType: "text/plain", Data: []byte("1764136800000000000 42")},
	}}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := api.SendToUid(context.Background(), req); err != nil {
			b.Fatal(err)
		}
		if c.next(b).GetPush() == nil {
			b.Fatal("want a push")
		}
	}
}

// BenchmarkPing is one heartbeat: Ping from an identified session, Pong back.
func BenchmarkPing(b *testing.B) {
	cfg := testConfig()
	cfg.Server.MaxFrameRate, cfg.Server.FrameBurst = 1e9, 1e9 // one session, many Pings
	d := startConfig(b, cfg)
	c := connect(b, dial(b, d), "u1")
	ping := &presencev1.ConnectRequest{Frame: &presencev1.ConnectRequest_Ping{Ping: &presencev1.Ping{}}}
	b.ReportAllocs()
	for b.Loop() {
		if err := c.stream.Send(ping); err != nil {
			b.Fatal(err)
		}
		if c.next(b).GetPong() == nil {
			b.Fatal("want a pong")
		}
	}
}

// BenchmarkBroadcast is one broadcast through the gRPC backend API to n
// identified sessions, each on a TCP connection of its own (as in
// presencebench's 1-conn fan-out), timed until every session has read
// it. allocs/delivery counts both sides (the grpc-go clients' share is
// most of it); for the server's share, profile and focus on it:
//
//	go test -run '^$' -bench 'Broadcast/' -benchmem -memprofile /tmp/mem.out -memprofilerate 1 ./daemon
//	go tool pprof -sample_index=alloc_objects -focus 'presence/(lite|server)' -top /tmp/mem.out
func BenchmarkBroadcast(b *testing.B) {
	for _, n := range []int{100, 1000} {
		b.Run(fmt.Sprintf("sessions=%d", n), func(b *testing.B) {
			cfg := testConfig()
			cfg.Server.HeartbeatInterval, cfg.Server.HeartbeatTimeout = time.Minute, 3*time.Minute
			d := startConfig(b, cfg)
			var got sync.WaitGroup
			for i := range n {
				c := connect(b, dial(b, d), fmt.Sprintf("u%d", i))
				go func() {
					for {
						select {
						case f := <-c.frames:
							if f.GetPush() != nil {
								got.Done()
							}
						case <-c.errc: // the stream ended at cleanup
							return
						}
					}
				}()
			}
			api := presencev1.NewBackendServiceClient(dial(b, d))
			req := &presencev1.BroadcastRequest{Payload: &presencev1.BroadcastRequest_Binary{
				Binary: &presencev1.BinaryPayload{ContentType: "text/plain", Data: []byte("1764136800000000000 42")},
			}}
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			for b.Loop() {
				got.Add(n)
				resp, err := api.Broadcast(context.Background(), req)
				if err != nil {
					b.Fatal(err)
				}
				if resp.GetDelivered() != uint32(n) {
					b.Fatalf("delivered to %d sessions; want %d", resp.GetDelivered(), n)
				}
				got.Wait()
			}
			runtime.ReadMemStats(&after)
			deliveries := float64(b.N) * float64(n)
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/deliveries, "ns/delivery")
			b.ReportMetric(float64(after.Mallocs-before.Mallocs)/deliveries, "allocs/delivery")
		})
	}
}
