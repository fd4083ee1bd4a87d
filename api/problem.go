package api

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/heraldhq/herald"
)

// problemContentType is the media type of every error response (RFC 9457).
const problemContentType = "application/problem+json"

// The API's own codes, for failures only HTTP has; no other layer reports
// them, so they are not in herald.
const (
	// codeMethodNotAllowed: a known path asked with the wrong method (405).
	codeMethodNotAllowed herald.Code = "method-not-allowed"
	// codeRequestTimeout: the request body did not arrive within
	// http.read-timeout (408).
	codeRequestTimeout herald.Code = "request-timeout"
)

// codeProblem returns the status, type and title for code: herald's
// (herald.ProblemFor), plus the API's own codes. A code neither knows comes
// back as herald.CodeInternal.
func codeProblem(code herald.Code) herald.Problem {
	switch code {
	case codeMethodNotAllowed:
		return herald.Problem{Code: code, Status: http.StatusMethodNotAllowed,
			Type: herald.ProblemTypeBase + string(code), Title: "Method not allowed"}
	case codeRequestTimeout:
		return herald.Problem{Code: code, Status: http.StatusRequestTimeout,
			Type: herald.ProblemTypeBase + string(code), Title: "Request timeout"}
	}
	return herald.ProblemFor(code)
}

// internalDetail is the only detail an internal error ever shows; the cause
// is in the log under the same request id.
const internalDetail = "internal error; the server log has the cause under this request id"

// problem is the RFC 9457 body, with Herald's field and request_id members.
type problem struct {
	Type      string `json:"type"`
	Title     string `json:"title"`
	Status    int    `json:"status"`
	Detail    string `json:"detail"`
	Field     string `json:"field,omitempty"`
	RequestID string `json:"request_id"`
	// retryAfter, when set, is answered as Retry-After (whole seconds,
	// at least one).
	retryAfter time.Duration
}

// problemFor turns any error into the problem the caller sees. Only
// *herald.Error carries caller-safe text; anything else, and any internal
// code, becomes a generic 500.
func problemFor(err error) (problem, herald.Code) {
	e, ok := errors.AsType[*herald.Error](err)
	if ok {
		if cp := codeProblem(e.Code); cp.Code != herald.CodeInternal {
			detail := e.Message
			if detail == "" {
				detail = cp.Title
			}
			return problem{
				Type:   cp.Type,
				Title:  cp.Title,
				Status: cp.Status,
				Detail: detail,
				Field:  e.Field,

				retryAfter: e.RetryAfter,
			}, cp.Code
		}
	}
	cp := herald.ProblemFor(herald.CodeInternal)
	return problem{
		Type:   cp.Type,
		Title:  cp.Title,
		Status: cp.Status,
		Detail: internalDetail,
	}, herald.CodeInternal
}

// writeProblem is the one place that writes application/problem+json. It
// logs the error once when the server is at fault: internal errors at Error
// level with the cause, other 5xx with a cause at Warn. A failure caused by
// the client going away is logged at Debug only.
func writeProblem(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	p, code := problemFor(err)
	p.RequestID = requestIDFrom(r.Context())

	switch {
	case r.Context().Err() != nil && errors.Is(err, context.Canceled):
		log.LogAttrs(r.Context(), slog.LevelDebug, "request canceled by client",
			slog.String("request_id", p.RequestID), slog.String("err", err.Error()))
	case code == herald.CodeInternal:
		log.LogAttrs(r.Context(), slog.LevelError, "internal error",
			slog.String("request_id", p.RequestID), slog.String("method", r.Method),
			slog.String("path", r.URL.Path), slog.String("err", err.Error()))
	case p.Status >= 500 && errors.Unwrap(err) != nil:
		log.LogAttrs(r.Context(), slog.LevelWarn, "request failed",
			slog.String("request_id", p.RequestID), slog.String("code", string(code)),
			slog.String("err", err.Error()))
	}

	sendProblem(w, r, p, code)
}

// sendProblem writes p as the response, adding the request id.
func sendProblem(w http.ResponseWriter, r *http.Request, p problem, code herald.Code) {
	p.RequestID = requestIDFrom(r.Context())
	body, mErr := marshalJSON(p)
	if mErr != nil { // cannot happen: every member is a string or an int
		body = []byte(`{"type":"` + herald.ProblemTypeBase + `internal","status":500}` + "\n")
	}
	h := w.Header()
	h.Set("Content-Type", problemContentType)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Del("Content-Length")
	stopReadingBody(w, r)
	if code == herald.CodeUnauthorized {
		h.Set("WWW-Authenticate", `Bearer realm="herald"`)
	}
	if p.retryAfter > 0 {
		h.Set("Retry-After", strconv.FormatInt(int64(max(1, math.Ceil(p.retryAfter.Seconds()))), 10))
	}
	w.WriteHeader(p.Status)
	_, _ = w.Write(body) // the client may be gone; nothing to do
}
