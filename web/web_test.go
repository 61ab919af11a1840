package web

import (
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestHandlerServesFiles proves the console and the client are served with
// types a browser accepts for a module script, and with the security
// headers.
func TestHandlerServesFiles(t *testing.T) {
	hs := httptest.NewServer(Handler())
	t.Cleanup(hs.Close)
	for _, tc := range []struct {
		path, wantType, wantBody string
	}{
		{"/", "text/html", `<script type="module" src="app.js">`},
		{"/presence.js", "text/javascript", "export class PresenceClient"},
		{"/app.js", "text/javascript", "from './presence.js'"},
		{"/style.css", "text/css", "--accent"},
	} {
		t.Run(tc.path, func(t *testing.T) {
			res, err := http.Get(hs.URL + tc.path)
			if err != nil {
				t.Fatalf("GET %s: %v", tc.path, err)
			}
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != http.StatusOK {
				t.Fatalf("GET %s = %d; want 200", tc.path, res.StatusCode)
			}
			if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, tc.wantType) {
				t.Errorf("GET %s Content-Type = %q; want %s", tc.path, ct, tc.wantType)
			}
			if !strings.Contains(string(body), tc.wantBody) {
				t.Errorf("GET %s body lacks %q", tc.path, tc.wantBody)
			}
			if csp := res.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "connect-src 'self'") {
				t.Errorf("GET %s Content-Security-Policy = %q; want connect-src 'self'", tc.path, csp)
			}
			if res.Header.Get("X-Content-Type-Options") != "nosniff" {
				t.Errorf("GET %s lacks X-Content-Type-Options: nosniff", tc.path)
			}
		})
	}
}

// TestHandlerRefuses proves the handler, mounted at "/", answers only GET
// and HEAD, and 404 for paths it does not have.
func TestHandlerRefuses(t *testing.T) {
	hs := httptest.NewServer(Handler())
	t.Cleanup(hs.Close)
	res, err := http.Post(hs.URL+"/", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatalf("POST /: %v", err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusMethodNotAllowed || res.Header.Get("Allow") != "GET, HEAD" {
		t.Errorf("POST / = %d, Allow %q; want 405, GET, HEAD", res.StatusCode, res.Header.Get("Allow"))
	}
	res, err = http.Get(hs.URL + "/nope.js")
	if err != nil {
		t.Fatalf("GET /nope.js: %v", err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusNotFound {
		t.Errorf("GET /nope.js = %d; want 404", res.StatusCode)
	}
}

// TestPageReferencesExist proves every file the page loads is embedded.
func TestPageReferencesExist(t *testing.T) {
	for _, name := range []string{"index.html", "app.js", "presence.js", "style.css"} {
		if _, err := fs.Stat(Files, name); err != nil {
			t.Errorf("embedded %s: %v", name, err)
		}
	}
}
