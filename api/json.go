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
	"unicode/utf8"

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
	if mt, err := requestMediaType(r); err != nil {
		return err
	} else if mt != "" && !isJSONMediaType(mt) {
		return herald.Errorf(herald.CodeUnsupported, "the body must be application/json, not %q", r.Header.Get("Content-Type"))
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
// unknown fields and text that is not UTF-8 (which encoding/json would
// silently turn into U+FFFD, so a name or key would change). Field names in
// errors get the prefix (like "events[3].").
func unmarshalStrict(data []byte, v any, prefix string) error {
	if !utf8.Valid(data) {
		return invalidUTF8(data, prefix)
	}
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

// invalidUTF8 refuses JSON text that is not UTF-8 (RFC 8259 requires it),
// naming the member that holds the first bad byte.
func invalidUTF8(data []byte, prefix string) error {
	at := 0
	for at < len(data) {
		r, size := utf8.DecodeRune(data[at:])
		if r == utf8.RuneError && size <= 1 {
			break
		}
		at += size
	}
	field := jsonFieldAt(data, int64(at))
	if field != "" {
		field = prefix + field
	} else {
		field = strings.TrimSuffix(prefix, ".")
	}
	what := "the JSON body"
	if field != "" {
		what = field
	}
	return &herald.Error{Code: herald.CodeInvalid, Field: field,
		Message: fmt.Sprintf("%s is not valid UTF-8 (byte %d); send text as UTF-8, and other bytes base64-encoded where the API allows", what, at)}
}

// jsonFieldAt returns the path ("events[3].key") of the member of the JSON
// text data whose token holds byte offset at, "" for the top level.
func jsonFieldAt(data []byte, at int64) string {
	type frame struct {
		array   bool
		index   int    // arrays: the current element
		key     string // objects: the current member
		wantKey bool   // objects: the next string is a member name
	}
	var stack []frame
	path := func(key string) string {
		var b strings.Builder
		for _, f := range stack {
			switch {
			case f.array:
				fmt.Fprintf(&b, "[%d]", f.index)
			case f.key != "":
				if b.Len() > 0 {
					b.WriteByte('.')
				}
				b.WriteString(f.key)
			}
		}
		if key != "" {
			if b.Len() > 0 {
				b.WriteByte('.')
			}
			b.WriteString(key)
		}
		return b.String()
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	for {
		tok, err := dec.Token()
		if err != nil {
			return path("")
		}
		var top *frame
		if len(stack) > 0 {
			top = &stack[len(stack)-1]
		}
		name, isString := tok.(string)
		isKey := isString && top != nil && !top.array && top.wantKey
		if top != nil && top.array && tok != json.Delim(']') {
			top.index++
		}
		if dec.InputOffset() > at { // this token holds the byte
			if isKey {
				top.key = ""
				return path(name)
			}
			return path("")
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, frame{wantKey: true})
		case json.Delim('['):
			stack = append(stack, frame{array: true, index: -1})
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
			if n := len(stack); n > 0 && !stack[n-1].array {
				stack[n-1].wantKey = true
			}
		default:
			switch {
			case isKey:
				top.key, top.wantKey = name, false
			case top != nil && !top.array:
				top.wantKey = true
			}
		}
	}
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

// requestMediaType returns the media type of the request's Content-Type in
// lower case without its parameters, or "" when there is none. A value
// that does not parse as a media type (RFC 9110, section 8.3) is refused
// with 400 naming the field: it would otherwise be stored and sent on with
// the event, or silently read as "none".
func requestMediaType(r *http.Request) (string, error) {
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return "", nil
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err == nil && !strings.Contains(mt, "/") {
		// mime accepts a lone token, which is a disposition, not a type.
		err = errors.New("mime: no slash in the media type")
	}
	if err != nil {
		return "", &herald.Error{Code: herald.CodeInvalid, Field: "Content-Type", Err: err,
			Message: fmt.Sprintf("the Content-Type %q is not a media type such as application/json or text/plain; charset=utf-8", ct)}
	}
	return strings.ToLower(mt), nil
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
