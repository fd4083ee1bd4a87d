package webhook

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/heraldhq/herald"
)

// Deliverer sends events and verification challenges to webhook endpoints:
// it builds the Standard Webhooks request (payload byte for byte, signed
// with the subscription's secrets) and classifies the answer. It is safe
// for concurrent use and implements the engine's Deliverer.
type Deliverer struct {
	sender *Sender
	now    func() time.Time
}

// NewDeliverer returns a Deliverer sending through s. now may be nil.
func NewDeliverer(s *Sender, now func() time.Time) *Deliverer {
	if now == nil {
		now = time.Now
	}
	return &Deliverer{sender: s, now: now}
}

// VerificationType is the event type of verification challenges.
const VerificationType = "herald.verification"

// reservedHeader reports whether a header name is Herald's or the
// transport's to set, so neither a producer's carried headers nor a
// subscription's static ones may override it.
func reservedHeader(name string) bool {
	n := strings.ToLower(name)
	switch n {
	case "content-type", "content-length", "host", "user-agent", "connection", "transfer-encoding",
		"te", "trailer", "upgrade", "keep-alive", "proxy-authorization", "proxy-connection":
		return true
	}
	return strings.HasPrefix(n, "webhook-") || strings.HasPrefix(n, "herald-")
}

// ReservedHeader reports whether a subscription may not set this static
// header (the API refuses it at create time).
func ReservedHeader(name string) bool { return reservedHeader(name) }

// Deliver sends one event. The webhook-id is the event id, the same on
// every attempt, so receivers can drop duplicates.
func (d *Deliverer) Deliver(ctx context.Context, sub *herald.Subscription, ev *herald.Event, attempt int) herald.DeliveryResult {
	now := d.now()
	keys, err := signingKeys(sub, now)
	if err != nil {
		return herald.DeliveryResult{Outcome: herald.Failed, Err: ReasonSigning, Detail: err.Error()}
	}
	h := newHeaders(10 + len(ev.Headers) + len(sub.Headers))
	for k, v := range ev.Headers {
		if !reservedHeader(k) {
			h.set(http.CanonicalHeaderKey(k), v)
		}
	}
	for k, v := range sub.Headers {
		if !reservedHeader(k) {
			h.set(http.CanonicalHeaderKey(k), v)
		}
	}
	ct := ev.ContentType
	if ct == "" {
		ct = "application/octet-stream"
	}
	h.set("Content-Type", ct)
	h.setSignature(keys, ev.ID, now, ev.Payload)
	h.set("Herald-Topic", ev.Topic)
	h.set("Herald-Seq", strconv.FormatInt(ev.Seq, 10))
	if ev.Type != "" {
		h.set("Herald-Event-Type", ev.Type)
	}
	if ev.Key != "" {
		h.set("Herald-Event-Key", ev.Key)
	}
	h.set("Herald-Attempt", strconv.Itoa(attempt))
	h.set("Herald-Subscription-Id", sub.ID)
	res := d.sender.Send(ctx, Request{URL: sub.URL, Headers: h.h, Body: ev.Payload, Timeout: sub.Timeout})
	return result(res)
}

// Challenge sends the subscription's verification challenge: a signed POST
// of {"type":"herald.verification","subscription_id":...,"challenge":...}.
// It is Delivered only when the endpoint answers 2xx with a JSON body whose
// "challenge" is the same token.
func (d *Deliverer) Challenge(ctx context.Context, sub *herald.Subscription) herald.DeliveryResult {
	now := d.now()
	keys, err := signingKeys(sub, now)
	if err != nil {
		return herald.DeliveryResult{Outcome: herald.Failed, Err: ReasonSigning, Detail: err.Error()}
	}
	body, _ := json.Marshal(struct {
		Type           string `json:"type"`
		SubscriptionID string `json:"subscription_id"`
		Challenge      string `json:"challenge"`
	}{VerificationType, sub.ID, sub.Challenge})
	h := newHeaders(6)
	h.set("Content-Type", "application/json")
	h.setSignature(keys, herald.NewID(now), now, body)
	h.set("Herald-Event-Type", VerificationType)
	h.set("Herald-Subscription-Id", sub.ID)
	res := d.sender.Send(ctx, Request{URL: sub.URL, Headers: h.h, Body: body, Timeout: sub.Timeout})
	out := result(res)
	if out.Outcome != herald.Delivered {
		if out.Outcome == herald.Gone {
			out.Outcome = herald.Failed
		}
		return out
	}
	var answer struct {
		Challenge string `json:"challenge"`
	}
	if json.Unmarshal(res.Excerpt, &answer) != nil || subtle.ConstantTimeCompare([]byte(answer.Challenge), []byte(sub.Challenge)) != 1 {
		out.Outcome = herald.Failed
		out.Err = ReasonChallengeMismatch
		out.Detail = fmt.Sprintf(`the endpoint answered %d but its body was not {"challenge":"<the token sent>"}`, res.StatusCode)
	}
	return out
}

// headers builds one request's header: every value is a one-element
// slice of a single backing array, one allocation for all of them instead
// of one per header.
type headers struct {
	h    http.Header
	vals []string
}

func newHeaders(n int) headers {
	return headers{h: make(http.Header, n), vals: make([]string, 0, n)}
}

// set sets the header named by key, which must be in canonical form.
func (h *headers) set(key, value string) {
	if len(h.vals) == cap(h.vals) {
		h.h[key] = []string{value}
		return
	}
	h.vals = append(h.vals, value)
	n := len(h.vals)
	h.h[key] = h.vals[n-1 : n : n]
}

// setSignature sets the three Standard Webhooks headers.
func (h *headers) setSignature(keys [][]byte, id string, now time.Time, body []byte) {
	h.set("Webhook-Id", id)
	h.set("Webhook-Timestamp", strconv.FormatInt(now.Unix(), 10))
	h.set("Webhook-Signature", SignatureHeader(keys, id, now, body))
}

// signingKeys returns the current secret's key and, during a rotation's
// grace period, the previous one.
func signingKeys(sub *herald.Subscription, now time.Time) ([][]byte, error) {
	cur, err := ParseSecret(sub.Secret)
	if err != nil {
		return nil, err
	}
	keys := [][]byte{cur}
	if sub.PreviousSecret != "" && now.Before(sub.PreviousExpiresAt) {
		if prev, err := ParseSecret(sub.PreviousSecret); err == nil {
			keys = append(keys, prev)
		}
	}
	return keys, nil
}

// result turns a Result into what the engine records: the outcome, and
// for a failure its reason (see Reason*) with the raw error as detail.
func result(res Result) herald.DeliveryResult {
	out := herald.DeliveryResult{
		StatusCode: res.StatusCode,
		Latency:    res.Latency,
		Response:   res.Excerpt,
		RetryAfter: res.RetryAfter,
	}
	switch Classify(res) {
	case OutcomeSuccess:
		out.Outcome = herald.Delivered
	case OutcomeGone:
		out.Outcome = herald.Gone
		out.Err = HTTPReason(res.StatusCode)
	default:
		out.Outcome = herald.Failed
		if res.Err != nil {
			out.Err, out.Detail = classifyErr(res.Err), res.Err.Error()
		} else {
			out.Err = HTTPReason(res.StatusCode)
		}
	}
	return out
}
