//go:build linux

package main

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// quickAck sets TCP_QUICKACK on nc's socket: it leaves delayed-ACK
// ("pingpong") mode, which a request answered at once (Identify, then
// Identified) puts a Linux socket in, and ACKs at once until it again
// sends soon after receiving. It reports whether nc had a socket to set.
func quickAck(nc net.Conn) (bool, error) {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return false, nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false, err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_QUICKACK, 1)
	}); err != nil {
		return false, err
	}
	return serr == nil, serr
}
