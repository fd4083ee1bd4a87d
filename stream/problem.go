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

// problemTypeBase starts every problem type URI; the herald.Code ends it.
// It is the API's (api/problem.go).
const problemTypeBase = "https://herald.dev/problems/"

// problem is the RFC 9457 body, in the API's shape. WebSocket error
// frames carry it too.
type problem struct {
	Type      string `json:"type"`
	Title     string `json:"title"`
	Status    int    `json:"status"`
	Detail    string `json:"detail"`
	Field     string `json:"field,omitempty"`
	RequestID string `json:"request_id,omitempty"`
}

var codeStatus = map[herald.Code]struct {
	status int
	title  string
}{
	herald.CodeInvalid:      {http.StatusBadRequest, "Invalid request"},
	herald.CodeUnauthorized: {http.StatusUnauthorized, "Unauthorized"},
	herald.CodeForbidden:    {http.StatusForbidden, "Forbidden"},
	herald.CodeNotFound:     {http.StatusNotFound, "Not found"},
	herald.CodeConflict:     {http.StatusConflict, "Conflict"},
	herald.CodeGone:         {http.StatusGone, "Gone"},
	herald.CodeTooLarge:     {http.StatusRequestEntityTooLarge, "Content too large"},
	herald.CodeUnsupported:  {http.StatusUnsupportedMediaType, "Unsupported media type"},
	herald.CodeRateLimited:  {http.StatusTooManyRequests, "Too many requests"},
	herald.CodeInternal:     {http.StatusInternalServerError, "Internal error"},
	herald.CodeUnavailable:  {http.StatusServiceUnavailable, "Service unavailable"},
	herald.CodeTimeout:      {http.StatusGatewayTimeout, "Timeout"},
}

// problemFor turns an error into what the client sees: only a
// *herald.Error carries client-safe text; anything else is a generic 500.
func problemFor(err error) (problem, herald.Code) {
	if e, ok := errors.AsType[*herald.Error](err); ok && e.Code != herald.CodeInternal {
		if cs, known := codeStatus[e.Code]; known {
			detail := e.Message
			if detail == "" {
				detail = cs.title
			}
			return problem{Type: problemTypeBase + string(e.Code), Title: cs.title, Status: cs.status,
				Detail: detail, Field: e.Field}, e.Code
		}
	}
	cs := codeStatus[herald.CodeInternal]
	return problem{Type: problemTypeBase + string(herald.CodeInternal), Title: cs.title, Status: cs.status,
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
