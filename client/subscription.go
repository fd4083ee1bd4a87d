package client

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/webhook"
)

// WebhookTolerance is how far a webhook's timestamp may be from the
// receiver's clock for VerifyWebhook to accept it.
const WebhookTolerance = 5 * time.Minute

// VerifyWebhook checks a webhook request Herald sent to a receiver: the
// Standard Webhooks headers are present, webhook-timestamp is within
// WebhookTolerance of time.Now, and one of the signatures in
// webhook-signature is the HMAC of the body under secret (the
// subscription's "whsec_..." secret). body must be the raw bytes received,
// before any decoding. It returns nil when the request is genuine; errors
// wrap webhook.ErrMissingHeaders, ErrInvalidTimestamp, ErrTimestampTooOld,
// ErrTimestampTooNew or ErrNoMatchingSignature (CodeUnauthorized), or are
// CodeInvalid for a malformed secret.
func VerifyWebhook(secret string, header http.Header, body []byte) error {
	return webhook.Verify(secret, header, body, time.Now(), WebhookTolerance)
}

// SubscriptionSpec is a new subscription. Zero settings are left out of
// the request and the server applies its defaults: a webhook,
// herald.DefaultRetryPolicy, timeout 15s, 16 deliveries in flight, no rate
// limit, unordered, never expiring, verified by challenge, starting now.
//
// A webhook takes URL, Headers and Secret (or the same in Config); any
// other channel takes its settings in Config (docs/channels.md).
type SubscriptionSpec struct {
	Topic   string // a topic name, or a pattern such as "orders.*" or "orders.>"
	Channel string // "webhook" (the default), "kafka", "nats", "amqp", "mqtt", "redis", ...
	// Config is the channel's settings as a JSON object.
	Config      json.RawMessage
	URL         string // a webhook's endpoint, http:// or https://
	Description string
	// Filter is a filter in Herald's filter language (package filter), as
	// JSON; nil delivers every event.
	Filter  json.RawMessage
	Headers map[string]string // static request headers
	// Retry is the retry schedule; zero fields take the defaults.
	Retry            herald.RetryPolicy
	Timeout          time.Duration
	MaxInFlight      int
	RateLimit        float64 // requests per second; 0 is unlimited
	Ordered          bool    // per-key FIFO
	ExpiresAfterIdle time.Duration
	// Verification is "" or herald.VerifyChallenge (the endpoint must echo
	// a challenge), or herald.VerifyNone (admin keys only: active at once).
	Verification string
	// Start is where delivery starts in the topics that exist now: the zero
	// value is now; Earliest, Seq (single topics only) or Time otherwise.
	Start herald.StartPosition
	// Secret is a signing secret of the caller's own ("whsec_" and the
	// base64 of 24 to 64 random bytes, as webhook.NewSecret makes); "" has
	// the server make one. Choosing it lets a receiver be configured before
	// the subscription exists, so it passes the first verification
	// challenge, which the server sends at once.
	Secret string
}

// Subscription is a subscription as the server reports it. It marshals to
// and from the API's JSON form.
type Subscription struct {
	ID      string // "sub_..."
	Topic   string
	Channel string
	// Config is the channel's settings, without secrets.
	Config           json.RawMessage
	URL              string            // a webhook's endpoint, as in Config
	Headers          map[string]string // a webhook's static request headers, as in Config
	Description      string
	Filter           json.RawMessage // canonical filter JSON; nil: every event
	Retry            herald.RetryPolicy
	Timeout          time.Duration
	MaxInFlight      int
	RateLimit        float64
	Ordered          bool
	ExpiresAfterIdle time.Duration // 0: never
	State            herald.SubscriptionState
	StateReason      string // why it is paused, disabled, failed or pending
	// StateReasonDetail is the raw cause behind StateReason (a resolver's
	// or a dialer's error, naming hosts and addresses); only admin keys
	// are shown it.
	StateReasonDetail string
	VerifyDeadline    time.Time // pending only
	CreatedAt         time.Time
	UpdatedAt         time.Time
	LastSuccessAt     time.Time
	FailingSince      time.Time
	LastActivityAt    time.Time
	// Secret is the signing secret; set only by CreateSubscription (see
	// GetSecret).
	Secret string
	// Stats is set only by GetSubscription.
	Stats *SubscriptionStats
}

