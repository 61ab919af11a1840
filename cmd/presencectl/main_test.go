package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/presence-dev/presence/daemon"
	"github.com/presence-dev/presence/server"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// waitTimeout bounds every wait and every run in these tests.
const waitTimeout = 5 * time.Second

var quiet = slog.New(slog.DiscardHandler)

// startDaemon starts a real presence daemon on 127.0.0.1 (gRPC only);
// cleanup shuts it down.
func startDaemon(t *testing.T) *daemon.Daemon {
	t.Helper()
	d, err := daemon.Start(daemon.Config{
		GRPCAddr: "127.0.0.1:0", HTTPAddr: "off", Logger: quiet,
		Server: server.Options{Logger: quiet},
	})
	if err != nil {
		t.Fatalf("daemon.Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		if err := d.Shutdown(ctx); err != nil {
			t.Errorf("daemon Shutdown: %v", err)
		}
	})
	return d
}

// result is what one presencectl run produced.
type result struct {
	err            error
	code           int
	stdout, stderr string
}

// runCLI runs presencectl in-process with args, bounded by waitTimeout.
func runCLI(t *testing.T, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	err := run(ctx, args, &stdout, &stderr)
	return result{err: err, code: exitCode(err), stdout: stdout.String(), stderr: stderr.String()}
}

// lines is an io.Writer that collects complete lines for a test to wait
// on while something else writes.
type lines struct {
	mu      sync.Mutex
	buf     bytes.Buffer  // guarded by mu; the unfinished line
	done    []string      // guarded by mu
	changed chan struct{} // signalled (without blocking) on every line
	at      int           // how far next has read; owned by the test goroutine
}

func newLines() *lines { return &lines{changed: make(chan struct{}, 1)} }

func (l *lines) Write(p []byte) (int, error) {
	l.mu.Lock()
	l.buf.Write(p)
	for {
		s, err := l.buf.ReadString('\n')
		if err != nil {
			l.buf.WriteString(s) // keep the partial line
			break
		}
		l.done = append(l.done, strings.TrimSuffix(s, "\n"))
	}
	l.mu.Unlock()
	select {
	case l.changed <- struct{}{}:
	default:
	}
	return len(p), nil
}

// next waits for the next line that contains want, skipping others.
func (l *lines) next(t *testing.T, want string) string {
	t.Helper()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	for {
		l.mu.Lock()
		for l.at < len(l.done) {
			s := l.done[l.at]
			l.at++
			if strings.Contains(s, want) {
				l.mu.Unlock()
				return s
			}
		}
		all := strings.Join(l.done, "\n")
		l.mu.Unlock()
		select {
		case <-l.changed:
		case <-deadline.C:
			t.Fatalf("no line with %q within %v; output:\n%s", want, waitTimeout, all)
		}
	}
}

// all returns every complete line.
func (l *lines) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.done...)
}

// TestUsageErrorsExit2 proves a malformed command line exits 2 with a
// message naming the problem.
func TestUsageErrorsExit2(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no command", nil, "no command given"},
		{"unknown command", []string{"sned"}, `unknown command "sned"`},
		{"unknown global flag", []string{"--adr", "x", "send"}, "-adr"},
		{"unknown command flag", []string{"send", "--uid", "u", "--txt", "hi"}, "-txt"},
		{"send without uid", []string{"send", "--text", "hi"}, "--uid is required"},
		{"send without payload", []string{"send", "--uid", "u"}, "payload is required"},
		{"send with two payloads", []string{"send", "--uid", "u", "--text", "a", "--data", `"b"`}, "not both"},
		{"send with bad JSON", []string{"send", "--uid", "u", "--data", "{text: hi}"}, "--data is not valid JSON"},
		{"broadcast without payload", []string{"broadcast"}, "payload is required"},
		{"stray argument", []string{"send", "--uid", "u", "--text", "hi", "extra"}, `unexpected argument "extra"`},
		{"bad timeout", []string{"send", "--uid", "u", "--text", "hi", "--timeout", "soon"}, `--timeout "soon"`},
		{"watch without uid", []string{"watch"}, "--uid is required"},
		{"bad label", []string{"watch", "--uid", "u", "--label", "device"}, `label "device": want key=value`},
		{"help for an unknown command", []string{"help", "nope"}, `unknown command "nope"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runCLI(t, tc.args...)
			if r.code != exitUsage {
				t.Fatalf("presencectl %q exit = %d (%v); want %d", tc.args, r.code, r.err, exitUsage)
			}
			if !strings.Contains(r.err.Error(), tc.want) || !strings.Contains(r.err.Error(), "--help") {
				t.Errorf("presencectl %q error = %q; want it to mention %q and point to --help", tc.args, r.err, tc.want)
			}
		})
	}
}

// TestHelpExits0 proves --help (and help) works for presencectl and every
// command, prints to stdout and exits 0.
func TestHelpExits0(t *testing.T) {
	cases := [][]string{{"--help"}, {"-h"}, {"help"}}
	for _, c := range commands {
		cases = append(cases, []string{c.name, "--help"}, []string{"help", c.name})
	}
	for _, args := range cases {
		r := runCLI(t, args...)
		if r.code != exitOK || !strings.Contains(r.stdout, "Usage: presencectl") || !strings.Contains(r.stdout, "Exit codes") {
			t.Errorf("presencectl %q: exit %d (%v), stdout %q; want 0 and usage with exit codes", args, r.code, r.err, r.stdout)
		}
	}
}

// TestExitCode proves the documented exit codes for each kind of error.
func TestExitCode(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want int
	}{
		{nil, 0},
		{errors.New("boom"), 1},
		{status.Error(codes.Unavailable, "down"), 1},
		{status.Error(codes.InvalidArgument, "bad uid"), 1},
		{usageErr("send", "no"), 2},
		{callError("send", status.Error(codes.NotFound, "offline")), 3},
		{callError("send", status.Error(codes.Unauthenticated, "who")), 4},
		{fmt.Errorf("wrapped: %w", status.Error(codes.PermissionDenied, "no")), 4},
	} {
		if got := exitCode(tc.err); got != tc.want {
			t.Errorf("exitCode(%v) = %d; want %d", tc.err, got, tc.want)
		}
	}
}

// TestVersion proves version prints the program's name and Go version.
func TestVersion(t *testing.T) {
	r := runCLI(t, "version")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "presencectl ") || !strings.Contains(r.stdout, "go1.") {
		t.Errorf("version: exit %d, stdout %q; want 0 and \"presencectl <version> go1...\"", r.code, r.stdout)
	}
}
