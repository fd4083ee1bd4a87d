package stream

import (
	"errors"

	"github.com/heraldhq/herald"
)

// problem is the RFC 9457 body, in the API's shape, with the status, type
// and title of herald.ProblemFor, that streams carry in their own
// protocol: WebSocket error frames and an SSE stream's last event. Errors
// before a stream starts are the API's to write.
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
