package main

import (
	"bytes"
	"encoding/json"
	"sync"
	"testing"

	"github.com/presence-dev/presence/client"
)

// TestPresenceOnlineKick proves presence, online and kick against a real
// daemon: one uid with its session, a batch, the online page, counts, a
// kick that ends the client for good, and kick of an offline uid exits 3.
func TestPresenceOnlineKick(t *testing.T) {
	d := startDaemon(t)
	connected, closed := make(chan struct{}), make(chan struct{})
	var once1, once2 sync.Once
	c, err := client.New(client.Config{
		Target: d.GRPCAddr(), UID: "carol",
		OnState: func(s client.StateChange) {
			switch s.State {
			case client.StateConnected:
				once1.Do(func() { close(connected) })
			case client.StateClosed:
				once2.Do(func() { close(closed) })
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	waitClosed(t, connected, "client connected")
	addr := "--addr=" + d.GRPCAddr()

	r := runCLI(t, "presence", addr, "--uid", "carol")
	var one struct {
		Presence struct {
			Online   bool `json:"online"`
			Sessions []struct {
				SessionID string `json:"session_id"`
			} `json:"sessions"`
		} `json:"presence"`
	}
	if r.code != exitOK || json.Unmarshal([]byte(r.stdout), &one) != nil || !one.Presence.Online || len(one.Presence.Sessions) != 1 {
		t.Fatalf("presence carol: exit %d %q; want online with one session", r.code, r.stdout)
	}
	r = runCLI(t, "presence", addr, "--uid", "carol,dave")
	var batch struct {
		Presences []struct {
			UID    string `json:"uid"`
			Online bool   `json:"online"`
		} `json:"presences"`
	}
	if r.code != exitOK || json.Unmarshal([]byte(r.stdout), &batch) != nil || len(batch.Presences) != 2 || !batch.Presences[0].Online || batch.Presences[1].Online {
		t.Fatalf("presence carol,dave: exit %d %q", r.code, r.stdout)
	}
	if r = runCLI(t, "online", addr); r.code != exitOK || compact(r.stdout) != `{"uids":["carol"],"next_page_token":""}` {
		t.Fatalf("online: exit %d %q", r.code, r.stdout)
	}
	if r = runCLI(t, "online", addr, "--counts"); r.code != exitOK || compact(r.stdout) != `{"online_uids":"1","sessions":"1"}` {
		t.Fatalf("online --counts: exit %d %q", r.code, r.stdout)
	}
	if r = runCLI(t, "kick", addr, "--uid", "carol", "--reason", "test"); r.code != exitOK || compact(r.stdout) != `{"kicked":1}` {
		t.Fatalf("kick: exit %d %q", r.code, r.stdout)
	}
	waitClosed(t, closed, "client stopped for good after KICKED without reconnect")
	if r = runCLI(t, "kick", addr, "--uid", "carol"); r.code != exitNotFound {
		t.Fatalf("kick offline uid: exit %d; want %d", r.code, exitNotFound)
	}
	if r = runCLI(t, "kick", addr); r.code != exitUsage {
		t.Fatalf("kick without --uid: exit %d; want %d", r.code, exitUsage)
	}
}

// compact removes the spaces protojson adds at random.
func compact(s string) string {
	var b bytes.Buffer
	if json.Compact(&b, []byte(s)) != nil {
		return s
	}
	return b.String()
}
