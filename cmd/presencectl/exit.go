package main

import (
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Exit codes scripts can rely on (see the package doc).
const (
	exitOK       = 0
	exitError    = 1 // talking to the server failed, or it returned an error
	exitUsage    = 2 // the command line is wrong
	exitNotFound = 3 // NotFound, e.g. send to a uid with no live session
	exitAuth     = 4 // Unauthenticated or PermissionDenied
)

// exitCode maps an error from run to the process exit code.
func exitCode(err error) int {
	if err == nil {
		return exitOK
	}
	var u *usageError
	if errors.As(err, &u) {
		return exitUsage
	}
	switch status.Code(err) {
	case codes.NotFound:
		return exitNotFound
	case codes.Unauthenticated, codes.PermissionDenied:
		return exitAuth
	}
	return exitError
}

// usageError is a command line that cannot run.
type usageError struct {
	cmd string // "" for presencectl itself
	msg string
}

func (e *usageError) Error() string {
	if e.cmd == "" {
		return e.msg + " (run 'presencectl --help' for usage)"
	}
	return fmt.Sprintf("%s: %s (run 'presencectl %s --help' for usage)", e.cmd, e.msg, e.cmd)
}

func usageErr(cmd, format string, args ...any) error {
	return &usageError{cmd: cmd, msg: fmt.Sprintf(format, args...)}
}

// rpcError is an error the server returned for op, worded for a person
// ("op: message (Code)") and still carrying its status for exitCode.
type rpcError struct {
	op string
	st *status.Status
}

func (e *rpcError) Error() string {
	return fmt.Sprintf("%s: %s (%s)", e.op, e.st.Message(), e.st.Code())
}

// GRPCStatus lets status.Code see through the wrapping.
func (e *rpcError) GRPCStatus() *status.Status { return e.st }

// callError wraps an error from op, keeping its gRPC status.
func callError(op string, err error) error {
	if st, ok := status.FromError(err); ok {
		return &rpcError{op: op, st: st}
	}
	return fmt.Errorf("%s: %w", op, err)
}
