package stream

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"

	"github.com/heraldhq/herald"
)

// ProblemWriter answers a request with err as an RFC 9457 problem
// (application/problem+json). The API passes its own so that problems of
// streams and tokens look like every other; package stream has a
// compatible default.
type ProblemWriter func(w http.ResponseWriter, r *http.Request, err error)

// problem is the RFC 9457 body, in the API's shape, with the status, type
// and title of herald.ProblemFor. WebSocket error frames carry it too.
type problem struct {
	Type      string `json:"type"`
	Title     string `json:"title"`
	Status    int    `json:"status"`
	Detail    string `json:"detail"`
	Field     string `json:"field,omitempty"`
	RequestID string `json:"request_id,omitempty"`
}

// problemFor turns an error into what the client sees: only a
// *herald.Error carries client-safe text; anything else is a generic 500.
func problemFor(err error) (problem, herald.Code) {
	if e, ok := errors.AsType[*herald.Error](err); ok {
		if cp := herald.ProblemFor(e.Code); cp.Code != herald.CodeInternal {
			detail := e.Message
			if detail == "" {
				detail = cp.Title
			}
			return problem{Type: cp.Type, Title: cp.Title, Status: cp.Status,
				Detail: detail, Field: e.Field}, cp.Code
		}
	}
	cp := herald.ProblemFor(herald.CodeInternal)
	return problem{Type: cp.Type, Title: cp.Title, Status: cp.Status,
		Detail: "internal error; the server log has the cause"}, herald.CodeInternal
}

// defaultProblemWriter writes problems in the API's shape, taking the
// request id from the X-Request-Id response header the API's middleware
// sets, and logs internal errors once.
func defaultProblemWriter(log *slog.Logger) ProblemWriter {
	return func(w http.ResponseWriter, r *http.Request, err error) {
		p, code := problemFor(err)
		p.RequestID = w.Header().Get("X-Request-Id")
		if code == herald.CodeInternal {
			log.LogAttrs(r.Context(), slog.LevelError, "internal error",
				slog.String("request_id", p.RequestID), slog.String("method", r.Method),
				slog.String("path", r.URL.Path), slog.String("err", err.Error()))
		}
		body, _ := json.Marshal(p) // strings and an int always marshal
		h := w.Header()
		h.Set("Content-Type", "application/problem+json")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Del("Content-Length")
		if code == herald.CodeUnauthorized {
			h.Set("WWW-Authenticate", `Bearer realm="herald"`)
		}
		w.WriteHeader(p.Status)
		_, _ = w.Write(append(body, '\n'))
	}
}
