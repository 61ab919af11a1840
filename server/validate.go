package server

import (
	"fmt"
	"unicode/utf8"
)

// Limits on identities and labels, shared by every path that takes them.
const (
	MaxUidLen        = 128
	MaxLabels        = 16
	MaxLabelKeyLen   = 64
	MaxLabelValueLen = 256
)

// validateUid checks a uid's syntax: 1 to MaxUidLen characters from
// A-Z a-z 0-9 and "._:@-". The same rule holds on every path (Identify,
// SendToUid, queries), so a uid that can connect can be pushed to.
func validateUid(uid string) error {
	if uid == "" {
		return fmt.Errorf("empty; set a uid of 1 to %d characters", MaxUidLen)
	}
	if len(uid) > MaxUidLen {
		return fmt.Errorf("%d characters long; the limit is %d", len(uid), MaxUidLen)
	}
	for i := 0; i < len(uid); i++ {
		if !uidByte(uid[i]) {
			r, _ := utf8.DecodeRuneInString(uid[i:])
			return fmt.Errorf("character %q at byte %d is not allowed; use A-Z a-z 0-9 . _ : @ -", r, i)
		}
	}
	return nil
}

func uidByte(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	case c == '.', c == '_', c == ':', c == '@', c == '-':
		return true
	}
	return false
}

// validateLabels checks Identify.labels against the documented bounds.
func validateLabels(labels map[string]string) error {
	if len(labels) > MaxLabels {
		return fmt.Errorf("%d labels; the limit is %d", len(labels), MaxLabels)
	}
	for k, v := range labels {
		if k == "" || len(k) > MaxLabelKeyLen {
			return fmt.Errorf("key %.20q must be 1 to %d bytes", k, MaxLabelKeyLen)
		}
		if len(v) > MaxLabelValueLen {
			return fmt.Errorf("value of %q is %d bytes; the limit is %d", k, len(v), MaxLabelValueLen)
		}
	}
	return nil
}