// SubscriptionStats is a subscription's delivery backlog, and its totals
// since it was created (written about once a second by the node
// delivering it).
type SubscriptionStats struct {
	Lag         int64 `json:"lag"`          // events not yet settled, over all its topics
	Retries     int64 `json:"retries"`      // events in its retry set
	DeadLetters int64 `json:"dead_letters"` // events that used up their retries
	Delivered   int64 `json:"delivered"`    // successful deliveries
	Failed      int64 `json:"failed"`       // failed attempts
	// LatencyMS estimates quantiles of the successful deliveries' latency.
	LatencyMS struct {
		P50 float64 `json:"p50_ms"`
		P90 float64 `json:"p90_ms"`
		P99 float64 `json:"p99_ms"`
	} `json:"latency_ms"`
}

type retryJSON struct {
	MaxAttempts int    `json:"max_attempts,omitempty"`
	Initial     string `json:"initial,omitempty"`
	Max         string `json:"max,omitempty"`
}

func toRetryJSON(p herald.RetryPolicy) retryJSON {
	return retryJSON{MaxAttempts: p.MaxAttempts, Initial: formatDuration(p.Initial), Max: formatDuration(p.Max)}
}

func (r retryJSON) policy() (herald.RetryPolicy, error) {
	p := herald.RetryPolicy{MaxAttempts: r.MaxAttempts}
	var err error
	if p.Initial, err = parseDuration("retry.initial", r.Initial); err != nil {
		return p, err
	}
	p.Max, err = parseDuration("retry.max", r.Max)
	return p, err
}

type subscriptionJSON struct {
	ID                string             `json:"id"`
	Topic             string             `json:"topic"`
	Channel           string             `json:"channel"`
	Config            json.RawMessage    `json:"config"`
	URL               string             `json:"url,omitempty"`
	Description       string             `json:"description"`
	Filter            json.RawMessage    `json:"filter,omitempty"`
	Headers           *map[string]string `json:"headers,omitempty"` // webhooks only
	Retry             retryJSON          `json:"retry"`
	Timeout           string             `json:"timeout"`
	MaxInFlight       int                `json:"max_in_flight"`
	RateLimit         float64            `json:"rate_limit"`
	Ordered           bool               `json:"ordered"`
	ExpiresAfterIdle  string             `json:"expires_after_idle,omitempty"`
	State             string             `json:"state"`
	StateReason       string             `json:"state_reason,omitempty"`
	StateReasonDetail string             `json:"state_reason_detail,omitempty"`
	VerifyDeadline    string             `json:"verify_deadline,omitempty"`
	CreatedAt         string             `json:"created_at"`
	UpdatedAt         string             `json:"updated_at"`
	LastSuccessAt     string             `json:"last_success_at,omitempty"`
	FailingSince      string             `json:"failing_since,omitempty"`
	LastActivityAt    string             `json:"last_activity_at,omitempty"`
	Secret            string             `json:"secret,omitempty"`
	Stats             *SubscriptionStats `json:"stats,omitempty"`
}

// MarshalJSON writes the API's form of a subscription.
func (s Subscription) MarshalJSON() ([]byte, error) {
	var headers *map[string]string
	if s.Headers != nil || s.Channel == "" || s.Channel == herald.ChannelWebhook {
		h := s.Headers
		if h == nil {
			h = map[string]string{}
		}
		headers = &h
	}
	config := s.Config
	if config == nil {
		config = json.RawMessage(`{}`)
	}
	return marshal(subscriptionJSON{
		ID: s.ID, Topic: s.Topic, Channel: s.Channel, Config: config, URL: s.URL, Description: s.Description, Filter: s.Filter,
		Headers: headers, Retry: toRetryJSON(s.Retry), Timeout: formatDuration(s.Timeout),
		MaxInFlight: s.MaxInFlight, RateLimit: s.RateLimit, Ordered: s.Ordered,
		ExpiresAfterIdle: formatDuration(s.ExpiresAfterIdle), State: string(s.State), StateReason: s.StateReason,
		StateReasonDetail: s.StateReasonDetail,
		VerifyDeadline:    formatTime(s.VerifyDeadline), CreatedAt: formatTime(s.CreatedAt), UpdatedAt: formatTime(s.UpdatedAt),
		LastSuccessAt: formatTime(s.LastSuccessAt), FailingSince: formatTime(s.FailingSince),
		LastActivityAt: formatTime(s.LastActivityAt), Secret: s.Secret, Stats: s.Stats,
	})
}

