package client

import (
	"net"
	"sync"
	"testing"
)

// proxy forwards TCP connections from a 127.0.0.1 listener to a target.
// Freeze stops forwarding on the connections open at that moment while
// keeping their sockets open: to both ends the peer is alive but silent,
// as with a hung process or a network path that black-holes packets.
// Connections accepted later are forwarded normally.
type proxy struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup // the accept loop and every copier

	mu     sync.Mutex
	conns  []*proxyConn // guarded by mu
	closed bool         // guarded by mu
}

// proxyConn is one forwarded client connection and its upstream.
type proxyConn struct {
	client, server net.Conn
	frozen         chan struct{} // closed by Freeze
	freezeOnce     sync.Once
	done           chan struct{} // closed when the proxy closes
}

// startProxy listens on 127.0.0.1:0 and forwards to target; cleanup closes
// every connection and waits for every goroutine.
func startProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("proxy listen: %v", err)
	}
	p := &proxy{ln: ln, target: target}
	p.wg.Go(p.acceptLoop)
	t.Cleanup(p.close)
	return p
}

// Addr is the address clients dial.
func (p *proxy) Addr() string { return p.ln.Addr().String() }

func (p *proxy) acceptLoop() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		pc := &proxyConn{client: c, server: s, frozen: make(chan struct{}), done: make(chan struct{})}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			c.Close()
			s.Close()
			return
		}
		p.conns = append(p.conns, pc)
		p.mu.Unlock()
		p.wg.Go(func() { pc.copy(s, c) })
		p.wg.Go(func() { pc.copy(c, s) })
	}
}

// copy forwards src to dst until either ends. Once frozen it forwards
// nothing more and stops reading, holding both sockets open until the proxy
// closes.
func (pc *proxyConn) copy(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		select {
		case <-pc.frozen:
			<-pc.done
			return
		default:
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				err = werr
			}
		}
		if err != nil {
			// One side went: end both, as a real path would.
			src.Close()
			dst.Close()
			return
		}
	}
}

// Freeze stops forwarding on every connection open now.
func (p *proxy) Freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, pc := range p.conns {
		pc.freezeOnce.Do(func() { close(pc.frozen) })
	}
}

// close ends every connection and waits for every goroutine.
func (p *proxy) close() {
	p.mu.Lock()
	p.closed = true
	conns := p.conns
	p.mu.Unlock()
	p.ln.Close()
	for _, pc := range conns {
		close(pc.done)
		pc.client.Close()
		pc.server.Close()
	}
	p.wg.Wait()
}
