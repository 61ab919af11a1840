//go:build !unix

package lite

import (
	"net"
	"syscall"
)

// rawConnOf: no non-blocking write path here; every flush gets a
// goroutine of its own (see conn.flushInBackground).
func rawConnOf(net.Conn) syscall.RawConn { return nil }

func (*rawWriter) writeNow(syscall.RawConn, []byte) (int, error) {
	panic("lite: writeNow without a raw socket")
}
