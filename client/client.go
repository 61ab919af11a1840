package client

import (
	"context"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"

	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
)

// Client holds one presence session open, reconnecting as needed, until
// Close or a permanent error. Create it with New.
type Client struct {
	// Set by New, read-only after.
	cfg    Config
	cancel context.CancelCauseFunc // ends run with ErrClosed
	done   chan struct{}           // closed when run has returned and every goroutine has ended

	// Written by run before it closes done; read only after done.
	err error

	// Where the last session got to in each push sequence, for the next
	// Identify. Owned by whichever goroutine runs the session (the
	// supervisor, then that session's reader); sessions never overlap.
	pos *presencev1.ResumeFrom

	closeOnce sync.Once
}

// New validates cfg and starts the client: it connects in the background
// and reports progress to cfg.OnState. It fails only for a bad Config (no
// I/O happens before it returns). Call Close to stop it.
func New(cfg Config) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("client config: %w", err)
	}
	cfg = cfg.withDefaults()
	// Check the target and options now, so a typo fails here and not on
	// every attempt. grpc.NewClient does no I/O.
	cc, err := grpc.NewClient(cfg.Target, cfg.DialOptions...)
	if err != nil {
		return nil, fmt.Errorf("client target %q: %w", cfg.Target, err)
	}
	cc.Close()

	ctx, cancel := context.WithCancelCause(context.Background())
	c := &Client{cfg: cfg, cancel: cancel, done: make(chan struct{}), pos: &presencev1.ResumeFrom{}}
	go c.run(ctx)
	return c, nil
}

// Close stops the client: it ends the session (the server sees the client
// go), waits for every goroutine the client started, and reports
// StateClosed. Idempotent. It must not be called from OnPush or OnState,
// which it waits for.
func (c *Client) Close() {
	c.closeOnce.Do(func() { c.cancel(ErrClosed) })
	<-c.done
}

// Done is closed when the client has stopped: after Close, or on its own
// after a permanent error (see Err). Its goroutines have ended by then.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err returns the error that stopped the client on its own (a gRPC status
// such as InvalidArgument or Unauthenticated, or a Goodbye that forbids
// reconnecting), or nil while it runs or when it was stopped by Close.
func (c *Client) Err() error {
	select {
	case <-c.done:
		return c.err
	default:
		return nil
	}
}

// run is the client's supervisor: it runs one session at a time, decides
// after each whether and when to connect again, and reports states. It
// returns after Close or a permanent error, once everything it started has
// ended.
func (c *Client) run(ctx context.Context) {
	defer close(c.done)
	retries := 0 // retries since the last stable session; indexes the backoff
	for {
		c.report(StateChange{State: StateConnecting, Attempt: retries + 1})
		res := c.connectOnce(ctx)
		if ctx.Err() != nil {
			c.report(StateChange{State: StateDisconnected, SessionID: res.sessionID, Err: context.Cause(ctx), Goodbye: res.goodbye})
			c.report(StateChange{State: StateClosed})
			return
		}
		if res.connectedFor >= c.cfg.Backoff.ResetAfter {
			retries = 0
		}
		reconnect, wait := reconnectAfter(res.err, res.goodbye)
		if reconnect && wait == 0 {
			wait = c.cfg.Backoff.Delay(retries)
		}
		c.report(StateChange{
			State: StateDisconnected, SessionID: res.sessionID, Err: res.err, Goodbye: res.goodbye,
			Reconnect: reconnect, RetryIn: wait,
		})
		if !reconnect {
			c.err = res.err
			c.report(StateChange{State: StateClosed, Err: res.err})
			return
		}
		retries++
		if !sleep(ctx, wait) {
			c.report(StateChange{State: StateClosed})
			return
		}
	}
}

// report hands a state change to OnState.
func (c *Client) report(s StateChange) {
	if c.cfg.OnState != nil {
		c.cfg.OnState(s)
	}
}

// sleep waits for d or ctx, and reports whether the full wait passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
