package lite

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Benchmarks. The idle-connection benchmark runs its clients in a child
// process (this test binary again, see runIdleClients) so that the numbers
// are the server's alone:
//
//	go test -run '^$' -bench IdleConn -benchtime 1x ./lite/
//	go test -run '^$' -bench 'StreamSend|PingPong' -benchmem ./lite/
//
// LITE_HEAPPROFILE=/tmp/heap writes the server's heap profile with the idle
// connections open to /tmp/heap.lite and /tmp/heap.grpc (add
// -memprofilerate=1 for exact numbers).

const idleConns = 2000 // client + server sockets in one process would be 2 fds per conn; the open files limit is 20,000

// echoDesc is grpc-go's version of the chat method: the handler blocks in
// RecvMsg and echoes, or for an Int64Value request streams that many
// 100-byte messages.
var echoDesc = grpc.ServiceDesc{
	ServiceName: "lite.test.Echo",
	HandlerType: (*any)(nil),
	Streams: []grpc.StreamDesc{{
		StreamName: "Chat", ServerStreams: true, ClientStreams: true,
		Handler: func(_ any, ss grpc.ServerStream) error {
			for {
				m := new(wrapperspb.StringValue)
				if err := ss.RecvMsg(m); err != nil {
					if err == io.EOF {
						return nil
					}
					return err
				}
				if err := ss.SendMsg(m); err != nil {
					return err
				}
			}
		},
	}, {
		StreamName: "Flood", ServerStreams: true, ClientStreams: true,
		Handler: func(_ any, ss grpc.ServerStream) error {
			n := new(wrapperspb.Int64Value)
			if err := ss.RecvMsg(n); err != nil {
				return err
			}
			var pm grpc.PreparedMsg
			if err := pm.Encode(ss, wrapperspb.Bytes(make([]byte, 100))); err != nil {
				return err
			}
			for range n.Value {
				if err := ss.SendMsg(&pm); err != nil {
					return err
				}
			}
			return nil
		},
	}},
}

// serveBoth starts, on 127.0.0.1, the lite server (event handlers on Chat
// and Flood) or a plain grpc.Server with echoDesc.
func serveBoth(b *testing.B, impl string) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	switch impl {
	case "lite", "lite-batch16", "lite-try":
		s := NewServer(Options{})
		s.HandleEvents(chatMethod, func(st *Stream) Events {
			return funcEvents{
				msg:    func(m []byte) { st.Send(m) }, // small messages: Send from Msg is fine
				closed: func(err error) { st.Finish(nil) },
			}
		})
		s.HandleEvents("/lite.test.Echo/Flood", func(st *Stream) Events {
			return funcEvents{
				msg: func(m []byte) {
					n := new(wrapperspb.Int64Value)
					unmarshal(m, n)
					payload := mustMarshal(wrapperspb.Bytes(make([]byte, 100)))
					go func() {
						if floodAs(st, impl, int(n.Value), payload) != nil {
							return
						}
						st.Finish(nil)
					}()
				},
			}
		})
		go s.Serve(l)
		b.Cleanup(s.Stop)
	case "grpc":
		s := grpc.NewServer()
		s.RegisterService(&echoDesc, struct{}{})
		go s.Serve(l)
		b.Cleanup(s.Stop)
	}
	return l.Addr().String()
}

func BenchmarkIdleConn(b *testing.B) {
	for _, impl := range []string{"lite", "grpc"} {
		b.Run(impl, func(b *testing.B) {
			addr := serveBoth(b, impl)
			before := serverMem()
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), "LITE_IDLE_CLIENTS="+addr+","+strconv.Itoa(idleConns))
			cmd.Stderr = os.Stderr
			stdin, _ := cmd.StdinPipe()
			stdout, _ := cmd.StdoutPipe()
			if err := cmd.Start(); err != nil {
				b.Fatal(err)
			}
			line, err := bufio.NewReader(stdout).ReadString('\n')
			if err != nil || !strings.HasPrefix(line, "ready") {
				b.Fatalf("client process: %q, %v", line, err)
			}
			time.Sleep(500 * time.Millisecond) // let the last reads settle
			after := serverMem()
			if f := os.Getenv("LITE_HEAPPROFILE"); f != "" {
				if w, err := os.Create(f + "." + impl); err == nil {
					pprof.Lookup("heap").WriteTo(w, 0)
					w.Close()
				}
			}
			stdin.Close()
			cmd.Wait()
			n := float64(idleConns)
			b.ReportMetric(float64(after.heap-before.heap)/n, "heap-B/conn")
			b.ReportMetric(float64(after.stack-before.stack)/n, "stack-B/conn")
			b.ReportMetric(float64(after.heap+after.stack-before.heap-before.stack)/n, "heap+stack-B/conn")
			b.ReportMetric(float64(after.rss-before.rss)/n, "rss-B/conn")
			b.ReportMetric(float64(after.goroutines-before.goroutines)/n, "goroutines/conn")
		})
	}
}

