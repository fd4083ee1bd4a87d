package client

import (
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/heraldhq/herald"
)

// ProblemTypeBase starts the type URI of every problem Herald writes; the
// rest is the herald.Code ("https://herald.dev/problems/not-found").
const ProblemTypeBase = "https://herald.dev/problems/"

// Problem is an error response of the server: an RFC 9457 problem document,
// or, when the answer was not one (a proxy's error page, say), a Problem
// built from the HTTP status with a Detail that says so.
type Problem struct {
	Type      string `json:"type"`                 // URI naming the kind of problem; ProblemTypeBase + code for Herald
	Title     string `json:"title"`                // short, fixed per type
	Status    int    `json:"status"`               // the HTTP status of the response
	Detail    string `json:"detail,omitempty"`     // what went wrong, safe to show to a user
	Field     string `json:"field,omitempty"`      // the input at fault, for example "retention" or "events[3].data"
	RequestID string `json:"request_id,omitempty"` // the server's request id, for its logs
}

// Error returns "<detail> (field: <field>, status <status>, type <type>)",
// leaving out the parts that are empty, for example
// `topic "orders" not found (status 404, type https://herald.dev/problems/not-found)`.
func (p *Problem) Error() string {
	msg := p.Detail
	if msg == "" {
		msg = p.Title
	}
	if msg == "" {
		msg = http.StatusText(p.Status)
	}
	var b strings.Builder
	b.WriteString(msg)
	b.WriteString(" (")
	if p.Field != "" {
		b.WriteString("field: ")
		b.WriteString(p.Field)
		b.WriteString(", ")
	}
	b.WriteString("status ")
	b.WriteString(strconv.Itoa(p.Status))
	if p.Type != "" && p.Type != "about:blank" {
		b.WriteString(", type ")
		b.WriteString(p.Type)
	}
	b.WriteString(")")
	return b.String()
}

// Code returns the herald.Code of the problem: the end of a Herald problem
// type, or, for other types, the code that Herald maps to the status.
func (p *Problem) Code() herald.Code {
	if c, ok := strings.CutPrefix(p.Type, ProblemTypeBase); ok && c != "" {
		return herald.Code(c)
	}
	switch p.Status {
	case http.StatusBadRequest:
		return herald.CodeInvalid
	case http.StatusUnauthorized:
		return herald.CodeUnauthorized
	case http.StatusForbidden:
		return herald.CodeForbidden
	case http.StatusNotFound:
		return herald.CodeNotFound
	case http.StatusConflict:
		return herald.CodeConflict
	case http.StatusGone:
		return herald.CodeGone
	case http.StatusRequestEntityTooLarge:
		return herald.CodeTooLarge
	case http.StatusUnsupportedMediaType:
		return herald.CodeUnsupported
	case http.StatusTooManyRequests:
		return herald.CodeRateLimited
	case http.StatusServiceUnavailable:
		return herald.CodeUnavailable
	case http.StatusGatewayTimeout:
		return herald.CodeTimeout
	}
	if p.Status >= 400 && p.Status < 500 {
		return herald.CodeInvalid
	}
	return herald.CodeInternal
}

// Unwrap returns a *herald.Error with the problem's Code, Detail and Field,
// so herald.IsCode(err, herald.CodeNotFound) works on client errors.
func (p *Problem) Unwrap() error {
	return &herald.Error{Code: p.Code(), Message: p.Detail, Field: p.Field}
}

// decodeProblem reads an error response. It never fails: an answer that is
// not a problem document still becomes a Problem, from its status.
func decodeProblem(resp *http.Response, base string) *Problem {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxProblemBytes))
	ct := resp.Header.Get("Content-Type")
	mt, _, _ := mime.ParseMediaType(ct)

	var p Problem
	decoded := (mt == "application/problem+json" || mt == "application/json") &&
		json.Unmarshal(body, &p) == nil &&
		(p.Type != "" || p.Title != "" || p.Detail != "")
	if !decoded {
		p = Problem{Title: http.StatusText(resp.StatusCode), Detail: unexpectedDetail(resp, mt, body, base)}
	}
	// RFC 9457 makes the body's status advisory; the HTTP status is what
	// happened.
	p.Status = resp.StatusCode
	if p.RequestID == "" {
		p.RequestID = resp.Header.Get("X-Request-Id")
	}
	return &p
}

// unexpectedDetail describes an error response that is not a problem
// document, quoting a short plain-text body since proxies often explain
// themselves there.
func unexpectedDetail(resp *http.Response, mt string, body []byte, base string) string {
	what := "an empty body"
	if len(body) > 0 {
		what = "a body of type " + strconv.Quote(mt)
		if mt == "" {
			what = "a body without a type"
		}
	}
	d := fmt.Sprintf("unexpected response %s with %s, not a problem document, from %s (is it a Herald server?)",
		resp.Status, what, base)
	if mt == "text/plain" && utf8.Valid(body) {
		text := strings.Join(strings.Fields(string(body)), " ")
		if r := []rune(text); len(r) > 200 {
			text = string(r[:200]) + "..."
		}
		if text != "" {
			d += ": " + text
		}
	}
	return d
}
