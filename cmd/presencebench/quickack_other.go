//go:build !linux

package main

import "net"

// quickAck: TCP_QUICKACK is Linux's; elsewhere there is nothing to set.
func quickAck(net.Conn) (bool, error) { return false, nil }
