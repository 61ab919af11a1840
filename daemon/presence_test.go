package daemon

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func get(t *testing.T, url string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("GET %s: %q is not JSON", url, raw)
	}
	return resp.StatusCode, m
}

// TestRESTPresence proves the presence queries and kick over real HTTP
// through the gateway.
func TestRESTPresence(t *testing.T) {
	d := start(t)
	base := "http://" + d.HTTPAddr()
	cc := dial(t, d)
	a := connect(t, cc, "alice")
	connect(t, cc, "bob")

	code, body := get(t, base+"/v1/uids/alice/presence")
	p := body["presence"].(map[string]any)
	if code != 200 || p["online"] != true || p["sessionCount"] != float64(1) || len(p["sessions"].([]any)) != 1 {
		t.Fatalf("GET presence = %d %v; want alice online with one session", code, body)
	}
	code, body = post(t, d, "/v1/presence:batchGet", `{"uids": ["alice", "carol", "bob"]}`)
	ps := body["presences"].([]any)
	if code != 200 || len(ps) != 3 || ps[0].(map[string]any)["online"] != true || ps[1].(map[string]any)["online"] != false {
		t.Fatalf("batchGet = %d %v", code, body)
	}
	code, body = get(t, base+"/v1/online?page_size=1")
	if code != 200 || len(body["uids"].([]any)) != 1 || body["uids"].([]any)[0] != "alice" || body["nextPageToken"] == "" {
		t.Fatalf("online page 1 = %d %v", code, body)
	}
	code, body = get(t, base+"/v1/online?page_size=1&page_token="+body["nextPageToken"].(string))
	if code != 200 || body["uids"].([]any)[0] != "bob" || body["nextPageToken"] != "" {
		t.Fatalf("online page 2 = %d %v", code, body)
	}
	if code, body = get(t, base+"/v1/counts"); code != 200 || body["onlineUids"] != "2" || body["sessions"] != "2" {
		t.Fatalf("counts = %d %v", code, body)
	}
	if code, body = get(t, base+"/v1/online?page_size=-1"); code != 400 {
		t.Fatalf("bad page size = %d %v; want 400", code, body)
	}
	code, body = post(t, d, "/v1/uids/alice/kick", `{"reason": "bye", "reconnect": true, "reconnectAfter": "2s"}`)
	if code != 200 || body["kicked"] != float64(1) {
		t.Fatalf("kick = %d %v", code, body)
	}
	if gb := a.next(t).GetGoodbye(); gb.GetReason().String() != "GOODBYE_REASON_KICKED" || !gb.GetReconnect() || gb.GetReconnectAfter().AsDuration() != 2*time.Second {
		t.Fatalf("alice's Goodbye = %v", gb)
	}
	if code, _ = post(t, d, "/v1/uids/nobody/kick", `{}`); code != 404 {
		t.Fatalf("kick offline = %d; want 404", code)
	}
}

// TestRESTWatchStreamsNDJSON proves WatchPresence over REST streams one
// JSON object per line as events happen, as `curl -N` shows them.
func TestRESTWatchStreamsNDJSON(t *testing.T) {
	d := start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+d.HTTPAddr()+"/v1/presence:watch?uids=alice&include_sessions=true", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	lines := make(chan string, 16)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	next := func() map[string]any {
		t.Helper()
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("stream ended")
			}
			var m struct {
				Result map[string]any `json:"result"`
			}
			if err := json.Unmarshal([]byte(l), &m); err != nil || m.Result == nil {
				t.Fatalf("line %q is not {\"result\": ...}", l)
			}
			return m.Result
		case <-time.After(5 * time.Second):
			t.Fatal("no line within 5s")
		}
		return nil
	}
	if ev := next(); ev["type"] != "PRESENCE_EVENT_TYPE_SUBSCRIBED" {
		t.Fatalf("first event %v; want SUBSCRIBED", ev)
	}
	cc := dial(t, d)
	connect(t, cc, "bob") // filtered out
	connect(t, cc, "alice")
	for _, want := range []string{"PRESENCE_EVENT_TYPE_ONLINE", "PRESENCE_EVENT_TYPE_SESSION_STARTED"} {
		if ev := next(); ev["type"] != want || ev["uid"] != "alice" || !strings.HasPrefix(ev["time"].(string), "20") {
			t.Fatalf("event %v; want alice %s", ev, want)
		}
	}
}