// UnmarshalJSON reads the API's form of a subscription.
func (s *Subscription) UnmarshalJSON(b []byte) error {
	var w subscriptionJSON
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	out := Subscription{
		ID: w.ID, Topic: w.Topic, Channel: w.Channel, Config: w.Config, URL: w.URL, Description: w.Description,
		MaxInFlight: w.MaxInFlight, RateLimit: w.RateLimit, Ordered: w.Ordered,
		State: herald.SubscriptionState(w.State), StateReason: w.StateReason, StateReasonDetail: w.StateReasonDetail, Secret: w.Secret, Stats: w.Stats,
	}
	if w.Headers != nil {
		out.Headers = *w.Headers
	}
	if len(w.Filter) > 0 && string(w.Filter) != "null" {
		out.Filter = w.Filter
	}
	var err error
	if out.Retry, err = w.Retry.policy(); err != nil {
		return err
	}
	if out.Timeout, err = parseDuration("timeout", w.Timeout); err != nil {
		return err
	}
	if out.ExpiresAfterIdle, err = parseDuration("expires_after_idle", w.ExpiresAfterIdle); err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		text string
		dst  *time.Time
	}{
		{"verify_deadline", w.VerifyDeadline, &out.VerifyDeadline},
		{"created_at", w.CreatedAt, &out.CreatedAt},
		{"updated_at", w.UpdatedAt, &out.UpdatedAt},
		{"last_success_at", w.LastSuccessAt, &out.LastSuccessAt},
		{"failing_since", w.FailingSince, &out.FailingSince},
		{"last_activity_at", w.LastActivityAt, &out.LastActivityAt},
	} {
		if *f.dst, err = parseTime(f.name, f.text); err != nil {
			return err
		}
	}
	*s = out
	return nil
}

// SubscriptionPage is one page of ListSubscriptions.
type SubscriptionPage struct {
	Subscriptions []Subscription `json:"subscriptions"`
	NextCursor    string         `json:"next_cursor,omitempty"` // "" on the last page
}

// SubscriptionListOptions select the subscriptions ListSubscriptions
// returns. Zero fields select everything, from the first page, 100 at a
// time.
type SubscriptionListOptions struct {
	Cursor  string                   // from SubscriptionPage.NextCursor
	Limit   int                      // 1 to 1000; 0: the server's default (100)
	State   herald.SubscriptionState // only this state
	Topic   string                   // only subscriptions whose topic or pattern is exactly this
	Channel string                   // only subscriptions of this channel
}

// startJSON is the wire form of a start position: absent for now.
func startJSON(p herald.StartPosition) json.RawMessage {
	switch {
	case p.Earliest:
		return json.RawMessage(`"earliest"`)
	case p.Seq > 0:
		return json.RawMessage(strconv.FormatInt(p.Seq, 10))
	case !p.Time.IsZero():
		return json.RawMessage(strconv.Quote(p.Time.UTC().Format(time.RFC3339Nano)))
	}
	return nil
}

// CreateSubscription creates a webhook subscription and returns it with its
// signing secret (spec.Secret when given). Unless the spec says herald.VerifyNone it is pending:
// Herald sends the endpoint a challenge and delivers nothing until it is
// answered (or VerifySubscription confirms the token). It needs a key with
// a subscribe scope that covers the topic. Invalid settings are a *Problem
// with status 400 naming the field, such as "url", "retry.max" or "secret".
func (c *Client) CreateSubscription(ctx context.Context, spec SubscriptionSpec) (Subscription, error) {
	var filter json.RawMessage
	if len(bytes.TrimSpace(spec.Filter)) > 0 {
		filter = spec.Filter
	}
	var retry *retryJSON
	if spec.Retry != (herald.RetryPolicy{}) {
		retry = new(toRetryJSON(spec.Retry))
	}
	var maxInFlight *int
	if spec.MaxInFlight != 0 {
		maxInFlight = new(spec.MaxInFlight)
	}
	body, hdr, err := jsonBody(struct {
		Topic            string            `json:"topic"`
		Channel          string            `json:"channel,omitempty"`
		Config           json.RawMessage   `json:"config,omitempty"`
		URL              string            `json:"url,omitempty"`
		Description      string            `json:"description,omitempty"`
		Filter           json.RawMessage   `json:"filter,omitempty"`
		Headers          map[string]string `json:"headers,omitempty"`
		Retry            *retryJSON        `json:"retry,omitempty"`
		Timeout          string            `json:"timeout,omitempty"`
		MaxInFlight      *int              `json:"max_in_flight,omitempty"`
		RateLimit        float64           `json:"rate_limit,omitempty"`
		Ordered          bool              `json:"ordered,omitempty"`
		ExpiresAfterIdle string            `json:"expires_after_idle,omitempty"`
		Verification     string            `json:"verification,omitempty"`
		Start            json.RawMessage   `json:"start,omitempty"`
		Secret           string            `json:"secret,omitempty"`
	}{
		Topic: spec.Topic, Channel: spec.Channel, Config: spec.Config, URL: spec.URL, Description: spec.Description, Filter: filter, Headers: spec.Headers,
		Retry: retry, Timeout: formatDuration(spec.Timeout), MaxInFlight: maxInFlight, RateLimit: spec.RateLimit,
		Ordered: spec.Ordered, ExpiresAfterIdle: formatDuration(spec.ExpiresAfterIdle),
		Verification: spec.Verification, Start: startJSON(spec.Start), Secret: spec.Secret,
	})
	if err != nil {
		return Subscription{}, err
	}
	var s Subscription
	_, err = c.do(ctx, request{method: http.MethodPost, path: "/v1/subscriptions", header: hdr, body: body, out: &s})
	return s, err
}

