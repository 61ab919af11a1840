package client

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// Config is everything a Client needs. Zero values take the defaults
// written beside each field.
type Config struct {
	// Target is the server, as grpc.NewClient takes it: "host:port" or a
	// resolver URI. Required.
	Target string
	// Credentials secure the connection. Nil means plaintext, which is
	// fit only for loopback development; set TLS credentials for
	// anything else.
	Credentials credentials.TransportCredentials
	// DialOptions are added to every connection after the credentials and
	// the default windows (see DefaultWindow), so they can override them.
	DialOptions []grpc.DialOption

	// UID is the user id to identify as. Required unless a token is set:
	// then it may be empty, and the server takes the uid from the token's
	// subject (StateChange.UID says which). The server checks its syntax
	// and ends the stream with InvalidArgument (which stops the client)
	// when it is wrong.
	UID string
	// Labels describe this session, for example {"device": "phone"}.
	// Copied by New.
	Labels map[string]string
	// Token is sent in Identify. Set Token or TokenFunc, not both.
	Token string
	// TokenFunc is asked for the token before every connection attempt,
	// so an expired token can be replaced by a fresh one. It gets a
	// context that ends with the attempt's handshake timeout. An error
	// fails the attempt, which is retried with backoff, unless it carries
	// a gRPC status a retry cannot fix (for example
	// status.Error(codes.Unauthenticated, ...)): that stops the client.
	TokenFunc func(ctx context.Context) (string, error)
	// (With TokenFunc, a session whose token has an exp claim refreshes it
	// on the open stream, asking TokenFunc again when 80% of the token's
	// remaining lifetime has passed, so the session outlives its token.)

	// OnPush receives every push, in order, on the session's reader
	// goroutine. It must not block for long (see the package doc) and must
	// not call Close. Nil drops pushes.
	OnPush func(*Push)
	// OnState receives every state change, in order. It is never called
	// concurrently with itself or with OnPush, and must not call Close.
	// Nil ignores state changes.
	OnState func(StateChange)

	// Backoff spaces reconnects. The zero value is the defaults.
	Backoff Backoff
	// HandshakeTimeout bounds one connection attempt: dialling, opening the
	// stream, Identify and the server's Identified. Default 10 s.
	HandshakeTimeout time.Duration
}

// Defaults.
const (
	DefaultHandshakeTimeout = 10 * time.Second
	// DefaultHeartbeatInterval and DefaultHeartbeatTimeout apply only when
	// a server's Identified leaves them unset; they are the server's own
	// defaults.
	DefaultHeartbeatInterval = 10 * time.Second
	DefaultHeartbeatTimeout  = 40 * time.Second
	// DefaultWindow is the HTTP/2 flow-control window the client sets
	// for its stream and its connection (the protocol's default size).
	// Setting it turns off grpc-go's BDP estimation, which pings the
	// server after every burst of data it receives: for a push stream
	// that is a ping per push, and the server's reply costs it as much as
	// the push (BENCHMARKS.md, "client windows"). A window only matters
	// for throughput, and pushes are small and far apart.
	DefaultWindow = 65535
)

// withDefaults returns c with every zero field set to its default and its
// maps copied.
func (c Config) withDefaults() Config {
	if c.Credentials == nil {
		c.Credentials = insecure.NewCredentials()
	}
	c.DialOptions = append([]grpc.DialOption{
		grpc.WithTransportCredentials(c.Credentials),
		grpc.WithInitialWindowSize(DefaultWindow),
		grpc.WithInitialConnWindowSize(DefaultWindow),
	}, c.DialOptions...)
	c.Labels = maps.Clone(c.Labels)
	c.Backoff = c.Backoff.withDefaults()
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = DefaultHandshakeTimeout
	}
	return c
}

// Validate reports every setting that cannot work, after defaults.
func (c Config) Validate() error {
	var errs []error
	if c.Target == "" {
		errs = append(errs, errors.New("target is empty; set it to the server's host:port"))
	}
	if c.UID == "" && c.Token == "" && c.TokenFunc == nil {
		errs = append(errs, errors.New("uid is empty; set the user id to identify as, or a token whose subject is the uid"))
	}
	if c.Token != "" && c.TokenFunc != nil {
		errs = append(errs, errors.New("both token and token func are set; set one"))
	}
	if c.HandshakeTimeout < 0 {
		errs = append(errs, fmt.Errorf("handshake timeout %v must not be negative", c.HandshakeTimeout))
	}
	if err := c.Backoff.validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// token returns the token for one connection attempt.
func (c *Config) token(ctx context.Context) (string, error) {
	if c.TokenFunc == nil {
		return c.Token, nil
	}
	tok, err := c.TokenFunc(ctx)
	if err != nil {
		return "", fmt.Errorf("getting a token: %w", err)
	}
	return tok, nil
}
