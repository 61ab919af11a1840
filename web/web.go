// Package web serves the browser side of presence: presence.js (the
// WebSocket client, a plain ES module) and a debug console page that uses
// it, embedded in the binary. Mount Handler at "/" beside the bridge at
// /v1/connect and the REST API under /v1/.
package web

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed static
var static embed.FS

// Files is the embedded static/ tree: index.html, app.js, presence.js,
// style.css.
var Files = mustSub(static, "static")

func mustSub(f fs.FS, dir string) fs.FS {
	sub, err := fs.Sub(f, dir)
	if err != nil {
		panic(err)
	}
	return sub
}

// contentSecurityPolicy lets the page load only its own files and talk
// only to its own origin (REST and the WebSocket; 'self' covers ws: and
// wss: to the same host).
const contentSecurityPolicy = "default-src 'self'; connect-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"

// Handler serves the embedded files: "/" is the debug console. Only GET
// and HEAD are allowed, so it can be mounted at "/" without taking other
// methods from the routes beside it.
func Handler() http.Handler {
	files := http.FileServerFS(Files)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		h := w.Header()
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		// Embedded files carry no modification time, so nothing can be
		// revalidated; they are small, fetch them afresh.
		h.Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	})
}
