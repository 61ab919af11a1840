package lite

import (
	"encoding/binary"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Flow control.
//
// Receive side: the connection window is replenished as soon as DATA is read
// (conn.onData); a stream's window as soon as its bytes are handed on — to
// Events.Msg, or to the RecvMsg queue of a goroutine-backed stream unless
// that queue already holds more than a window's worth, in which case the
// credit is held until RecvMsg catches up (grpcState.held). WINDOW_UPDATEs go
// out once the unacknowledged amount passes a quarter of the window, like
// grpc-go.
//
// Send side: Send reserves window under c.mu, waiting on c.cond (signalled by
// WINDOW_UPDATE, SETTINGS, stream end and connection close) without holding
// the write mutex, then queues its frames under c.wmu; one goroutine at a
// time writes what is queued (conn.writeLocked), so the messages of many
// streams of a connection go out in one write. TrySend never waits: it
// queues a message the windows hold at once, and leaves the write to the
// goroutine already writing or one it starts (conn.flushInBackground).

// sendMsg sends msg as one gRPC message in DATA frames, response HEADERS
// first if not yet sent.
func (st *Stream) sendMsg(msg []byte) error {
	c := st.c
	var prefix [5]byte
	binary.BigEndian.PutUint32(prefix[1:], uint32(len(msg)))
	total := int64(5 + len(msg))
	for off := int64(0); off < total; {
		c.mu.Lock()
		// The first chunk of a small message waits until the whole message
		// fits the windows, so a message is never left half-sent while the
		// client is not reading: a stream finished meanwhile (a slow
		// consumer's) then ends with clean trailers, which the client reads
		// as the status once it reads again, instead of a torn message.
		need := int64(1)
		if off == 0 {
			need = max(1, min(total, wholeMessageMax, c.peerInitWin))
		}
		if err := st.awaitWindowLocked(need); err != nil {
			c.mu.Unlock()
			return err
		}
		n := min(total-off, st.sendWindow, c.sendWindow, maxWriteBatch)
		st.sendWindow -= n
		c.sendWindow -= n
		maxFrame := c.peerMaxFrame
		c.mu.Unlock()

		bp, b, err := st.startData(maxFrame)
		if err != nil {
			return err
		}
		b = appendData(b, st.id, prefix[:], msg, int(off), int(n), maxFrame)
		if err := st.flushData(bp, b); err != nil {
			return err
		}
		off += n
	}
	return nil
}

// SendMsgs sends msgs in order, as Send would one by one, but encodes the
// small ones that fit the windows together and writes them at once: a
// stream with a backlog (a session behind on a burst) costs one write per
// batch, not one per message. On error, some leading messages may have
// been sent.
func (st *Stream) SendMsgs(msgs [][]byte) error {
	for len(msgs) > 0 {
		n, err := st.sendSmall(msgs)
		if err != nil {
			return err
		}
		if n == 0 { // too large to send only whole: Send's way
			if err := st.sendMsg(msgs[0]); err != nil {
				return err
			}
			n = 1
		}
		msgs = msgs[n:]
	}
	return nil
}

// TrySend sends msg as Send would, but only if it can at once: the
// response HEADERS are out, the client's windows hold the whole message,
// and the connection's write queue is short. It reports false, having
// sent nothing, otherwise (Send waits instead). It never writes to the
// socket itself: msg joins the connection's write queue and a goroutine
// already writing, or one started for it, writes it. So a broadcast to
// many streams of one connection costs one write and at most one
// goroutine, and the caller never blocks on a client. It must not run
// concurrently with Send or SendMsgs on the same stream; it fails like
// them once the stream or connection ended.
func (st *Stream) TrySend(msg []byte) (bool, error) {
	c := st.c
	total := int64(5 + len(msg))
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		return false, errConnClosed
	}
	c.mu.Lock()
	if st.ended || c.closed {
		err := st.endErrLocked()
		c.mu.Unlock()
		return false, err
	}
	if !st.hdrSent || total > min(wholeMessageMax, c.peerInitWin) ||
		st.sendWindow < total || c.sendWindow < total ||
		(c.pending != nil && len(*c.pending) >= maxPending) {
		c.mu.Unlock()
		return false, nil
	}
	st.sendWindow -= total
	c.sendWindow -= total
	maxFrame := c.peerMaxFrame
	c.mu.Unlock()

	if c.pending == nil {
		c.pending = getWriteBuf()
	}
	var prefix [5]byte
	binary.BigEndian.PutUint32(prefix[1:], uint32(len(msg)))
	*c.pending = appendData(*c.pending, st.id, prefix[:], msg, 0, int(total), maxFrame)
	c.resetPingStrikes.Store(true)
	c.srv.trySends.Add(1)
	c.flushInBackground()
	return true, nil
}

