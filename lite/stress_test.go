package lite

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Many connections and streams at once, some cancelled midway, some ending
// normally, with unary calls mixed in; then Stop. Run under -race this looks
// for data races and deadlocks between readers, senders and Finish.
func TestStress(t *testing.T) {
	s := NewServer(Options{MaxConcurrentStreams: 8})
	s.HandleEvents(chatMethod, func(st *Stream) Events { return newEcho(st) })
	healthpb.RegisterHealthServer(s, health.NewServer())
	addr := startServer(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 1000)
	for c := range 8 {
		cc := dial(t, addr)
		for k := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := rand.New(rand.NewPCG(uint64(c), uint64(k)))
				for round := range 5 {
					sctx, scancel := context.WithCancel(ctx)
					cs, err := cc.NewStream(sctx, chatDesc, chatMethod)
					if err != nil {
						scancel()
						errs <- err
						return
					}
					n := 1 + r.IntN(40)
					cut := -1
					if r.IntN(3) == 0 {
						cut = r.IntN(n)
					}
					for i := range n {
						if i == cut {
							scancel()
							break
						}
						msg := fmt.Sprint(c, k, round, i, string(make([]byte, r.IntN(3000))))
						if err := cs.SendMsg(wrapperspb.String(msg)); err != nil {
							errs <- fmt.Errorf("send: %w", err)
							break
						}
						m := new(wrapperspb.StringValue)
						if err := cs.RecvMsg(m); err != nil || m.Value != msg {
							errs <- fmt.Errorf("recv: %v", err)
							break
						}
					}
					if cut < 0 {
						cs.CloseSend()
						if err := cs.RecvMsg(new(wrapperspb.StringValue)); err != io.EOF {
							errs <- fmt.Errorf("end: %v", err)
						}
					} else if err := cs.RecvMsg(new(wrapperspb.StringValue)); status.Code(err) != codes.Canceled {
						errs <- fmt.Errorf("after cancel: %v", err)
					}
					scancel()
					if _, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
						errs <- fmt.Errorf("check: %w", err)
					}
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
