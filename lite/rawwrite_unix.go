//go:build unix

package lite

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
)

// rawConnOf returns nc's socket for writeNow, or nil when nc is not a
// plain socket (TLS, or a wrapper that does not expose one).
func rawConnOf(nc net.Conn) syscall.RawConn {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

// writeNow writes b to the non-blocking socket rc with write(2) until it
// is all written, the socket's buffer is full (errWouldBlock, with the
// count written) or it fails. It never waits, so it needs no deadline.
// A deadline left in the past by an earlier blocking write also reports
// errWouldBlock: the caller then writes the usual way, under a fresh one.
func writeNow(rc syscall.RawConn, b []byte) (int, error) {
	n := 0
	var werr error
	// The callback returns true (done) every time: it must never wait for
	// the socket here.
	err := rc.Write(func(fd uintptr) bool {
		for n < len(b) {
			m, err := syscall.Write(int(fd), b[n:])
			switch {
			case err == syscall.EINTR:
				continue
			case err == syscall.EAGAIN:
				werr = errWouldBlock
				return true
			case err != nil:
				werr = os.NewSyscallError("write", err)
				return true
			case m <= 0: // never for a non-empty buffer on a socket
				werr = io.ErrShortWrite
				return true
			}
			n += m
		}
		return true
	})
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return n, errWouldBlock
	}
	if err != nil {
		return n, err
	}
	return n, werr
}
