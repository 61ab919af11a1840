package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/presence-dev/presence/gen/openapi"
	presencev1 "github.com/presence-dev/presence/gen/presence/v1"
	"github.com/presence-dev/presence/web"
)

// httpHandler is an HTTP listener's handler: /healthz always; with public
// (the listener clients use), the WebSocket bridge at /v1/connect and,
// unless NoWebConsole, the debug console at /; with backend, the REST
// facade under /v1/, /metrics and /openapi.json.
//
// The console's "/" catches every path no other route has, so unknown
// paths get its 404 and a wrong method on /healthz its 405; the REST
// facade's "/v1/" is longer and keeps its own 404 and 405 answers.
func (d *Daemon) httpHandler(ctx context.Context, public, backend bool) (http.Handler, error) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if d.draining.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "draining")
			return
		}
		fmt.Fprintln(w, "ok")
	})
	if public {
		mux.Handle("/v1/connect", d.websocketHandler())
		if !d.cfg.NoWebConsole {
			mux.Handle("/", web.Handler())
		}
		if !backend {
			// The API's paths are not the console's: 404 for any method.
			mux.Handle("/v1/", http.NotFoundHandler())
		}
	}
	if !backend {
		return mux, nil
	}
	gw := runtime.NewServeMux(
		runtime.WithMarshalerOption(runtime.MIMEWildcard, &runtime.HTTPBodyMarshaler{Marshaler: restMarshaler()}),
		runtime.WithRoutingErrorHandler(routingError),
		runtime.WithErrorHandler(errorHandler),
	)
	api := &inProcessBackend{BackendServiceClient: presencev1.NewBackendServiceClient(d.gwConn), srv: d.srv, unary: d.gwUnary}
	if err := presencev1.RegisterBackendServiceHandlerClient(ctx, gw, api); err != nil {
		return nil, fmt.Errorf("REST facade: %w", err)
	}

	mux.Handle("/v1/", limitBody(gw, d.cfg.MaxBodyBytes))
	mux.Handle("GET /metrics", promhttp.HandlerFor(d.metrics, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(d.log.Handler(), slog.LevelWarn)}))
	mux.HandleFunc("GET /openapi.json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(openapi.JSON)
	})
	return mux, nil
}

// websocketHandler is the bridge, refusing upgrades with 503 once the
// daemon drains (as /healthz does), so sockets stop opening while Shutdown
// waits for the bridge. An upgrade already past this check when draining
// starts is refused by the server instead (close code 4014).
func (d *Daemon) websocketHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if d.draining.Load() {
			w.Header().Set("Retry-After", "5")
			http.Error(w, "the server is shutting down; reconnect in a few seconds", http.StatusServiceUnavailable)
			return
		}
		d.ws.ServeHTTP(w, r)
	})
}

// routingError answers requests no route matches: 404 for an unknown
// path, and 405 (not the gateway's default 501) for a known path with the
// wrong method.
func routingError(ctx context.Context, mux *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, httpStatus int) {
	if httpStatus != http.StatusMethodNotAllowed {
		runtime.DefaultRoutingErrorHandler(ctx, mux, m, w, r, httpStatus)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusMethodNotAllowed)
	fmt.Fprintf(w, `{"code":12,"message":"method %s is not allowed on %s; /openapi.json lists each route's method","details":[]}`+"\n", r.Method, r.URL.Path)
}

// restMarshaler is the REST facade's JSON codec.
func restMarshaler() *runtime.JSONPb {
	return &runtime.JSONPb{
		MarshalOptions: protojson.MarshalOptions{EmitUnpopulated: true},
		// A misspelt field is an error, not silently dropped.
		UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: false},
	}
}

// limitBody caps request bodies before anything decodes them; the gateway
// answers a body past the cap with an error instead of reading it all.
func limitBody(h http.Handler, max int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > max {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusRequestEntityTooLarge)
			fmt.Fprintf(w, `{"code":8,"message":"request body is %d bytes; the limit is %d","details":[]}`+"\n", r.ContentLength, max)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, max)
		h.ServeHTTP(w, r)
	})
}

// errorHandler is the gateway's error handler with a valid challenge: for
// UNAUTHENTICATED the default puts the status message in WWW-Authenticate,
// which is not a challenge; the message stays in the body.
func errorHandler(ctx context.Context, mux *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, err error) {
	runtime.DefaultHTTPErrorHandler(ctx, mux, m, challengeWriter{w}, r, err)
}

// challengeWriter rewrites WWW-Authenticate to a Bearer challenge as the
// status line goes out.
type challengeWriter struct{ http.ResponseWriter }

func (c challengeWriter) WriteHeader(code int) {
	if code == http.StatusUnauthorized {
		c.Header().Set("WWW-Authenticate", `Bearer realm="presence backend API"`)
	}
	c.ResponseWriter.WriteHeader(code)
}
