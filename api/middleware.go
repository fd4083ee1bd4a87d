package api

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime/debug"
	"time"

	"github.com/heraldhq/herald"
)

type ctxKey int

const (
	requestStateKey ctxKey = iota
	principalKey
)

// requestState is what the middleware learns of a request: its id, and the
// caller once authenticate has established it. It sits in the request's
// context under one key, so a request costs one context value and one copy
// of the *http.Request however many facts the middleware adds (issue 20:
// each r.WithContext copies the whole request).
type requestState struct {
	id        string
	principal *principal // set by authenticate before the route's handler runs
}

func requestStateFrom(ctx context.Context) *requestState {
	st, _ := ctx.Value(requestStateKey).(*requestState)
	return st
}

// maxRequestIDLen bounds a request id taken from the caller.
const maxRequestIDLen = 128

// withRequestID gives every request an id: the caller's X-Request-Id when it
// is sane, else a fresh one. The response always carries it.
func (s *Server) withRequestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("X-Request-Id")
		if !saneRequestID(id) {
			id = herald.NewID(s.now())
		}
		w.Header()["X-Request-Id"] = []string{id} // canonical already: no Set
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), requestStateKey, &requestState{id: id})))
	})
}

// saneRequestID accepts 1 to 128 bytes of letters, digits and "-_.:", so a
// caller's id can go into logs and headers as it is.
func saneRequestID(id string) bool {
	if id == "" || len(id) > maxRequestIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		switch c := id[i]; {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_', c == '.', c == ':':
		default:
			return false
		}
	}
	return true
}

func requestIDFrom(ctx context.Context) string {
	if st := requestStateFrom(ctx); st != nil {
		return st.id
	}
	return ""
}

// trackBody notes whether the request body is read to its end, so that a
// refusal written before it was (see stopReadingBody) closes the connection
// instead of waiting for a body no one will read.
func trackBody(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength != 0 && r.Body != nil && r.Body != http.NoBody {
			r.Body = &trackedBody{ReadCloser: r.Body}
		}
		next.ServeHTTP(w, r)
	})
}

// trackedBody is a request body that knows whether it reached its end. It
// is read by one goroutine at a time, as any request body.
type trackedBody struct {
	io.ReadCloser
	eof bool
}

func (b *trackedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.eof = true
	}
	return n, err
}

// stopReadingBody makes a response written before the request body was
// read the last on its connection, and stops the server reading that body.
// Otherwise net/http reads up to 256 KiB of it before sending the response,
// for the connection's sake: a client that announced a body and sends
// nothing (or a byte at a time) would hold the refusal, and the connection,
// until http.read-timeout. With it, a 401 for a bad key goes out at once.
func stopReadingBody(w http.ResponseWriter, r *http.Request) {
	if b, ok := r.Body.(*trackedBody); !ok || b.eof {
		return
	}
	w.Header().Set("Connection", "close")
	// Fails only where there is no connection (tests' recorders).
	_ = http.NewResponseController(w).SetReadDeadline(time.Now())
}

// statusWriter records the status and size of a response for metrics and
// the access log. Unwrap lets http.ResponseController reach the original.
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (w *statusWriter) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// observe counts and times every request by route pattern (a bounded set)
// and writes the access log line at Debug.
func (s *Server) observe(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		defer func() {
			// The mux records the matched pattern on r; unknown routes
			// share one label so the label set stays bounded.
			route := r.Pattern
			if route == "" {
				route = unmatchedRoute
			}
			status := sw.status
			if status == 0 {
				status = http.StatusOK
			}
			elapsed := time.Since(start)
			rm := s.metrics.route(route)
			rm.requests(s.metrics.requests, status).Inc()
			rm.duration().Observe(elapsed.Seconds())
			if s.log.Enabled(r.Context(), slog.LevelDebug) {
				s.log.LogAttrs(r.Context(), slog.LevelDebug, "http request",
					slog.String("request_id", requestIDFrom(r.Context())),
					slog.String("method", r.Method),
					slog.String("path", r.URL.Path),
					slog.String("route", route),
					slog.Int("status", status),
					slog.Int64("bytes", sw.bytes),
					slog.Duration("duration", elapsed))
			}
		}()
		next.ServeHTTP(sw, r)
	})
}

// recoverPanics turns a handler panic into a logged 500 problem, so one bug
// does not take the connection (or the process) down with it.
func (s *Server) recoverPanics(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			v := recover()
			if v == nil {
				return
			}
			if v == http.ErrAbortHandler {
				panic(v) // the server's own signal to abort the response
			}
			s.log.LogAttrs(r.Context(), slog.LevelError, "handler panic",
				slog.String("request_id", requestIDFrom(r.Context())),
				slog.String("method", r.Method),
				slog.String("path", r.URL.Path),
				slog.String("panic", fmt.Sprint(v)),
				slog.String("stack", string(debug.Stack())))
			if sw, ok := w.(*statusWriter); ok && sw.status != 0 {
				panic(http.ErrAbortHandler) // headers are out: cut the response short
			}
			p, code := problemFor(nil) // logged above; a generic 500
			sendProblem(w, r, p, code)
		}()
		next.ServeHTTP(w, r)
	})
}
