//go:build !unix

package lite

import "net"

// socketFD: no non-blocking write path here; every flush gets a
// goroutine of its own (see conn.flushInBackground).
func socketFD(net.Conn) int { return -1 }

func (c *conn) writeNow([]byte) (int, error) { panic("lite: writeNow without a socket descriptor") }