// sendSmall sends, in one write, msgs[0] and as many of the messages after
// it as fit the windows and maxWriteBatch, each whole. It waits only for
// msgs[0] to fit. It sends nothing and reports 0 if msgs[0] is larger than
// sendMsg sends only whole.
func (st *Stream) sendSmall(msgs [][]byte) (int, error) {
	c := st.c
	c.mu.Lock()
	limit := min(wholeMessageMax, c.peerInitWin)
	first := int64(5 + len(msgs[0]))
	if first > limit {
		c.mu.Unlock()
		return 0, nil
	}
	if err := st.awaitWindowLocked(first); err != nil {
		c.mu.Unlock()
		return 0, err
	}
	avail := min(st.sendWindow, c.sendWindow, maxWriteBatch)
	k, total := 1, first
	for ; k < len(msgs); k++ {
		sz := int64(5 + len(msgs[k]))
		if sz > limit || total+sz > avail {
			break
		}
		total += sz
	}
	st.sendWindow -= total
	c.sendWindow -= total
	maxFrame := c.peerMaxFrame
	c.mu.Unlock()

	bp, b, err := st.startData(maxFrame)
	if err != nil {
		return 0, err
	}
	var prefix [5]byte
	for _, msg := range msgs[:k] {
		binary.BigEndian.PutUint32(prefix[1:], uint32(len(msg)))
		b = appendData(b, st.id, prefix[:], msg, 0, 5+len(msg), maxFrame)
	}
	if err := st.flushData(bp, b); err != nil {
		return 0, err
	}
	return k, nil
}

// awaitWindowLocked waits until both send windows hold need bytes, or
// fails once the stream or the connection ended. c.mu must be held.
func (st *Stream) awaitWindowLocked(need int64) error {
	c := st.c
	for !st.ended && !c.closed && (st.sendWindow < need || c.sendWindow < need) {
		c.cond.Wait()
	}
	if st.ended || c.closed {
		return st.endErrLocked()
	}
	return nil
}

// endErrLocked is what a send fails with once the stream or connection
// ended. c.mu must be held.
func (st *Stream) endErrLocked() error {
	if st.endErr != nil {
		return st.endErr
	}
	return errConnClosed
}

// startData takes c.wmu and a pooled buffer, with the response HEADERS in
// it if they are still to be sent; the caller appends DATA and calls
// flushData. It fails, holding nothing, once the stream's end was sent.
func (st *Stream) startData(maxFrame int) (*[]byte, []byte, error) {
	c := st.c
	bp := getWriteBuf()
	c.wmu.Lock()
	if st.endSent {
		c.wmu.Unlock()
		putWriteBuf(bp)
		return nil, nil, errFinished
	}
	b := *bp
	if !st.hdrSent {
		b = st.appendHeadersLocked(b, maxFrame)
	}
	return bp, b, nil
}

// flushData queues b (built in bp by startData) for the connection's next
// write, then releases c.wmu and the buffer.
func (st *Stream) flushData(bp *[]byte, b []byte) error {
	c := st.c
	c.resetPingStrikes.Store(true)
	err := c.writeBatchLocked(b)
	c.wmu.Unlock()
	*bp = b
	putWriteBuf(bp)
	if err != nil {
		return errConnClosed
	}
	return nil
}

// wholeMessageMax is the largest message sendMsg sends only whole (see
// there); larger ones are split wherever the windows end.
const wholeMessageMax = 16 << 10

var errConnClosed = status.Error(codes.Unavailable, "lite: connection closed")

// setPeerInitialWindow applies the client's SETTINGS_INITIAL_WINDOW_SIZE to
// every open stream's send window (RFC 9113 §6.9.2).
func (c *conn) setPeerInitialWindow(v int64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	delta := v - c.peerInitWin
	c.peerInitWin = v
	for _, st := range c.streams {
		st.sendWindow += delta
		if st.sendWindow > 1<<31-1 {
			return connError{0x3, "stream send window overflow"}
		}
	}
	c.cond.Broadcast()
	return nil
}
