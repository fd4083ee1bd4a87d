package herald

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// Event limits.
const (
	MaxEventTypeLen      = 200
	MaxEventKeyLen       = 512
	MaxIdempotencyKeyLen = 512
	MaxEventIDLen        = 128
	MaxHeaders           = 32
	MaxHeaderNameLen     = 64
	MaxHeaderValueLen    = 1024
	MaxContentTypeLen    = 200
)

// Event is one message in a topic's log. The payload is opaque: it is stored
// and delivered byte for byte with its ContentType.
type Event struct {
	ID             string            // unique per topic; server-assigned UUIDv7 unless the producer gives one
	Topic          string            // the topic's name
	Seq            int64             // per topic, gap-free, increasing; assigned at commit
	Type           string            // producer-defined event type, e.g. "order.created"
	Key            string            // ordering and aggregation key
	IdempotencyKey string            // dedup key within the topic's dedup window
	ContentType    string            // the payload's media type
	Headers        map[string]string // producer headers carried to deliveries
	Payload        []byte
	Time           time.Time // when Herald accepted it, UTC

	// Delayed is set only by the promoter, never stored: the event is
	// pending in the delayed set (TimeStore) as (Topic, ID), and the
	// append removes it from there in its own transaction, so a delayed
	// event joins its log exactly once. When it is no longer pending
	// (cancelled, or promoted already by another node) the append stores
	// nothing for it: its result is a Duplicate with Seq 0.
	Delayed bool
}

// AppendResult is the outcome of appending one event.
type AppendResult struct {
	ID        string // the stored event's id; for a duplicate, the first event's id
	Seq       int64  // its seq; for a duplicate, the first event's seq
	Duplicate bool   // the idempotency key or the event id was seen within the dedup window; nothing was stored
	Err       error  // non-nil: this event was not stored (for example CodeNotFound: no such topic)
}

// ErrAppendConflict is what Store.Append returns, with its results, when an
// event reuses the id of a different event of its topic within the dedup
// window: nothing was stored, and the results say which events failed.
var ErrAppendConflict = &Error{Code: CodeConflict, Message: "an event reused the id of a different event; nothing was stored"}

// EventIDConflict is the error of an event whose ID already names the
// event at seq of its topic, within the dedup window, with another
// payload. Both stores return it, so the API says the same whichever runs.
func EventIDConflict(e *Event, seq int64) *Error {
	return &Error{Code: CodeConflict, Field: "id", Message: fmt.Sprintf(
		"event id %s already names event %d of topic %s, which has a different payload: an event id is unique within its topic for the dedup window; send the same payload to retry it, or choose a new id",
		e.ID, seq, e.Topic)}
}

// ValidateEvent checks the producer-set metadata of e against the limits.
// It does not check the payload size, which is the topic's to set.
// Everything a webhook delivery carries as a request header (the key, the
// content type, the headers) must pass ValidHeaderName and
// ValidHeaderValue, so an accepted event can always be sent.
func ValidateEvent(e *Event) error {
	switch {
	case len(e.ID) > MaxEventIDLen:
		return FieldErrorf("id", "event id is %d bytes; the limit is %d", len(e.ID), MaxEventIDLen)
	case !printable(e.ID) || strings.ContainsRune(e.ID, '.'):
		// No '.': webhooks sign "id.timestamp.body", which a dot would make ambiguous.
		return FieldErrorf("id", "event id must be printable ASCII without spaces or dots")
	case len(e.Type) > MaxEventTypeLen:
		return FieldErrorf("type", "event type is %d bytes; the limit is %d", len(e.Type), MaxEventTypeLen)
	case !printable(e.Type):
		return FieldErrorf("type", "event type must be printable ASCII without spaces")
	case len(e.Key) > MaxEventKeyLen:
		return FieldErrorf("key", "event key is %d bytes; the limit is %d", len(e.Key), MaxEventKeyLen)
	case !ValidHeaderValue(e.Key):
		return FieldErrorf("key", "event key must be valid UTF-8 without control characters: webhooks carry it as the Herald-Event-Key header")
	case len(e.IdempotencyKey) > MaxIdempotencyKeyLen:
		return FieldErrorf("idempotency_key", "idempotency key is %d bytes; the limit is %d", len(e.IdempotencyKey), MaxIdempotencyKeyLen)
	case !cleanText(e.IdempotencyKey):
		return FieldErrorf("idempotency_key", "idempotency key must be valid UTF-8 without NUL bytes")
	case len(e.ContentType) > MaxContentTypeLen:
		return FieldErrorf("content_type", "content type is %d bytes; the limit is %d", len(e.ContentType), MaxContentTypeLen)
	case !ValidHeaderValue(e.ContentType):
		return FieldErrorf("content_type", "content type must be valid UTF-8 without control characters: webhooks carry it as the Content-Type header")
	case len(e.Headers) > MaxHeaders:
		return FieldErrorf("headers", "%d headers; the limit is %d", len(e.Headers), MaxHeaders)
	}
	for k, v := range e.Headers {
		if len(k) > MaxHeaderNameLen || !ValidHeaderName(k) {
			return FieldErrorf("headers", "header name %q must be 1 to %d letters, digits or !#$%%&'*+-.^_`|~", k, MaxHeaderNameLen)
		}
		if len(v) > MaxHeaderValueLen {
			return FieldErrorf("headers", "header %q value is %d bytes; the limit is %d", k, len(v), MaxHeaderValueLen)
		}
		if !ValidHeaderValue(v) {
			return FieldErrorf("headers", "header %q value must be valid UTF-8 without control characters (a tab is allowed)", k)
		}
	}
	return nil
}

// cleanText reports whether s can be stored as text by every store.
func cleanText(s string) bool { return utf8.ValidString(s) && !strings.ContainsRune(s, 0) }

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

// NewID returns a UUIDv7 string: 48 bits of Unix milliseconds, then random
// bits, so ids sort roughly by time and index well.
func NewID(now time.Time) string {
	var u [16]byte
	_, _ = rand.Read(u[6:]) // crypto/rand.Read never fails
	binary.BigEndian.PutUint64(u[0:8], uint64(now.UnixMilli())<<16|uint64(binary.BigEndian.Uint16(u[6:8])))
	u[6] = 0x70 | u[6]&0x0f // version 7
	u[8] = 0x80 | u[8]&0x3f // RFC 9562 variant
	var s [36]byte
	hex.Encode(s[0:8], u[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], u[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], u[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], u[8:10])
	s[23] = '-'
	hex.Encode(s[24:], u[10:])
	return string(s[:])
}
