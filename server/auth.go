package server

import (
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
)

// armExpiry ends the session with TOKEN_EXPIRED at t unless a refresh moves
// it. One timer per session with an expiring token, touched only on
// refresh.
func (s *session) armExpiry(t time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.expiry != nil {
		s.expiry.Stop()
	}
	s.expiry = time.AfterFunc(time.Until(t), func() {
		s.end(endf(ReasonTokenExpired, "the session's token expired at %s; reconnect with a new token, or send RefreshToken before expiry", t.UTC().Format(time.RFC3339)))
	})
}

// stopExpiry stops the expiry timer.
func (s *session) stopExpiry() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.expiry != nil {
		s.expiry.Stop()
	}
}

// refresh checks a RefreshToken frame: the new token must be valid and
// prove the session's uid. On success the expiry moves and TokenRefreshed
// is queued.
func (s *session) refresh(token string) *EndError {
	ack := &presencev1.TokenRefreshed{}
	if v := s.srv.opts.Tokens; v != nil {
		claims, err := v.Verify(token)
		if err != nil {
			return endf(ReasonUnauthenticated, "RefreshToken.token: %v; reconnect with a valid token", err)
		}
		if claims.Subject != s.uid {
			return endf(ReasonPermissionDenied, "RefreshToken.token is for %q, not this session's uid %q", claims.Subject, s.uid)
		}
		if claims.ExpiresAt.IsZero() {
			s.stopExpiry()
		} else {
			s.armExpiry(claims.ExpiresAt)
			ack.ExpiresAt = timestamppb.New(claims.ExpiresAt)
		}
	}
	s.enqueue(newFrame(&presencev1.ConnectResponse{Frame: &presencev1.ConnectResponse_TokenRefreshed{TokenRefreshed: ack}}))
	return nil
}

// frameLimiter is a token bucket over client frames, owned by the reader
// goroutine (no lock).
type frameLimiter struct {
	rate   float64 // tokens per second
	burst  float64
	tokens float64
	last   time.Time
}

func newFrameLimiter(rate float64, burst int, now time.Time) *frameLimiter {
	return &frameLimiter{rate: rate, burst: float64(burst), tokens: float64(burst), last: now}
}

// allow takes one token if there is one.
func (l *frameLimiter) allow(now time.Time) bool {
	l.tokens = min(l.burst, l.tokens+now.Sub(l.last).Seconds()*l.rate)
	l.last = now
	if l.tokens < 1 {
		return false
	}
	l.tokens--
	return true
}
