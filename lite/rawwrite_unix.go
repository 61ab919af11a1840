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
// One goroutine at a time may use w.
func (w *rawWriter) writeNow(rc syscall.RawConn, b []byte) (int, error) {
	if w.fn == nil {
		w.fn = w.write
	}
	w.b, w.n, w.err = b, 0, nil
	err := rc.Write(w.fn)
	n, werr := w.n, w.err
	w.b, w.err = nil, nil // hold neither past the call
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return n, errWouldBlock
	}
	if err != nil {
		return n, err
	}
	return n, werr
}

// write is the callback of writeNow's RawConn.Write. It returns true
// (done) every time: it must never wait for the socket.
func (w *rawWriter) write(fd uintptr) bool {
	for w.n < len(w.b) {
		m, err := syscall.Write(int(fd), w.b[w.n:])
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			w.err = errWouldBlock
			return true
		case err != nil:
			w.err = os.NewSyscallError("write", err)
			return true
		case m <= 0: // never for a non-empty buffer on a socket
			w.err = io.ErrShortWrite
			return true
		}
		w.n += m
	}
	return true
}
