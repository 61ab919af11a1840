//go:build unix

package lite

import (
	"io"
	"net"
	"os"
	"syscall"
)

// socketFD returns nc's socket descriptor for writeNow, or -1 when nc is
// not a plain socket (TLS, or a wrapper that does not expose one).
func socketFD(nc net.Conn) int {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return -1
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1
	}
	fd := -1
	if err := rc.Control(func(s uintptr) { fd = int(s) }); err != nil {
		return -1
	}
	return fd
}

// writeNow writes b to c's non-blocking socket with write(2) until it is
// all written, the socket's buffer is full (errWouldBlock, with the count
// written) or it fails. It never waits, so it needs no deadline. It calls
// write(2) itself rather than through syscall.RawConn.Write, whose
// bookkeeping (the descriptor's reference count and lock, and its poller
// state: three structures no longer in any cache when a broadcast comes
// back to a connection) was 9.4% of the server's CPU in a fan-out over
// one connection per session (bench/profiles/fanout-1conn-2ps-cpu.txt).
// What that bookkeeping guarded, that the descriptor stays open during
// the write, fdMu guards here (see closeConn).
func (c *conn) writeNow(b []byte) (int, error) {
	c.fdMu.Lock()
	defer c.fdMu.Unlock()
	if c.fdClosed {
		return 0, net.ErrClosed
	}
	n := 0
	for n < len(b) {
		m, err := syscall.Write(c.fd, b[n:])
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			return n, errWouldBlock
		case err != nil:
			return n, os.NewSyscallError("write", err)
		case m <= 0: // never for a non-empty buffer on a socket
			return n, io.ErrShortWrite
		}
		n += m
	}
	return n, nil
}
