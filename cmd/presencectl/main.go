// Command presencectl talks to a presence server from a terminal or a
// script: it watches a uid's pushes as JSON lines, pushes to a uid or to
// everyone, asks who is online, kicks sessions, and mints development
// tokens.
//
//	presencectl [global flags] <command> [flags]
//
//	watch      --uid U [--label k=v]...   connect as U and print pushes and state changes (JSON lines)
//	send       --uid U (--data JSON | --text TEXT)   push to every session of U
//	broadcast  (--data JSON | --text TEXT)            push to every session
//	presence   --uid U [--uid U2 ...]                 is U online: sessions, or last seen
//	online     [--page-size N] [--page-token T] [--counts]   list or count online uids
//	kick       --uid U [--session S] [--reason R] [--reconnect]   end U's sessions
//	token      --uid U --secret-file F [--ttl 1h]     mint a development client token
//	version                                           print the version
//
// Global flags, accepted before or after the command, each with an
// environment variable used when the flag is not given:
//
//	--addr     PRESENCE_ADDR     the server's gRPC address (default 127.0.0.1:9090)
//	--api-key  PRESENCE_API_KEY  sent as "authorization: Bearer KEY" on backend calls
//	--token    PRESENCE_TOKEN    the client token watch sends in Identify
//	--timeout  PRESENCE_TIMEOUT  bound on each backend call (default 10s)
//
// Output is JSON on stdout (one object per line for watch); errors go to
// stderr. Exit codes, for scripts:
//
//	0  success (watch: stopped by SIGINT or SIGTERM)
//	1  error talking to the server, or an error it returned
//	2  usage error: unknown command or flag, missing or malformed value
//	3  not found: send or kick to a uid with no live session
//	4  authentication: Unauthenticated or PermissionDenied
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "presencectl:", err)
		os.Exit(exitCode(err))
	}
}

// command is one subcommand.
type command struct {
	name    string
	usage   string // the synopsis after "presencectl"
	summary string // one line for the command list
	about   string // a paragraph for the command's --help
	// setup binds the command's own flags on fs and returns what runs the
	// command once fs is parsed.
	setup func(fs *flag.FlagSet) func(ctx context.Context, e *env) error
}

// commands lists every subcommand, in help order. A new one goes in its own
// file with a command value added here; backend calls use e.call, as send
// does.
var commands = []*command{watchCmd, sendCmd, broadcastCmd, presenceCmd, onlineCmd, kickCmd, tokenCmd, versionCmd}

// env is what a command runs with.
type env struct {
	globals
	stdout, stderr io.Writer
}

// run runs one presencectl invocation. ctx ends watch (main cancels it on
// SIGINT or SIGTERM). The error's exit code is exitCode(err); --help is
// not an error.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	top := newFlagSet("presencectl")
	bindGlobals(top)
	if err := top.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage(stdout)
			return nil
		}
		return usageErr("", "%v", err)
	}
	if top.NArg() == 0 {
		printUsage(stderr)
		return usageErr("", "no command given")
	}
	name, rest := top.Arg(0), top.Args()[1:]
	if name == "help" {
		return help(rest, stdout)
	}
	cmd := lookup(name)
	if cmd == nil {
		return usageErr("", "unknown command %q; commands are watch, send, broadcast, presence, online, kick, token, version", name)
	}

	fs := newFlagSet("presencectl " + cmd.name)
	bindGlobals(fs)
	action := cmd.setup(fs)
	if err := fs.Parse(rest); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printCommandHelp(stdout, cmd, fs)
			return nil
		}
		return usageErr(cmd.name, "%v", err)
	}
	if fs.NArg() > 0 {
		return usageErr(cmd.name, "unexpected argument %q; %s takes only flags", fs.Arg(0), cmd.name)
	}
	g, err := resolveGlobals(os.LookupEnv, top, fs)
	if err != nil {
		return usageErr(cmd.name, "%v", err)
	}
	return action(ctx, &env{globals: g, stdout: stdout, stderr: stderr})
}

// newFlagSet returns a flag set that prints nothing itself: run reports
// parse errors as usage errors and prints help only when asked.
func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

func lookup(name string) *command {
	for _, c := range commands {
		if c.name == name {
			return c
		}
	}
	return nil
}

// help prints the command list, or one command's help.
func help(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		printUsage(stdout)
		return nil
	}
	cmd := lookup(args[0])
	if cmd == nil {
		return usageErr("help", "unknown command %q", args[0])
	}
	fs := newFlagSet("presencectl " + cmd.name)
	bindGlobals(fs)
	cmd.setup(fs)
	printCommandHelp(stdout, cmd, fs)
	return nil
}

func printUsage(w io.Writer) {
	fmt.Fprint(w, "Usage: presencectl [global flags] <command> [flags]\n\nCommands:\n")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, "\nGlobal flags (before or after the command):\n")
	fs := newFlagSet("presencectl")
	bindGlobals(fs)
	fs.SetOutput(w)
	fs.PrintDefaults()
	fmt.Fprint(w, exitCodesHelp)
	fmt.Fprint(w, "\nRun 'presencectl <command> --help' for a command's flags.\n")
}

func printCommandHelp(w io.Writer, cmd *command, fs *flag.FlagSet) {
	fmt.Fprintf(w, "Usage: presencectl %s\n\n%s\n\nFlags:\n", cmd.usage, cmd.about)
	fs.SetOutput(w)
	fs.PrintDefaults()
	fmt.Fprint(w, exitCodesHelp)
}

const exitCodesHelp = `
Exit codes:
  0  success
  1  error talking to the server, or an error it returned
  2  usage error
  3  not found (send, kick: the uid has no live session)
  4  authentication (Unauthenticated, PermissionDenied)
`
