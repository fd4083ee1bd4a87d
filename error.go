package herald

import (
	"errors"
	"fmt"
	"time"
)

// Code classifies a failure reported to a caller. It picks the HTTP status
// and the stable problem type (see ProblemFor); stores translate driver
// errors into codes so every backend reports the same code for the same
// failure.
type Code string

// The codes. Their string values are part of the API: they end the problem
// type URI (for example https://herald.dev/problems/not-found).
const (
	CodeInvalid      Code = "invalid"      // the input is malformed or out of range
	CodeUnauthorized Code = "unauthorized" // no credentials, or unknown ones
	CodeForbidden    Code = "forbidden"    // credentials lack the scope
	CodeNotFound     Code = "not-found"    // the named thing does not exist
	CodeConflict     Code = "conflict"     // the state does not allow it
	CodeTooLarge     Code = "too-large"    // a body or payload over its limit
	CodeRateLimited  Code = "rate-limited" // too many requests; try later
	CodeUnavailable  Code = "unavailable"  // shutting down or overloaded; try later
	CodeInternal     Code = "internal"     // a bug or an outside failure
	CodeUnsupported  Code = "unsupported"  // a media type or feature not accepted
	CodeGone         Code = "gone"         // existed once, no longer retained
	CodeTimeout      Code = "timeout"      // the operation ran past its deadline
)

// Error is a failure reported to a caller. Code picks the status and problem
// type; Message is safe to show to the caller; Field names the input at
// fault, if any; Err is the cause, for logs only and never shown.
// RetryAfter, for CodeRateLimited and CodeUnavailable, is when the caller
// may try again (the API's Retry-After); zero says nothing.
type Error struct {
	Code       Code
	Message    string
	Field      string
	Err        error
	RetryAfter time.Duration
}

func (e *Error) Error() string {
	switch {
	case e.Err != nil && e.Message != "":
		return fmt.Sprintf("%s: %v", e.Message, e.Err)
	case e.Err != nil:
		return e.Err.Error()
	default:
		return e.Message
	}
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error with the code and a formatted, caller-safe message.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// FieldErrorf returns a CodeInvalid *Error that names the field at fault.
func FieldErrorf(field, format string, args ...any) *Error {
	return &Error{Code: CodeInvalid, Field: field, Message: fmt.Sprintf(format, args...)}
}

// ErrorCode returns the code of the first *Error in err's chain, or
// CodeInternal when there is none (and "" for a nil error).
func ErrorCode(err error) Code {
	if err == nil {
		return ""
	}
	if e, ok := errors.AsType[*Error](err); ok {
		return e.Code
	}
	return CodeInternal
}

// IsCode reports whether err carries the code.
func IsCode(err error, code Code) bool { return err != nil && ErrorCode(err) == code }
