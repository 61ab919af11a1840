package lite

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"golang.org/x/net/http2"
)

// Frame I/O is hand-written instead of using http2.Framer. The Framer keeps,
// for the connection's whole life, a read buffer grown to the largest frame
// it has read (16 KiB once a full DATA frame arrived) and a write buffer grown
// to the largest frame it has written; on an idle connection both would be
// held, which is most of the ~10 KiB budget per connection. Here the reader
// keeps only a 256-byte inline buffer while idle and borrows a pooled
// 16 KiB buffer while frames arrive (returned as soon as everything read has
// been handled), and writers encode into pooled buffers for one flush.

const (
	frameHeaderLen = 9
	// maxFrameSize is the largest frame we accept: we never advertise a
	// SETTINGS_MAX_FRAME_SIZE above the default.
	maxFrameSize = 16384
	// idleReadBufSize is the inline read buffer kept per connection.
	idleReadBufSize = 256
	// bigReadBufSize holds any whole frame.
	bigReadBufSize = frameHeaderLen + maxFrameSize
	// maxWriteBatch bounds the DATA payload encoded into one write.
	maxWriteBatch = 64 << 10
	// maxPooledWriteBuf: larger write buffers are dropped, not pooled.
	maxPooledWriteBuf = maxWriteBatch + 16<<10
)

var (
	readBufPool  = sync.Pool{New: func() any { b := make([]byte, bigReadBufSize); return &b }}
	writeBufPool = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}
)

func getWriteBuf() *[]byte { return writeBufPool.Get().(*[]byte) }

func putWriteBuf(bp *[]byte) {
	if cap(*bp) > maxPooledWriteBuf {
		return
	}
	*bp = (*bp)[:0]
	writeBufPool.Put(bp)
}

type frameHeader struct {
	length   uint32
	typ      http2.FrameType
	flags    http2.Flags
	streamID uint32
}

// connError is an HTTP/2 connection error: GOAWAY with code, then close.
type connError struct {
	code   http2.ErrCode
	reason string
}

func (e connError) Error() string { return fmt.Sprintf("connection error %v: %s", e.code, e.reason) }

// fill makes at least n bytes available at c.rbuf[c.r:c.w], reading from the
// connection as needed.
func (c *conn) fill(n int) error {
	if c.w-c.r >= n {
		return nil
	}
	if len(c.rbuf)-c.r < n || (c.rfull && c.rpooled == nil) {
		// Not enough room after r (or the inline buffer filled up last time,
		// so more is likely queued): compact, or move to a pooled buffer.
		dst := c.rbuf
		if n > len(c.rbuf) || (c.rfull && c.rpooled == nil) {
			c.rpooled = readBufPool.Get().(*[]byte)
			dst = *c.rpooled
		}
		m := copy(dst, c.rbuf[c.r:c.w])
		c.rbuf, c.r, c.w = dst, 0, m
	}
	for c.w-c.r < n {
		k, err := c.nc.Read(c.rbuf[c.w:])
		if k > 0 {
			c.w += k
			c.lastRead.Store(time.Now().UnixNano())
		}
		c.rfull = c.w == len(c.rbuf)
		if err != nil {
			if c.awake && errors.Is(err, os.ErrDeadlineExceeded) {
				// A wake-up (see conn.wake): clear the deadline first, so a
				// wake-up racing with this check is not lost.
				c.nc.SetReadDeadline(time.Time{})
				if c.drained() {
					return errDrained
				}
				continue
			}
			if c.w-c.r >= n {
				return nil
			}
			return err
		}
	}
	return nil
}

// releaseReadBuf returns the pooled read buffer once everything read has been
// handled, so that an idle connection keeps only its inline buffer.
func (c *conn) releaseReadBuf() {
	if c.r != c.w {
		return
	}
	if c.rpooled != nil {
		readBufPool.Put(c.rpooled)
		c.rpooled = nil
		c.rbuf = c.inline[:]
	}
	// rfull too: or the next (maybe idle) Read would borrow a pooled buffer.
	c.r, c.w, c.rfull = 0, 0, false
}

// readFrame reads the next frame. The payload aliases the read buffer and is
// valid until the next readFrame.
func (c *conn) readFrame() (frameHeader, []byte, error) {
	if err := c.fill(frameHeaderLen); err != nil {
		return frameHeader{}, nil, err
	}
	b := c.rbuf[c.r:]
	h := frameHeader{
		length:   uint32(b[0])<<16 | uint32(b[1])<<8 | uint32(b[2]),
		typ:      http2.FrameType(b[3]),
		flags:    http2.Flags(b[4]),
		streamID: binary.BigEndian.Uint32(b[5:9]) & (1<<31 - 1),
	}
	if h.length > maxFrameSize {
		return h, nil, connError{http2.ErrCodeFrameSize, fmt.Sprintf("frame of %d bytes exceeds SETTINGS_MAX_FRAME_SIZE", h.length)}
	}
	c.r += frameHeaderLen
	n := int(h.length)
	if err := c.fill(n); err != nil {
		return h, nil, err
	}
	p := c.rbuf[c.r : c.r+n]
	c.r += n
	return h, p, nil
}

func appendFrameHeader(b []byte, length int, t http2.FrameType, f http2.Flags, sid uint32) []byte {
	return append(b, byte(length>>16), byte(length>>8), byte(length), byte(t), byte(f),
		byte(sid>>24)&0x7f, byte(sid>>16), byte(sid>>8), byte(sid))
}

func appendRSTStream(b []byte, sid uint32, code http2.ErrCode) []byte {
	b = appendFrameHeader(b, 4, http2.FrameRSTStream, 0, sid)
	return binary.BigEndian.AppendUint32(b, uint32(code))
}

func appendWindowUpdate(b []byte, sid uint32, inc uint32) []byte {
	b = appendFrameHeader(b, 4, http2.FrameWindowUpdate, 0, sid)
	return binary.BigEndian.AppendUint32(b, inc&(1<<31-1))
}

func appendPing(b []byte, ack bool, data []byte) []byte {
	var f http2.Flags
	if ack {
		f = http2.FlagPingAck
	}
	b = appendFrameHeader(b, 8, http2.FramePing, f, 0)
	return append(b, data[:8]...)
}

func appendGoAway(b []byte, last uint32, code http2.ErrCode, debug string) []byte {
	b = appendFrameHeader(b, 8+len(debug), http2.FrameGoAway, 0, 0)
	b = binary.BigEndian.AppendUint32(b, last&(1<<31-1))
	b = binary.BigEndian.AppendUint32(b, uint32(code))
	return append(b, debug...)
}

func appendSetting(b []byte, id http2.SettingID, v uint32) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(id))
	return binary.BigEndian.AppendUint32(b, v)
}

// appendData appends DATA frames carrying bytes [off, off+n) of the
// concatenation prefix+msg, each at most maxFrame bytes long.
func appendData(b []byte, sid uint32, prefix, msg []byte, off, n int, maxFrame int) []byte {
	for n > 0 {
		k := min(n, maxFrame)
		b = appendFrameHeader(b, k, http2.FrameData, 0, sid)
		rem := k
		if off < len(prefix) {
			m := min(rem, len(prefix)-off)
			b = append(b, prefix[off:off+m]...)
			off, rem = off+m, rem-m
		}
		if rem > 0 {
			mo := off - len(prefix)
			b = append(b, msg[mo:mo+rem]...)
			off += rem
		}
		n -= k
	}
	return b
}