// ListSubscriptions returns one page of the subscriptions the key may
// manage (all of them for an admin key), in id order.
func (c *Client) ListSubscriptions(ctx context.Context, o SubscriptionListOptions) (SubscriptionPage, error) {
	q := url.Values{}
	if o.Cursor != "" {
		q.Set("cursor", o.Cursor)
	}
	if o.Limit != 0 {
		q.Set("limit", strconv.Itoa(o.Limit))
	}
	if o.State != "" {
		q.Set("state", string(o.State))
	}
	if o.Channel != "" {
		q.Set("channel", o.Channel)
	}
	if o.Topic != "" {
		q.Set("topic", o.Topic)
	}
	var p SubscriptionPage
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/v1/subscriptions", query: q, out: &p})
	return p, err
}

// subPath returns the escaped path of a subscription, with suffix.
func subPath(id, suffix string) (string, error) {
	seg, err := segment("id", id)
	if err != nil {
		return "", err
	}
	return "/v1/subscriptions/" + seg + suffix, nil
}

// subCall sends a request about one subscription and decodes the answer
// into out (nil: none).
func (c *Client) subCall(ctx context.Context, method, id, suffix string, in, out any) error {
	path, err := subPath(id, suffix)
	if err != nil {
		return err
	}
	r := request{method: method, path: path, out: out}
	if in != nil {
		if r.body, r.header, err = jsonBody(in); err != nil {
			return err
		}
	}
	_, err = c.do(ctx, r)
	return err
}

// GetSubscription returns the subscription with its Stats (without its
// secret). A missing subscription is a *Problem with status 404; one the
// key may not manage, 403.
func (c *Client) GetSubscription(ctx context.Context, id string) (Subscription, error) {
	var s Subscription
	err := c.subCall(ctx, http.MethodGet, id, "", nil, &s)
	return s, err
}

// SubscriptionPatch changes some settings of a subscription; nil fields
// stay as they are. It is sent as a JSON merge patch.
type SubscriptionPatch struct {
	// Config merges into the channel's settings as a JSON merge patch
	// (RFC 7396): members given replace those stored, a null removes one,
	// the rest stay (secrets included).
	Config      json.RawMessage
	URL         *string
	Description *string
	// Filter replaces the filter; the JSON null ("null") removes it.
	Filter json.RawMessage
	// Headers sets the named headers, or removes those with a nil value;
	// headers not named stay.
	Headers map[string]*string
	// Retry changes the non-zero fields of the retry policy.
	Retry            *herald.RetryPolicy
	Timeout          *time.Duration
	MaxInFlight      *int
	RateLimit        *float64
	Ordered          *bool
	ExpiresAfterIdle *time.Duration // a pointer to 0 removes the expiry
	// Verification is herald.VerifyNone (admin keys only) to take a new URL
	// as verified (a pending or failed subscription becomes active); by
	// default a new URL must be verified again.
	Verification string
}

// MarshalJSON writes the patch as a JSON merge patch.
func (p SubscriptionPatch) MarshalJSON() ([]byte, error) {
	m := map[string]any{}
	if len(bytes.TrimSpace(p.Config)) > 0 {
		m["config"] = p.Config
	}
	if p.URL != nil {
		m["url"] = *p.URL
	}
	if p.Description != nil {
		m["description"] = *p.Description
	}
	if len(bytes.TrimSpace(p.Filter)) > 0 {
		m["filter"] = p.Filter
	}
	if p.Headers != nil {
		m["headers"] = p.Headers
	}
	if p.Retry != nil {
		m["retry"] = toRetryJSON(*p.Retry)
	}
	if p.Timeout != nil {
		m["timeout"] = herald.FormatDuration(*p.Timeout)
	}
	if p.MaxInFlight != nil {
		m["max_in_flight"] = *p.MaxInFlight
	}
	if p.RateLimit != nil {
		m["rate_limit"] = *p.RateLimit
	}
	if p.Ordered != nil {
		m["ordered"] = *p.Ordered
	}
	if p.ExpiresAfterIdle != nil {
		if *p.ExpiresAfterIdle == 0 {
			m["expires_after_idle"] = nil
		} else {
			m["expires_after_idle"] = herald.FormatDuration(*p.ExpiresAfterIdle)
		}
	}
	if p.Verification != "" {
		m["verification"] = p.Verification
	}
	return marshal(m)
}

