package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/presence-dev/presence/daemon"
	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
)

// BenchmarkRawVsGRPCReceive compares what the two clients cost per
// delivered message: an in-process daemon broadcasts to 1,000 sessions
// over 10 connections (100 streams each, as the fan-out runs), at most 16
// broadcasts in flight; one op is one broadcast, received by every
// session. Reported per delivery: wall ns, CPU ns of the process, heap
// allocations and bytes. Server and clients share the process, so each
// figure includes the server's part, the same for both clients; the
// difference between grpc and raw is the clients'.
//
//	go test -run '^$' -bench RawVsGRPCReceive -benchmem -count 5 ./cmd/presencebench/
func BenchmarkRawVsGRPCReceive(b *testing.B) {
	const sessions, conns, window = 1000, 10, 16
	for _, kind := range []string{clientGRPC, clientRaw} {
		b.Run(kind, func(b *testing.B) {
			d := startBenchDaemon(b)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			t := &target{grpcAddr: d.GRPCAddr(), httpAddr: d.HTTPAddr(), srcAddrs: 16, staticWindow: true}
			cc, err := dialClients(t, kind, conns, 1)
			if err != nil {
				b.Fatal(err)
			}
			defer cc.close()
			var got atomic.Int64
			progressed := make(chan struct{}, 1)
			ss, _, err := openSessions(ctx, sessionSpec{
				n: sessions, conns: cc, prefix: "bench-" + kind, parallel: 64,
				onPush: func(*session, *frameInfo, int64) {
					if got.Add(1)%sessions == 0 {
						select {
						case progressed <- struct{}{}:
						default:
						}
					}
				},
			}, newProgress(io.Discard, "bench"))
			defer closeSessions(ss, 10*time.Second)
			if err != nil {
				b.Fatal(err)
			}
			data, err := structpb.NewValue(map[string]any{"t": fmt.Sprint(time.Now().UnixNano()), "i": "0"})
			if err != nil {
				b.Fatal(err)
			}
			req := &presencev1.BroadcastRequest{Payload: &presencev1.BroadcastRequest_Data{Data: data}}
			srv := d.Server()
			// wait returns once at least want deliveries have arrived.
			wait := func(want int64) {
				for got.Load() < want {
					select {
					case <-progressed:
					case <-time.After(10 * time.Millisecond):
					case <-ctx.Done():
						b.Fatalf("%d of %d deliveries", got.Load(), want)
					}
				}
			}
			srv.Broadcast(ctx, req) // warm up
			wait(sessions)
			got.Store(0)

			var ms0, ms1 runtime.MemStats
			runtime.ReadMemStats(&ms0)
			cpu0 := cpuNow()
			b.ResetTimer()
			for k := 0; k < b.N; k++ {
				wait(int64(k-window) * sessions)
				resp, err := srv.Broadcast(ctx, req)
				if err != nil || resp.GetDelivered() != sessions {
					b.Fatalf("Broadcast: %v, delivered %d", err, resp.GetDelivered())
				}
			}
			wait(int64(b.N) * sessions)
			b.StopTimer()
			cpu := cpuSince(cpu0)
			runtime.ReadMemStats(&ms1)
			n := float64(b.N) * sessions
			b.ReportMetric(cpu.WallSec*1e9/n, "ns/delivery")
			b.ReportMetric((cpu.UserSec+cpu.SysSec)*1e9/n, "cpu-ns/delivery")
			b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/n, "allocs/delivery")
			b.ReportMetric(float64(ms1.TotalAlloc-ms0.TotalAlloc)/n, "B/delivery")
			for _, s := range ss {
				if s.ended() {
					b.Fatalf("session %s ended: %v", s.uid, s.endErr)
				}
			}
		})
	}
}

// BenchmarkChurnCycle compares what one churn cycle (a new connection,
// Identify, Identified, half-close, the trailers) costs with each client,
// against an in-process daemon, cycling over 1,000 uids as the churn
// scenario does. Reported per cycle: CPU ns of the process, heap
// allocations and bytes; the server's part is in each, the same for both.
//
//	go test -run '^$' -bench ChurnCycle -benchmem -count 5 ./cmd/presencebench/
func BenchmarkChurnCycle(b *testing.B) {
	for _, kind := range []string{clientGRPC, clientRaw} {
		b.Run(kind, func(b *testing.B) {
			d := startBenchDaemon(b)
			ctx := context.Background()
			e := &env{t: &target{grpcAddr: d.GRPCAddr(), httpAddr: d.HTTPAddr(), srcAddrs: 16}}
			cycle := func(uid string, i int) error { return churnCycle(ctx, e, nil, uid, i) }
			if kind == clientRaw {
				cycle = func(uid string, i int) error { return rawChurnCycle(ctx, e.t, uid, i) }
			}
			var next atomic.Int64
			var ms0, ms1 runtime.MemStats
			runtime.ReadMemStats(&ms0)
			cpu0 := cpuNow()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := int(next.Add(1))
					if err := cycle(fmt.Sprintf("churn-%d", i%1000), i); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			cpu := cpuSince(cpu0)
			runtime.ReadMemStats(&ms1)
			n := float64(b.N)
			b.ReportMetric((cpu.UserSec+cpu.SysSec)*1e9/n, "cpu-ns/cycle")
			b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/n, "allocs/cycle")
			b.ReportMetric(float64(ms1.TotalAlloc-ms0.TotalAlloc)/n, "B/cycle")
		})
	}
}

// startBenchDaemon starts a quiet daemon on 127.0.0.1 for a benchmark,
// shut down when the benchmark ends.
func startBenchDaemon(b *testing.B) *daemon.Daemon {
	b.Helper()
	d, err := daemon.Start(daemon.Config{GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { d.Shutdown(context.Background()) })
	return d
}
