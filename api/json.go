package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"reflect"
	"strings"
	"time"

	"github.com/heraldhq/herald"
)

// maxJSONBody bounds the JSON bodies of the management endpoints (topics,
// keys). Publishing has its own limits.
const maxJSONBody = 64 << 10

// timeFormat is RFC 3339 with milliseconds; times are written in UTC.
const timeFormat = "2006-01-02T15:04:05.000Z07:00"

func formatTime(t time.Time) string { return t.UTC().Format(timeFormat) }

// decodeJSON reads one JSON value of at most limit bytes from the body into
// v, refusing unknown fields and trailing data. An empty body leaves v
// untouched when allowEmpty is set. Errors are *herald.Error naming the
// field at fault where there is one.
func decodeJSON(w http.ResponseWriter, r *http.Request, limit int64, allowEmpty bool, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" && !isJSONMediaType(ct) {
		return herald.Errorf(herald.CodeUnsupported, "the body must be application/json, not %q", ct)
	}
	body, err := readBody(w, r, limit)
	if err != nil {
		return err
	}
	if len(strings.TrimSpace(string(body))) == 0 {
		if allowEmpty {
			return nil
		}
		return herald.Errorf(herald.CodeInvalid, "the request body is empty; a JSON object is required")
	}
	return unmarshalStrict(body, v, "")
}

// unmarshalStrict decodes exactly one JSON value from data into v, refusing
// unknown fields. Field names in errors get the prefix (like "events[3].").
func unmarshalStrict(data []byte, v any, prefix string) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(err, prefix)
	}
	if _, err := dec.Token(); err != io.EOF {
		return &herald.Error{Code: herald.CodeInvalid, Field: strings.TrimSuffix(prefix, "."),
			Message: "unexpected data after the JSON value"}
	}
	return nil
}

// jsonError turns a decoding error into a caller-safe *herald.Error.
func jsonError(err error, prefix string) error {
	field := func(f string) string {
		if f == "" {
			return strings.TrimSuffix(prefix, ".")
		}
		return prefix + f
	}
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return &herald.Error{Code: herald.CodeInvalid, Field: field(""), Message: fmt.Sprintf("malformed JSON at byte %d: %v", syn.Offset, syn), Err: err}
	case errors.As(err, &typ):
		return &herald.Error{Code: herald.CodeInvalid, Field: field(typ.Field), Message: fmt.Sprintf("%s must be a JSON %s, not %s", orValue(field(typ.Field)), jsonKind(typ.Type), typ.Value), Err: err}
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return &herald.Error{Code: herald.CodeInvalid, Field: field(""), Message: "the JSON value is incomplete", Err: err}
	}
	// encoding/json reports unknown fields only as text.
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		name = strings.Trim(name, `"`)
		return &herald.Error{Code: herald.CodeInvalid, Field: field(name), Message: fmt.Sprintf("unknown field %q", name), Err: err}
	}
	return &herald.Error{Code: herald.CodeInvalid, Field: field(""), Message: "malformed JSON body", Err: err}
}

func orValue(s string) string {
	if s == "" {
		return "the value"
	}
	return s
}

// jsonKind names the JSON kind a Go type decodes from.
func jsonKind(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64:
		return "number"
	case reflect.Bool:
		return "boolean"
	case reflect.Slice, reflect.Array:
		return "array"
	case reflect.Map, reflect.Struct:
		return "object"
	}
	return "value"
}

// readBody reads the whole body, refusing more than limit bytes with
// CodeTooLarge before reading when Content-Length says so.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	if r.ContentLength > limit {
		return nil, herald.Errorf(herald.CodeTooLarge, "the body is %d bytes; the limit is %d", r.ContentLength, limit)
	}
	// Trust the announced length for the first allocation, but not so far
	// that idle clients can pin much memory.
	size := 512
	if r.ContentLength > 0 {
		size = int(min(r.ContentLength, 1<<20))
	}
	buf := make([]byte, 0, size)
	rd := http.MaxBytesReader(w, r.Body, limit)
	for {
		n, err := rd.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
				return nil, herald.Errorf(herald.CodeTooLarge, "the body is over its limit of %d bytes", limit)
			}
			if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
				// The server's read deadline (http.read-timeout) passed.
				msg := fmt.Sprintf("the request body did not arrive in time: %d bytes came", len(buf))
				if r.ContentLength > 0 {
					msg += fmt.Sprintf(" of the %d announced", r.ContentLength)
				}
				return nil, &herald.Error{Code: codeRequestTimeout, Message: msg, Err: err}
			}
			return nil, &herald.Error{Code: herald.CodeInvalid, Message: "reading the request body failed", Err: err}
		}
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
	}
}

// writeJSON writes v as the JSON response with the status.
func writeJSON(w http.ResponseWriter, status int, v any) error {
	body, err := marshalJSON(v)
	if err != nil {
		return fmt.Errorf("encode %T response: %w", v, err)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body) // the client may be gone; nothing to do
	return nil
}

// marshalJSON encodes v with a final newline and without HTML escaping:
// responses are not embedded in HTML, and "<" should read as "<".
func marshalJSON(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// isJSONMediaType reports whether the media type is application/json or a
// +json structured syntax (application/cloudevents+json, ...).
func isJSONMediaType(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return false
	}
	return mt == "application/json" || strings.HasSuffix(mt, "+json")
}
