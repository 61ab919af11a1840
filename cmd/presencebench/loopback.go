package main

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"syscall"
	"time"
)

// The bench is a load generator: it must never be pointed at anything but
// this machine. Every address it is given is resolved once, up front, and
// refused unless it is in 127.0.0.0/8; the resolved literal is what the
// bench then dials, and every dial checks again.

// loopbackAddr resolves addr ("host:port") and returns it as an IPv4
// loopback literal, or an error naming flag when the host is anything but
// loopback. An empty host means 127.0.0.1.
func loopbackAddr(ctx context.Context, flag, addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("--%s %q: %w", flag, addr, err)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return "", fmt.Errorf("--%s %q: the port must be a number", flag, addr)
	}
	if host == "" {
		host = "127.0.0.1"
	}
	var ips []net.IP
	if ip := net.ParseIP(host); ip != nil {
		ips = []net.IP{ip}
	} else {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if ips, err = net.DefaultResolver.LookupIP(rctx, "ip", host); err != nil {
			return "", fmt.Errorf("--%s %q: %w", flag, addr, err)
		}
	}
	var v4 net.IP
	for _, ip := range ips {
		if !ip.IsLoopback() {
			return "", fmt.Errorf("--%s %q: %s is not a loopback address; presencebench only talks to 127.0.0.0/8", flag, addr, ip)
		}
		if ip4 := ip.To4(); ip4 != nil && v4 == nil {
			v4 = ip4
		}
	}
	if v4 == nil {
		return "", fmt.Errorf("--%s %q: no 127.0.0.0/8 address (IPv6 loopback is not used); give 127.0.0.1:PORT", flag, addr)
	}
	return net.JoinHostPort(v4.String(), port), nil
}

// isLoopback4 reports whether "ip:port" is an IPv4 loopback literal.
func isLoopback4(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.To4() != nil && ip.IsLoopback()
}

// sourceIP is the i-th client source address: 127.0.0.2, 127.0.0.3, ...,
// n of them. Spreading client sockets over several source addresses keeps
// each (source, destination) pair well inside the ephemeral port range,
// even with tens of thousands of connections and TIME_WAIT sockets.
func sourceIP(i, n int) net.IP {
	if n < 1 {
		n = 1
	}
	k := 2 + i%n
	return net.IPv4(127, 0, byte(k>>8), byte(k&0xff)).To4()
}

// loopbackDialer returns a dial function for grpc.WithContextDialer and
// http.Transport that binds to src and refuses any non-loopback
// destination.
func loopbackDialer(src net.IP) func(ctx context.Context, addr string) (net.Conn, error) {
	d := net.Dialer{Control: bindNoPort}
	if src != nil {
		d.LocalAddr = &net.TCPAddr{IP: src}
	}
	return func(ctx context.Context, addr string) (net.Conn, error) {
		if !isLoopback4(addr) {
			return nil, fmt.Errorf("refusing to dial %q: presencebench only talks to 127.0.0.0/8", addr)
		}
		return d.DialContext(ctx, "tcp4", addr)
	}
}

// ipBindAddressNoPort is Linux's IP_BIND_ADDRESS_NO_PORT: with a source
// address bound, the port is chosen at connect time for the whole 4-tuple
// instead of at bind time, so ports in use towards other destinations (or
// in TIME_WAIT) do not run the range out.
const ipBindAddressNoPort = 24

func bindNoPort(network, address string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipBindAddressNoPort, 1)
	})
	if err != nil {
		return err
	}
	_ = serr // an older kernel without the option still works, with fewer ports
	return nil
}