type memSample struct {
	heap, stack, rss uint64
	goroutines       int
}

func serverMem() memSample {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return memSample{heap: ms.HeapInuse, stack: ms.StackInuse, rss: vmRSS(), goroutines: runtime.NumGoroutine()}
}

func vmRSS() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseUint(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

func init() {
	if v := os.Getenv("LITE_IDLE_CLIENTS"); v != "" {
		addr, n, _ := strings.Cut(v, ",")
		count, _ := strconv.Atoi(n)
		os.Exit(runIdleClients(addr, count))
	}
}

// runIdleClients is the child process of BenchmarkIdleConn: count grpc-go
// connections, each with one chat stream that exchanged one message. It
// prints "ready" and holds them until stdin closes.
func runIdleClients(addr string, count int) int {
	ctx := context.Background()
	var (
		mu      sync.Mutex
		streams []grpc.ClientStream
		conns   []*grpc.ClientConn
		failed  error
		wg      sync.WaitGroup
		next    = make(chan int)
	)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range next {
				cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
				if err == nil {
					var cs grpc.ClientStream
					cs, err = cc.NewStream(ctx, chatDesc, chatMethod)
					if err == nil {
						if err = cs.SendMsg(wrapperspb.String("hello")); err == nil {
							err = cs.RecvMsg(new(wrapperspb.StringValue))
						}
					}
					mu.Lock()
					conns, streams = append(conns, cc), append(streams, cs)
					mu.Unlock()
				}
				if err != nil {
					mu.Lock()
					failed = err
					mu.Unlock()
				}
			}
		}()
	}
	for i := range count {
		next <- i
	}
	close(next)
	wg.Wait()
	if failed != nil {
		fmt.Fprintln(os.Stderr, "idle clients:", failed)
		return 1
	}
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin)
	for _, cc := range conns {
		cc.Close()
	}
	return 0
}

// floodAs sends n copies of payload on st the way impl says.
func floodAs(st *Stream, impl string, n int, payload []byte) error {
	switch impl {
	case "lite-batch16": // a backlog of 16, as a session's writer finds it
		batch := make([][]byte, 16)
		for i := range batch {
			batch[i] = payload
		}
		for left := n; left > 0; left -= len(batch) {
			if err := st.SendMsgs(batch[:min(left, len(batch))]); err != nil {
				return err
			}
		}
	case "lite-try": // as a session with nothing queued
		for range n {
			ok, err := st.TrySend(payload)
			if err == nil && !ok {
				err = st.Send(payload)
			}
			if err != nil {
				return err
			}
		}
	default:
		for range n {
			if err := st.Send(payload); err != nil {
				return err
			}
		}
	}
	return nil
}

// BenchmarkStreamSend: the server sends b.N 100-byte messages on one
// stream to one client: one Send each (lite, grpc), SendMsgs of 16
// (lite-batch16), or TrySend each, Send when it refuses (lite-try).
func BenchmarkStreamSend(b *testing.B) {
	for _, impl := range []string{"lite", "lite-batch16", "lite-try", "grpc"} {
		b.Run(impl, func(b *testing.B) {
			cc := dial(b, serveBoth(b, impl))
			cs, err := cc.NewStream(context.Background(), chatDesc, "/lite.test.Echo/Flood")
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			if err := cs.SendMsg(wrapperspb.Int64(int64(b.N))); err != nil {
				b.Fatal(err)
			}
			m := new(wrapperspb.BytesValue)
			for range b.N {
				if err := cs.RecvMsg(m); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			cs.CloseSend()
			if err := cs.RecvMsg(m); err != io.EOF {
				b.Fatal(err)
			}
		})
	}
}

// BenchmarkPingPong: one round trip of a small message per op.
func BenchmarkPingPong(b *testing.B) {
	for _, impl := range []string{"lite", "grpc"} {
		b.Run(impl, func(b *testing.B) {
			cc := dial(b, serveBoth(b, impl))
			cs, err := cc.NewStream(context.Background(), chatDesc, chatMethod)
			if err != nil {
				b.Fatal(err)
			}
			in, out := wrapperspb.String("ping"), new(wrapperspb.StringValue)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if err := cs.SendMsg(in); err != nil {
					b.Fatal(err)
				}
				if err := cs.RecvMsg(out); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			cs.CloseSend()
			if err := cs.RecvMsg(out); err != io.EOF {
				b.Fatal(err)
			}
		})
	}
}