// UpdateSubscription applies the patch and returns the changed
// subscription. A new URL puts it back to pending until the endpoint
// answers a new challenge (unless an admin key sends herald.VerifyNone).
func (c *Client) UpdateSubscription(ctx context.Context, id string, patch SubscriptionPatch) (Subscription, error) {
	path, err := subPath(id, "")
	if err != nil {
		return Subscription{}, err
	}
	b, err := patch.MarshalJSON()
	if err != nil {
		return Subscription{}, err
	}
	var s Subscription
	_, err = c.do(ctx, request{method: http.MethodPatch, path: path, body: bytes.NewReader(b),
		header: http.Header{"Content-Type": {"application/merge-patch+json"}}, out: &s})
	return s, err
}

// DeleteSubscription deletes the subscription with its delivery state
// (retries, dead letters, attempts).
func (c *Client) DeleteSubscription(ctx context.Context, id string) error {
	return c.subCall(ctx, http.MethodDelete, id, "", nil, nil)
}

// PauseSubscription stops delivery to an active or pending subscription;
// events keep accumulating for it. Any other state is a *Problem with
// status 409.
func (c *Client) PauseSubscription(ctx context.Context, id string) (Subscription, error) {
	var s Subscription
	err := c.subCall(ctx, http.MethodPost, id, "/pause", nil, &s)
	return s, err
}

// ResumeSubscription restarts a paused or disabled subscription where it
// stopped; a failed one, or one never verified, goes back to pending with a
// new challenge. An active or pending one is a *Problem with status 409.
func (c *Client) ResumeSubscription(ctx context.Context, id string) (Subscription, error) {
	var s Subscription
	err := c.subCall(ctx, http.MethodPost, id, "/resume", nil, &s)
	return s, err
}

// VerifySubscription confirms a pending subscription with the token of
// its challenge, and it becomes active. A wrong token is a *Problem with
// status 400 and field "challenge"; a subscription that is not pending,
// 409.
func (c *Client) VerifySubscription(ctx context.Context, id, challenge string) (Subscription, error) {
	var s Subscription
	err := c.subCall(ctx, http.MethodPost, id, "/verify", map[string]string{"challenge": challenge}, &s)
	return s, err
}

// Secret is a subscription's signing secret, and the previous one while a
// rotation's grace lasts (both sign requests then).
type Secret struct {
	Secret            string    // "whsec_..."
	PreviousSecret    string    // "" when none
	PreviousExpiresAt time.Time // zero when none
}

type secretJSON struct {
	Secret            string `json:"secret"`
	PreviousSecret    string `json:"previous_secret,omitempty"`
	PreviousExpiresAt string `json:"previous_expires_at,omitempty"`
}

// MarshalJSON writes the API's form of the secrets.
func (s Secret) MarshalJSON() ([]byte, error) {
	return marshal(secretJSON{s.Secret, s.PreviousSecret, formatTime(s.PreviousExpiresAt)})
}

// UnmarshalJSON reads the API's form of the secrets.
func (s *Secret) UnmarshalJSON(b []byte) error {
	var w secretJSON
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	t, err := parseTime("previous_expires_at", w.PreviousExpiresAt)
	if err != nil {
		return err
	}
	*s = Secret{Secret: w.Secret, PreviousSecret: w.PreviousSecret, PreviousExpiresAt: t}
	return nil
}

// GetSecret returns the subscription's signing secret.
func (c *Client) GetSecret(ctx context.Context, id string) (Secret, error) {
	var s Secret
	err := c.subCall(ctx, http.MethodGet, id, "/secret", nil, &s)
	return s, err
}

// RotateSecret gives the subscription a new signing secret. The old one
// keeps signing too for grace (nil: the server's default, 24h; at most 7d;
// a pointer to 0 drops it at once), so receivers can roll over.
func (c *Client) RotateSecret(ctx context.Context, id string, grace *time.Duration) (Secret, error) {
	in := map[string]string{}
	if grace != nil {
		in["grace"] = herald.FormatDuration(*grace)
	}
	var s Secret
	err := c.subCall(ctx, http.MethodPost, id, "/secret:rotate", in, &s)
	return s, err
}
