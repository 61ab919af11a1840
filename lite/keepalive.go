package lite

import (
	"time"

	"golang.org/x/net/http2"
)

// Keepalive: one sweeper goroutine per Server, no timer per connection.
// Every tick it looks at each connection's lastRead: a connection idle for
// Keepalive.Time gets a PING; if nothing at all was read Keepalive.Timeout
// after that PING, the connection is closed.

const (
	maxPingStrikes = 2
	// pingWithoutStreamMinTime is grpc-go's defaultPingTimeout: without
	// PermitWithoutStream, a client may ping an idle connection this often.
	pingWithoutStreamMinTime = 2 * time.Hour
)

var keepalivePingData = [8]byte{'l', 'i', 't', 'e', 'k', 'a', 'l', 'v'}

func (s *Server) sweepInterval() time.Duration {
	// A quarter of the shorter period, within [10ms, 5s]: a dead client is
	// closed within Timeout plus a quarter, and with the defaults (2h, 20s)
	// a million connections cost one pass of atomic loads every 5 s.
	d := min(s.opts.Keepalive.Time, s.opts.Keepalive.Timeout) / 4
	return min(max(d, 10*time.Millisecond), 5*time.Second)
}

func (s *Server) sweep() {
	defer s.sweepWG.Done()
	t := time.NewTicker(s.sweepInterval())
	defer t.Stop()
	var due []*conn
	for {
		select {
		case <-s.sweepStop:
			return
		case <-t.C:
		}
		now := time.Now().UnixNano()
		s.mu.Lock()
		for c := range s.conns {
			if c.keepaliveDue(now) {
				due = append(due, c)
			}
		}
		s.mu.Unlock()
		for i, c := range due {
			c.keepalive(now)
			due[i] = nil
		}
		due = due[:0]
	}
}

// keepaliveDue says whether c needs a PING or has failed to answer one.
func (c *conn) keepaliveDue(now int64) bool {
	o := &c.srv.opts.Keepalive
	last := c.lastRead.Load()
	if sent := c.pingSentAt.Load(); sent != 0 {
		if last >= sent {
			c.pingSentAt.Store(0) // answered (or anything else arrived)
		} else {
			return now-sent >= int64(o.Timeout)
		}
	}
	return now-last >= int64(o.Time)
}

// keepalive pings c, or closes it if its PING went unanswered. It never
// waits for the write mutex: a connection busy writing is not idle.
func (c *conn) keepalive(now int64) {
	if c.pingSentAt.Load() != 0 {
		c.debug("lite: keepalive timeout; closing the connection")
		c.closeConn()
		return
	}
	if !c.wmu.TryLock() {
		return
	}
	defer c.wmu.Unlock()
	if !c.handshook || c.werr != nil {
		return
	}
	bp := getWriteBuf()
	*bp = appendPing(*bp, false, keepalivePingData[:])
	c.pingSentAt.Store(now)
	c.writeLocked(*bp)
	putWriteBuf(bp)
}

// checkPingPolicy counts a client PING against KeepalivePolicy like grpc-go;
// it runs on the connection goroutine.
func (c *conn) checkPingPolicy() error {
	now := time.Now().UnixNano()
	prev := c.lastPingAt
	c.lastPingAt = now
	if c.resetPingStrikes.Swap(false) {
		c.pingStrikes = 0
		return nil
	}
	p := &c.srv.opts.KeepalivePolicy
	minTime := p.MinTime
	if !p.PermitWithoutStream {
		c.mu.Lock()
		n := len(c.streams)
		c.mu.Unlock()
		if n == 0 {
			minTime = pingWithoutStreamMinTime
		}
	}
	if prev != 0 && now-prev < int64(minTime) {
		c.pingStrikes++
	}
	if c.pingStrikes > maxPingStrikes {
		return connError{http2.ErrCodeEnhanceYourCalm, "too_many_pings"}
	}
	return nil
}
