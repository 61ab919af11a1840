package client_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/presence-dev/presence/client"
	"github.com/presence-dev/presence/daemon"
	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
)

// startServer starts an in-process presence daemon on 127.0.0.1, as a real
// deployment would run presenced.
func startServer() *daemon.Daemon {
	d, err := daemon.Start(daemon.Config{
		GRPCAddr: "127.0.0.1:0",
		HTTPAddr: "off",
		Logger:   slog.New(slog.DiscardHandler),
	})
	if err != nil {
		log.Fatal(err)
	}
	return d
}

// Connect as a uid, receive a push a backend sends to it, and close.
func Example() {
	d := startServer()
	defer d.Shutdown(context.Background())

	connected := make(chan string, 1)
	pushes := make(chan *client.Push, 16)
	c, err := client.New(client.Config{
		Target: d.GRPCAddr(),
		UID:    "alice",
		Labels: map[string]string{"device": "laptop"},
		Token:  "a JWT, once the server checks them",
		OnState: func(s client.StateChange) {
			if s.State == client.StateConnected {
				select {
				case connected <- s.SessionID:
				default:
				}
			}
		},
		OnPush: func(p *client.Push) { pushes <- p },
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	select {
	case <-connected:
	case <-time.After(5 * time.Second):
		log.Fatal("not connected")
	}

	// A backend pushes to alice (this is what `presencectl send` does).
	cc, err := grpc.NewClient(d.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		log.Fatal(err)
	}
	defer cc.Close()
	data, _ := structpb.NewValue(map[string]any{"text": "hello, alice"})
	resp, err := presencev1.NewBackendServiceClient(cc).SendToUid(context.Background(),
		&presencev1.SendToUidRequest{Uid: "alice", Payload: &presencev1.SendToUidRequest_Data{Data: data}})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("delivered to", resp.GetDelivered(), "session")

	select {
	case p := <-pushes:
		fmt.Println(p.Msg.GetScope(), p.Msg.GetSeq(), p.Msg.GetData().GetStructValue().GetFields()["text"].GetStringValue())
	case <-time.After(5 * time.Second):
		log.Fatal("no push")
	}
	// Output:
	// delivered to 1 session
	// PUSH_SCOPE_UID 1 hello, alice
}

// Follow the state changes, and stop when the server refuses the client for
// good: here the uid is invalid, so the server answers InvalidArgument and
// the client does not retry.
func ExampleClient_Done() {
	d := startServer()
	defer d.Shutdown(context.Background())

	c, err := client.New(client.Config{
		Target:  d.GRPCAddr(),
		UID:     "not a uid!",
		OnState: func(s client.StateChange) { fmt.Println(s.State, status.Code(s.Err)) },
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	select {
	case <-c.Done():
		fmt.Println("stopped:", status.Code(c.Err()))
	case <-time.After(5 * time.Second):
		log.Fatal("still running")
	}
	// Output:
	// connecting OK
	// disconnected InvalidArgument
	// closed InvalidArgument
	// stopped: InvalidArgument
}

// The windows reconnect delays are drawn from, with the defaults.
func ExampleBackoff_Window() {
	for _, b := range []client.Backoff{{}, {Jitter: client.EqualJitter}} {
		fmt.Printf("%s jitter:", b.Jitter)
		for n := range 7 {
			lo, hi := b.Window(n)
			fmt.Printf(" [%v %v]", lo, hi)
		}
		fmt.Println()
	}
	// Output:
	// full jitter: [500ms 1s] [500ms 2s] [500ms 4s] [500ms 8s] [500ms 16s] [500ms 30s] [500ms 30s]
	// equal jitter: [500ms 1s] [1s 2s] [2s 4s] [4s 8s] [8s 16s] [15s 30s] [15s 30s]
}
