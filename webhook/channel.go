package webhook

import (
	"context"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/channel"
)

// Config is a webhook subscription's channel config as stored: the
// endpoint, its static request headers and the signing secrets. Callers
// write url, headers and (at creation) secret; the previous secret is
// Herald's, set by a rotation.
type Config struct {
	URL     string            `json:"url"`
	Headers map[string]string `json:"headers,omitempty"`
	// Secret signs requests. PreviousSecret keeps signing too until
	// PreviousExpiresAt, so receivers can roll over.
	Secret            string    `json:"secret,omitempty"`
	PreviousSecret    string    `json:"previous_secret,omitempty"`
	PreviousExpiresAt time.Time `json:"previous_expires_at,omitzero"`
}

// ParseConfig reads a stored webhook config.
func ParseConfig(raw json.RawMessage) (Config, error) {
	var c Config
	if err := json.Unmarshal(raw, &c); err != nil {
		return Config{}, fmt.Errorf("webhook config: %w", err)
	}
	return c, nil
}

// Encode returns the config's canonical JSON.
func (c Config) Encode() json.RawMessage {
	b, _ := json.Marshal(c) // strings, a map of strings and a time: cannot fail
	return b
}

// ChannelConfig configures the webhook channel.
type ChannelConfig struct {
	// AllowPrivate lets subscriptions name loopback, private and other
	// refused addresses (see channel.CheckHost); the dial guard of the
	// Sender is configured apart, with the same setting.
	AllowPrivate bool
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Channel delivers events to HTTP endpoints as Standard Webhooks requests:
// the payload byte for byte, signed with the subscription's secrets, with
// the answer classified (2xx delivered, 410 gone, anything else a failure
// to retry, honouring Retry-After). Endpoints prove they agreed to receive
// by echoing a signed challenge (Verifier), and callers rotate the signing
// secret (Rotator). It is safe for concurrent use.
type Channel struct {
	sender *Sender
	cfg    ChannelConfig
}

var (
	_ channel.Channel  = (*Channel)(nil)
	_ channel.Verifier = (*Channel)(nil)
	_ channel.Rotator  = (*Channel)(nil)
)

// NewChannel returns the webhook channel sending through s.
func NewChannel(s *Sender, cfg ChannelConfig) *Channel {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Channel{sender: s, cfg: cfg}
}

// Name is "webhook".
func (c *Channel) Name() string { return herald.ChannelWebhook }

// VerificationType is the event type of verification challenges.
const VerificationType = "herald.verification"

// reservedHeaders are request headers a subscription may not set and a
// producer's headers never override: Herald writes them itself, or they
// belong to the transport. Names starting with "webhook-" or "herald-" are
// reserved too.
var reservedHeaders = map[string]bool{
	"content-type": true, "content-length": true, "host": true, "user-agent": true, "connection": true,
	"transfer-encoding": true, "te": true, "trailer": true, "upgrade": true, "keep-alive": true,
	"proxy-authorization": true, "proxy-connection": true,
}

// ReservedHeader reports whether a header name is Herald's or the
// transport's to set, so neither a producer's carried headers nor a
// subscription's static ones may override it.
func ReservedHeader(name string) bool {
	n := strings.ToLower(name)
	return reservedHeaders[n] || strings.HasPrefix(n, "webhook-") || strings.HasPrefix(n, "herald-")
}

// Validate checks a webhook config: an http or https URL the guard
// allows, static headers, and at creation an optional caller-chosen
// secret (a fresh one is made otherwise). On an update the stored secrets
// stay; a secret changes only by rotation. Errors name the member ("url",
// "headers", "secret").
func (c *Channel) Validate(_ context.Context, p channel.ValidateParams) (json.RawMessage, error) {
	var in struct {
		URL     string            `json:"url"`
		Headers map[string]string `json:"headers"`
		Secret  *string           `json:"secret"`
	}
	if err := channel.DecodeConfig(p.Config, &in); err != nil {
		return nil, err
	}
	if in.URL == "" {
		return nil, herald.FieldErrorf("url", "url is required: the webhook endpoint, http:// or https://")
	}
	if err := ValidateURL(in.URL, c.cfg.AllowPrivate); err != nil {
		return nil, err
	}
	headers, err := validateHeaders(in.Headers)
	if err != nil {
		return nil, err
	}
	out := Config{URL: in.URL, Headers: headers}
	if p.Previous != nil {
		prev, err := ParseConfig(p.Previous)
		if err != nil {
			return nil, err
		}
		if in.Secret != nil && *in.Secret != prev.Secret {
			return nil, herald.FieldErrorf("secret", "the signing secret changes only by rotation: POST /v1/subscriptions/{id}/secret/rotate")
		}
		out.Secret, out.PreviousSecret, out.PreviousExpiresAt = prev.Secret, prev.PreviousSecret, prev.PreviousExpiresAt
		return out.Encode(), nil
	}
	out.Secret = NewSecret()
	if in.Secret != nil {
		if out.Secret, err = ValidateSecret(*in.Secret); err != nil {
			return nil, err
		}
	}
	return out.Encode(), nil
}

// validateHeaders checks a subscription's static request headers and
// returns them with canonical names ("x-team" becomes "X-Team"); nil when
// there are none.
func validateHeaders(in map[string]string) (map[string]string, error) {
	if len(in) == 0 {
		return nil, nil
	}
	if len(in) > herald.MaxSubscriptionHeaders {
		return nil, herald.FieldErrorf("headers", "%d headers; the limit is %d", len(in), herald.MaxSubscriptionHeaders)
	}
	out := make(map[string]string, len(in))
	for name, value := range in {
		if len(name) > herald.MaxHeaderNameLen || !herald.ValidHeaderName(name) {
			return nil, herald.FieldErrorf("headers", "header name %q must be 1 to %d letters, digits or !#$%%&'*+-.^_`|~", name, herald.MaxHeaderNameLen)
		}
		if ReservedHeader(name) {
			return nil, herald.FieldErrorf("headers", "header %q is reserved: Herald or the transport sets it (webhook-*, herald-*, content-type, content-length, host, user-agent, connection, transfer-encoding, te, trailer, upgrade, keep-alive, proxy-authorization and proxy-connection are reserved)", name)
		}
		if len(value) > herald.MaxHeaderValueLen {
			return nil, herald.FieldErrorf("headers", "header %q value is %d bytes; the limit is %d", name, len(value), herald.MaxHeaderValueLen)
		}
		if !herald.ValidHeaderValue(value) {
			return nil, herald.FieldErrorf("headers", "header %q value must be valid UTF-8 without control characters", name)
		}
		canon := http.CanonicalHeaderKey(name)
		if _, dup := out[canon]; dup {
			return nil, herald.FieldErrorf("headers", "header %q is given twice (names are case-insensitive)", canon)
		}
		out[canon] = value
	}
	return out, nil
}

// minSecretDistinctBytes is how many different byte values a caller's
// secret must hold at least. 24 random bytes hold 23 on average and fewer
// than 12 about once in 10^13 tries; a placeholder ("whsec_AAAA...") or a
// repeated word holds a handful.
const minSecretDistinctBytes = 12

// ValidateSecret checks a signing secret chosen by a caller and returns it
// in canonical text form: "whsec_" and the standard padded base64 of
// MinSecretBytes to MaxSecretBytes random bytes. Letting the caller choose
// means a receiver configured with the secret before the subscription
// exists passes the first verification challenge, which Herald sends at
// once. Errors name the field "secret" and never contain it.
func ValidateSecret(text string) (string, error) {
	const how = `generate one with: echo "whsec_$(openssl rand -base64 32)"`
	if !strings.HasPrefix(text, SecretPrefix) {
		return "", herald.FieldErrorf("secret", "the secret must start with %q followed by the standard base64 of %d to %d random bytes; omit it to have Herald make one, or %s",
			SecretPrefix, MinSecretBytes, MaxSecretBytes, how)
	}
	key, err := ParseSecret(text)
	if err != nil {
		return "", err
	}
	var seen [256]bool
	distinct := 0
	for _, b := range key {
		if !seen[b] {
			seen[b], distinct = true, distinct+1
		}
	}
	if distinct < minSecretDistinctBytes {
		return "", herald.FieldErrorf("secret", "the secret does not look random: its %d bytes hold only %d different values; %s", len(key), distinct, how)
	}
	return SecretPrefix + base64.StdEncoding.EncodeToString(key), nil
}

// Public returns the URL and the static headers: never the secrets, which
// only the secret endpoints show.
func (c *Channel) Public(raw json.RawMessage) json.RawMessage {
	cfg, err := ParseConfig(raw)
	if err != nil {
		return json.RawMessage(`{}`)
	}
	b, _ := json.Marshal(struct {
		URL     string            `json:"url"`
		Headers map[string]string `json:"headers"`
	}{cfg.URL, cmpOr(cfg.Headers)})
	return b
}

func cmpOr(h map[string]string) map[string]string {
	if h == nil {
		return map[string]string{}
	}
	return h
}

// Destination is the URL's scheme, host and port ("https://hooks.example.com"):
// subscriptions to one receiving host share its part of the send slots,
// and system events name the endpoint by it, never by a path or query
// that may hold a secret.
func (c *Channel) Destination(raw json.RawMessage) string {
	cfg, err := ParseConfig(raw)
	if err != nil {
		return ""
	}
	if u, err := url.Parse(cfg.URL); err == nil && u.Host != "" {
		return (&url.URL{Scheme: u.Scheme, Host: strings.ToLower(u.Host)}).String()
	}
	return ""
}

// Reverify is true when the URL changed: the new endpoint has not agreed
// to receive.
func (c *Channel) Reverify(previous, next json.RawMessage) bool {
	a, errA := ParseConfig(previous)
	b, errB := ParseConfig(next)
	return errA != nil || errB != nil || a.URL != b.URL
}

// Secrets returns the config's signing secrets.
func (c *Channel) Secrets(raw json.RawMessage, now time.Time) channel.Secrets {
	cfg, err := ParseConfig(raw)
	if err != nil {
		return channel.Secrets{}
	}
	out := channel.Secrets{Secret: cfg.Secret}
	if cfg.PreviousSecret != "" && cfg.PreviousExpiresAt.After(now) {
		out.PreviousSecret, out.PreviousExpiresAt = cfg.PreviousSecret, cfg.PreviousExpiresAt
	}
	return out
}

// Rotate makes secret (or a fresh one) current and keeps the old one
// signing until now+grace.
func (c *Channel) Rotate(raw json.RawMessage, secret string, now time.Time, grace time.Duration) (json.RawMessage, channel.Secrets, error) {
	cfg, err := ParseConfig(raw)
	if err != nil {
		return nil, channel.Secrets{}, err
	}
	if secret == "" {
		secret = NewSecret()
	} else if secret, err = ValidateSecret(secret); err != nil {
		return nil, channel.Secrets{}, err
	}
	cfg.PreviousSecret, cfg.PreviousExpiresAt, cfg.Secret = cfg.Secret, now.Add(grace), secret
	return cfg.Encode(), channel.Secrets{Secret: cfg.Secret, PreviousSecret: cfg.PreviousSecret, PreviousExpiresAt: cfg.PreviousExpiresAt}, nil
}

// Open prepares the subscription's requests: its URL, headers and signing
// keys are read once, not per delivery.
func (c *Channel) Open(_ context.Context, sub *herald.Subscription) (channel.Sink, error) {
	cfg, err := ParseConfig(sub.Config)
	if err != nil {
		return nil, err
	}
	s := &sink{c: c, subID: sub.ID, url: cfg.URL, headers: cfg.Headers, timeout: sub.Timeout}
	key, err := ParseSecret(cfg.Secret)
	if err != nil {
		return nil, fmt.Errorf("subscription %s: signing secret: %w", sub.ID, err)
	}
	s.signers[0] = newSigner(key)
	if cfg.PreviousSecret != "" {
		if prev, err := ParseSecret(cfg.PreviousSecret); err == nil {
			s.signers[1], s.prevUntil = newSigner(prev), cfg.PreviousExpiresAt
		}
	}
	return s, nil
}

// sink sends one subscription's events.
type sink struct {
	c       *Channel
	subID   string
	url     string
	headers map[string]string
	timeout time.Duration
	// signers sign with the current secret and, until prevUntil, the
	// previous one (nil when there is none).
	signers   [2]*signer
	prevUntil time.Time
}

// keys returns the signers at now: the current secret's and, during a
// rotation's grace period, the previous one's.
func (s *sink) keys(now time.Time) []*signer {
	if s.signers[1] != nil && now.Before(s.prevUntil) {
		return s.signers[:]
	}
	return s.signers[:1]
}

// Deliver sends one event. The webhook-id is the event id, the same on
// every attempt, so receivers can drop duplicates.
func (s *sink) Deliver(ctx context.Context, ev *herald.Event, attempt int) herald.DeliveryResult {
	now := s.c.cfg.Now()
	h := newHeaders(10 + len(ev.Headers) + len(s.headers))
	for k, v := range ev.Headers {
		if !ReservedHeader(k) {
			h.set(http.CanonicalHeaderKey(k), v)
		}
	}
	for k, v := range s.headers {
		h.set(k, v) // canonical and not reserved: checked by Validate
	}
	ct := ev.ContentType
	if ct == "" {
		ct = "application/octet-stream"
	}
	h.set("Content-Type", ct)
	h.setSignature(s.keys(now), ev.ID, now, ev.Payload)
	h.set("Herald-Topic", ev.Topic)
	h.set("Herald-Seq", strconv.FormatInt(ev.Seq, 10))
	if ev.Type != "" {
		h.set("Herald-Event-Type", ev.Type)
	}
	if ev.Key != "" {
		h.set("Herald-Event-Key", ev.Key)
	}
	h.set("Herald-Attempt", strconv.Itoa(attempt))
	h.set("Herald-Subscription-Id", s.subID)
	res := s.c.sender.Send(ctx, Request{URL: s.url, Headers: h.h, Body: ev.Payload, Timeout: s.timeout})
	return result(res)
}

// SelfTimed tells the engine that Deliver keeps to the subscription's
// timeout by itself: Sender.Send puts it on the request.
func (s *sink) SelfTimed() {}

var _ channel.SelfTimed = (*sink)(nil)

// Close releases nothing: connections belong to the shared Sender.
func (s *sink) Close(context.Context) error { return nil }

// Parkable: a sink is its subscription's config, parsed (channel.Parkable).
func (s *sink) Parkable() {}

// Verify sends the subscription's verification challenge: a signed POST
// of {"type":"herald.verification","subscription_id":...,"challenge":...}.
// It is Delivered only when the endpoint answers 2xx with a JSON body whose
// "challenge" is the same token.
func (c *Channel) Verify(ctx context.Context, sub *herald.Subscription) herald.DeliveryResult {
	open, err := c.Open(ctx, sub)
	if err != nil {
		return herald.DeliveryResult{Outcome: herald.Failed, Err: ReasonSigning, Detail: err.Error()}
	}
	s := open.(*sink)
	now := c.cfg.Now()
	body, _ := json.Marshal(struct {
		Type           string `json:"type"`
		SubscriptionID string `json:"subscription_id"`
		Challenge      string `json:"challenge"`
	}{VerificationType, sub.ID, sub.Challenge})
	h := newHeaders(6)
	h.set("Content-Type", "application/json")
	h.setSignature(s.keys(now), herald.NewID(now), now, body)
	h.set("Herald-Event-Type", VerificationType)
	h.set("Herald-Subscription-Id", sub.ID)
	res := c.sender.Send(ctx, Request{URL: s.url, Headers: h.h, Body: body, Timeout: sub.Timeout})
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
func (h *headers) setSignature(signers []*signer, id string, now time.Time, body []byte) {
	h.set("Webhook-Id", id)
	h.set("Webhook-Timestamp", strconv.FormatInt(now.Unix(), 10))
	h.set("Webhook-Signature", signatureHeader(signers, id, now, body))
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
