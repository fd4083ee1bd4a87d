package client

import (
	"bytes"
	"encoding/json"
	"fmt"
	"mime"
	"strings"
	"time"

	"github.com/heraldhq/herald"
)

// The API writes times as RFC 3339 with milliseconds, in UTC, and durations
// in herald.ParseDuration form. These helpers convert both ways, so the
// types of this package marshal back to the JSON the API sent.

const wireTimeLayout = "2006-01-02T15:04:05.000Z07:00"

func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(wireTimeLayout)
}

func parseTime(field, s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%s: %w", field, err)
	}
	return t, nil
}

func formatDuration(d time.Duration) string {
	if d == 0 {
		return ""
	}
	return herald.FormatDuration(d)
}

func parseDuration(field, s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := herald.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", field, err)
	}
	return d, nil
}

// IsJSONContentType reports whether a media type is JSON: application/json
// or any type with the +json suffix, parameters ignored. The API sends such
// payloads inline as "data" when they are valid JSON.
func IsJSONContentType(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return false
	}
	return mt == "application/json" || strings.HasSuffix(mt, "+json")
}

// marshal encodes v as encoding/json does but without escaping <, > and &,
// so scopes such as "publish:orders.>" stay readable in printed JSON.
func marshal(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}
