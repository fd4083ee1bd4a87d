// Package push is the push notification channel: each event becomes a
// notification on a person's browser or phone, through one of three
// services, as the subscription's "provider" says:
//
//   - webpush: the browser's push service (RFC 8030), the message
//     encrypted for the subscription's keys (RFC 8291, aes128gcm) and the
//     request signed with Herald's VAPID key (RFC 8292), with TTL and
//     Urgency. The config is the browser's PushSubscription.toJSON():
//     {"endpoint": ..., "keys": {"p256dh": ..., "auth": ...}}.
//   - fcm: Firebase Cloud Messaging's HTTP v1 API, {"token": <registration
//     token>}.
//   - apns: Apple's service over HTTP/2 with a .p8 key, {"token": <device
//     token>}.
//
// The notification's title and body are templates (package template) over
// the event; the message also carries the event's id, topic and type, the
// payload when it fits, and the subscription's unsubscribe link.
//
// A push service that says the subscription no longer exists (Web Push
// 404 or 410, FCM UNREGISTERED, APNs BadDeviceToken or Unregistered)
// makes the delivery Gone: the engine disables the subscription at once.
//
// Subscriptions a device makes itself (holding a connection token) are
// confirmed by that act; others start pending and Verify sends a
// notification whose link confirms them.
package push

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/channel"
	"github.com/heraldhq/herald/channel/template"
)

// Name is the channel's name.
const Name = "push"

// The providers.
const (
	ProviderWebPush = "webpush"
	ProviderFCM     = "fcm"
	ProviderAPNs    = "apns"
)

// The urgencies of RFC 8030 section 5.3.
var urgencies = []string{"very-low", "low", "normal", "high"}

// DefaultTTL is how long a push service keeps an undelivered message
// when the subscription sets no ttl.
const DefaultTTL = 24 * time.Hour

// MaxTTL bounds ttl: four weeks, what push services keep at most.
const MaxTTL = 28 * 24 * time.Hour

// The default templates.
const (
	DefaultTitle = `{{.Topic}}{{with .Type}}: {{.}}{{end}}`
	DefaultBody  = `{{.Text}}`
)

// MaxBodyRunes bounds a rendered body.
const MaxBodyRunes = 1000

// Keys are a Web Push subscription's keys, as the browser gives them.
type Keys struct {
	P256DH string `json:"p256dh"`
	Auth   string `json:"auth"`
}

// Config is a subscription's stored config.
type Config struct {
	Provider string `json:"provider"`
	Endpoint string `json:"endpoint,omitempty"`
	Keys     *Keys  `json:"keys,omitempty"`
	Token    string `json:"token,omitempty"`
	Title    string `json:"title,omitempty"`
	Body     string `json:"body,omitempty"`
	URL      string `json:"url,omitempty"`
	TTL      string `json:"ttl,omitempty"`
	Urgency  string `json:"urgency,omitempty"`
	// Template names a template of the library (its subject is the
	// title, its text the body), instead of Title and Body.
	Template string `json:"template,omitempty"`
	template.Schedule
	LinkKey string `json:"link_key"`
}

// ParseConfig reads a stored config.
func ParseConfig(raw json.RawMessage) (Config, error) {
	var c Config
	if err := json.Unmarshal(raw, &c); err != nil {
		return c, fmt.Errorf("push config: %w", err)
	}
	return c, nil
}

func (c Config) ttl() time.Duration {
	if d, err := herald.ParseDuration(c.TTL); err == nil && c.TTL != "" {
		return d
	}
	return DefaultTTL
}

func (c Config) templates() template.Templates {
	return template.Templates{Subject: cmpOr(c.Title, DefaultTitle), Text: cmpOr(c.Body, DefaultBody)}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// Message is one notification, as the providers send it.
type Message struct {
	Title, Body    string
	URL            string // what opening the notification shows; "" for the app's default
	EventID        string
	Topic, Type    string
	Data           string // the event payload when it is UTF-8 and fits; "" otherwise
	UnsubscribeURL string
	TTL            time.Duration
	Urgency        string
	CollapseID     string
}

// Result is what a push service answered.
type Result struct {
	Status     int
	ID         string
	Reason     string // a short public reason of a refusal ("unregistered", "baddevicetoken")
	Excerpt    []byte
	Gone       bool // the subscription no longer exists: never send again
	Permanent  bool // this message is refused for good (too big, malformed)
	RetryAfter time.Duration
	Err        error // no answer
}

// ChannelConfig configures the channel: each provider is optional, and a
// subscription of a provider the server lacks is refused.
type ChannelConfig struct {
	VAPID *VAPID // Web Push
	FCM   *FCM
	APNs  *APNs
	// WebPushClient sends to push services; nil makes one through the
	// SSRF guard (AllowPrivate lifts it, and lets endpoints be http://).
	WebPushClient *http.Client
	AllowPrivate  bool
	PublicURL     func() string
	Now           func() time.Time
	// Library holds the named templates subscriptions may use; nil means
	// none.
	Library *template.Library
}

// Channel sends events as push notifications. Safe for concurrent use.
type Channel struct {
	cfg ChannelConfig
}

var (
	_ channel.Channel   = (*Channel)(nil)
	_ channel.Verifier  = (*Channel)(nil)
	_ channel.LinkKeyer = (*Channel)(nil)
)

// NewChannel returns the push channel.
func NewChannel(cfg ChannelConfig) (*Channel, error) {
	if cfg.PublicURL == nil {
		return nil, errors.New("push: the public URL is required")
	}
	if cfg.VAPID == nil && cfg.FCM == nil && cfg.APNs == nil {
		return nil, errors.New("push: no provider is configured (VAPID keys, FCM credentials or an APNs key)")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.WebPushClient == nil {
		cfg.WebPushClient = guardedClient(cfg.AllowPrivate)
	}
	return &Channel{cfg: cfg}, nil
}

// Name is "push".
func (c *Channel) Name() string { return Name }

// Providers lists the providers this server sends through.
func (c *Channel) Providers() []string {
	var out []string
	if c.cfg.VAPID != nil {
		out = append(out, ProviderWebPush)
	}
	if c.cfg.FCM != nil {
		out = append(out, ProviderFCM)
	}
	if c.cfg.APNs != nil {
		out = append(out, ProviderAPNs)
	}
	return out
}

// VAPIDPublicKey is the application server key browsers subscribe with,
// "" when Web Push is off.
func (c *Channel) VAPIDPublicKey() string {
	if c.cfg.VAPID == nil {
		return ""
	}
	return c.cfg.VAPID.PublicKey()
}

// maxToken bounds a device or registration token.
const maxToken = 4096

// Validate checks a push config. On an update a caller may leave out the
// endpoint, keys or token (they are never shown): the stored ones stay.
func (c *Channel) Validate(ctx context.Context, p channel.ValidateParams) (json.RawMessage, error) {
	var in struct {
		Provider       string          `json:"provider"`
		Endpoint       string          `json:"endpoint"`
		ExpirationTime json.RawMessage `json:"expirationTime"` // PushSubscription.toJSON() has it; unused
		Keys           *Keys           `json:"keys"`
		Token          string          `json:"token"`
		Title          string          `json:"title"`
		Body           string          `json:"body"`
		URL            string          `json:"url"`
		TTL            string          `json:"ttl"`
		Urgency        string          `json:"urgency"`
		Template       string          `json:"template"`
		template.Schedule
	}
	if err := channel.DecodeConfig(p.Config, &in); err != nil {
		return nil, err
	}
	var prev Config
	if p.Previous != nil {
		prev, _ = ParseConfig(p.Previous)
	}
	if in.Provider == "" {
		in.Provider = prev.Provider
	}
	if in.Provider == "" && in.Endpoint != "" {
		in.Provider = ProviderWebPush // a PushSubscription as the browser gives it
	}
	if in.Provider == prev.Provider {
		// The config as Public shows it, written back, keeps the stored
		// endpoint and token: they are shown masked.
		if in.Endpoint == publicEndpoint(prev.Endpoint) {
			in.Endpoint = ""
		}
		if in.Token == publicToken(prev.Token) {
			in.Token = ""
		}
		in.Endpoint, in.Token = cmpOr(in.Endpoint, prev.Endpoint), cmpOr(in.Token, prev.Token)
		if in.Keys == nil {
			in.Keys = prev.Keys
		}
	}
	if err := c.cfg.Library.CheckConfig(ctx, p.Tenant, in.Template, in.Title != "" || in.Body != ""); err != nil {
		return nil, err
	}
	if err := in.Schedule.Validate(); err != nil {
		return nil, err
	}
	out := Config{Provider: in.Provider, Title: in.Title, Body: in.Body, URL: in.URL, TTL: in.TTL, Urgency: in.Urgency,
		Template: in.Template, Schedule: in.Schedule, LinkKey: cmpOr(prev.LinkKey, channel.NewLinkKey())}
	switch in.Provider {
	case ProviderWebPush:
		if c.cfg.VAPID == nil {
			return nil, c.noProvider(in.Provider, "push.vapid-private-key")
		}
		if err := c.checkEndpoint(in.Endpoint, p.Admin); err != nil {
			return nil, err
		}
		if in.Keys == nil {
			return nil, herald.FieldErrorf("keys", `keys is required: {"p256dh": ..., "auth": ...} from the browser's PushSubscription`)
		}
		if b, err := decodeB64(in.Keys.P256DH); err != nil || len(b) != 65 || b[0] != 4 {
			return nil, herald.FieldErrorf("keys.p256dh", "keys.p256dh must be the browser's P-256 public key: 65 bytes, base64url")
		}
		if b, err := decodeB64(in.Keys.Auth); err != nil || len(b) != 16 {
			return nil, herald.FieldErrorf("keys.auth", "keys.auth must be the browser's auth secret: 16 bytes, base64url")
		}
		out.Endpoint, out.Keys = in.Endpoint, in.Keys
	case ProviderFCM, ProviderAPNs:
		if in.Provider == ProviderFCM && c.cfg.FCM == nil {
			return nil, c.noProvider(in.Provider, "push.fcm-credentials-file")
		}
		if in.Provider == ProviderAPNs && c.cfg.APNs == nil {
			return nil, c.noProvider(in.Provider, "push.apns-key-file")
		}
		if in.Endpoint != "" || in.Keys != nil {
			return nil, herald.FieldErrorf("endpoint", "endpoint and keys are for webpush; %s takes a token", in.Provider)
		}
		if in.Token == "" || len(in.Token) > maxToken || strings.ContainsAny(in.Token, " \t\r\n/") {
			return nil, herald.FieldErrorf("token", "token is required: the device's %s token (at most %d bytes, no spaces or slashes)", in.Provider, maxToken)
		}
		if in.Provider == ProviderAPNs && (len(in.Token)%2 != 0 || strings.Trim(strings.ToLower(in.Token), "0123456789abcdef") != "") {
			return nil, herald.FieldErrorf("token", "an APNs device token is hexadecimal")
		}
		out.Token = in.Token
	case "":
		return nil, herald.FieldErrorf("provider", "provider is required: one of %s", strings.Join(c.Providers(), ", "))
	default:
		return nil, herald.FieldErrorf("provider", "unknown provider %q: this server sends through %s", in.Provider, strings.Join(c.Providers(), ", "))
	}
	if in.TTL != "" {
		d, err := herald.ParseDuration(in.TTL)
		if err != nil || d < 0 || d > MaxTTL {
			return nil, herald.FieldErrorf("ttl", "ttl %q: want a duration from 0s to 28d, such as 1h", in.TTL)
		}
	}
	if in.Urgency != "" && !slices.Contains(urgencies, in.Urgency) {
		return nil, herald.FieldErrorf("urgency", "urgency %q: want one of %s", in.Urgency, strings.Join(urgencies, ", "))
	}
	if len(in.URL) > 2048 {
		return nil, herald.FieldErrorf("url", "url is at most 2048 bytes")
	}
	tpl := out.templates()
	if err := tpl.Validate(false); err != nil {
		switch herr, _ := errors.AsType[*herald.Error](err); {
		case herr != nil && herr.Field == "subject":
			herr.Field, herr.Message = "title", strings.Replace(herr.Message, "subject", "title", 1)
		case herr != nil && herr.Field == "text":
			herr.Field, herr.Message = "body", strings.Replace(herr.Message, "text", "body", 1)
		}
		return nil, err
	}
	if err := (template.Templates{Subject: "-", Text: cmpOr(in.URL, "-")}).Validate(false); err != nil {
		return nil, herald.FieldErrorf("url", "url: %v", err)
	}
	return json.Marshal(out)
}

func (c *Channel) noProvider(p, setting string) error {
	return herald.FieldErrorf("provider", "this server does not send through %s: its operator has not set %s", p, setting)
}

func decodeB64(s string) ([]byte, error) {
	s = strings.TrimRight(s, "=")
	if b, err := base64.RawURLEncoding.DecodeString(s); err == nil {
		return b, nil
	}
	return base64.RawStdEncoding.DecodeString(s)
}

// checkEndpoint checks a Web Push endpoint: an https URL (http only where
// private destinations are allowed, for tests) on a public host.
func (c *Channel) checkEndpoint(endpoint string, _ bool) error {
	if endpoint == "" {
		return herald.FieldErrorf("endpoint", "endpoint is required: the push service URL from the browser's PushSubscription")
	}
	u, err := url.Parse(endpoint)
	if err != nil || u.Host == "" || len(endpoint) > 2048 || u.User != nil || u.Fragment != "" {
		return herald.FieldErrorf("endpoint", "endpoint must be an absolute https URL without credentials or fragment, at most 2048 bytes")
	}
	if u.Scheme != "https" && !(u.Scheme == "http" && c.cfg.AllowPrivate) {
		return herald.FieldErrorf("endpoint", "endpoint must be an https URL")
	}
	return channel.CheckHost(u.Hostname(), c.cfg.AllowPrivate, "endpoint", "the endpoint's host")
}

// Public returns the config without its secrets: the keys, the token, the
// endpoint's path (a capability URL) and the link key.
func (c *Channel) Public(raw json.RawMessage) json.RawMessage {
	cfg, err := ParseConfig(raw)
	if err != nil {
		return json.RawMessage(`{}`)
	}
	pub := struct {
		Provider string `json:"provider"`
		Endpoint string `json:"endpoint,omitempty"`
		Token    string `json:"token,omitempty"`
		Title    string `json:"title,omitempty"`
		Body     string `json:"body,omitempty"`
		URL      string `json:"url,omitempty"`
		TTL      string `json:"ttl,omitempty"`
		Urgency  string `json:"urgency,omitempty"`
		Template string `json:"template,omitempty"`
		template.Schedule
	}{Provider: cfg.Provider, Title: cfg.Title, Body: cfg.Body, URL: cfg.URL, TTL: cfg.TTL, Urgency: cfg.Urgency, Template: cfg.Template, Schedule: cfg.Schedule}
	pub.Endpoint, pub.Token = publicEndpoint(cfg.Endpoint), publicToken(cfg.Token)
	b, _ := json.Marshal(pub)
	return b
}

// publicEndpoint is a Web Push endpoint as Public shows it: the push
// service, not the capability URL of the browser's subscription.
func publicEndpoint(endpoint string) string {
	if u, err := url.Parse(endpoint); err == nil && endpoint != "" {
		return u.Scheme + "://" + u.Host + "/…"
	}
	return ""
}

// publicToken is a device token as Public shows it: its last characters.
func publicToken(token string) string {
	if n := len(token); n > 0 {
		return "…" + token[max(n-6, 0):]
	}
	return ""
}

// Destination is the push service's host, so one slow service does not
// hold every send slot.
func (c *Channel) Destination(raw json.RawMessage) string {
	cfg, err := ParseConfig(raw)
	if err != nil {
		return ""
	}
	switch cfg.Provider {
	case ProviderFCM:
		if c.cfg.FCM != nil {
			return "fcm://" + c.cfg.FCM.Destination()
		}
	case ProviderAPNs:
		if c.cfg.APNs != nil {
			return "apns://" + c.cfg.APNs.Destination()
		}
	}
	return "webpush://" + hostOf(cfg.Endpoint)
}

// LinkKey returns the key of the config's unsubscribe links.
func (c *Channel) LinkKey(raw json.RawMessage) []byte {
	cfg, err := ParseConfig(raw)
	if err != nil {
		return nil
	}
	return channel.DecodeLinkKey(cfg.LinkKey)
}

// Reverify is true when the subscription points at another device.
func (c *Channel) Reverify(previous, next json.RawMessage) bool {
	a, errA := ParseConfig(previous)
	b, errB := ParseConfig(next)
	return errA != nil || errB != nil || a.Provider != b.Provider || a.Endpoint != b.Endpoint || a.Token != b.Token
}

// Open parses the templates once.
func (c *Channel) Open(_ context.Context, sub *herald.Subscription) (channel.Sink, error) {
	cfg, err := ParseConfig(sub.Config)
	if err != nil {
		return nil, err
	}
	set, err := cfg.templates().Parse(false)
	if err != nil {
		return nil, fmt.Errorf("subscription %s: %w", sub.ID, err)
	}
	var urlSet *template.Set
	if cfg.URL != "" {
		if urlSet, err = (template.Templates{Subject: "-", Text: cfg.URL}).Parse(false); err != nil {
			return nil, fmt.Errorf("subscription %s: %w", sub.ID, err)
		}
	}
	s := &sink{c: c, sub: sub, cfg: cfg, set: set, url: urlSet}
	return template.NewSink(template.SinkParams{Schedule: cfg.Schedule, SubscriptionID: sub.ID,
		UnsubscribeURL: c.unsubscribeURL(sub, cfg), Now: c.cfg.Now, Send: s.send})
}

func (c *Channel) unsubscribeURL(sub *herald.Subscription, cfg Config) string {
	return strings.TrimSuffix(c.cfg.PublicURL(), "/") + "/v1/unsubscribe/" +
		channel.LinkToken(channel.PurposeUnsubscribe, sub.ID, channel.DecodeLinkKey(cfg.LinkKey))
}

type sink struct {
	c   *Channel
	sub *herald.Subscription
	cfg Config
	set *template.Set
	url *template.Set
}

// send renders and sends one notification (one event, or a digest: then
// the newest event's id, topic and type, and no data).
func (s *sink) send(ctx context.Context, data template.Data, _ string) herald.DeliveryResult {
	unsub := data.UnsubscribeURL
	set, fail := s.c.cfg.Library.Choose(ctx, s.sub.Tenant, s.cfg.Title != "" || s.cfg.Body != "", s.set, s.cfg.Template, data)
	if fail != nil {
		return *fail
	}
	out, err := set.Render(data)
	if err != nil {
		return herald.DeliveryResult{Outcome: herald.Rejected, Err: "template-error", Detail: err.Error()}
	}
	m := Message{
		Title: strings.TrimSpace(out.Subject), Body: truncateRunes(strings.TrimSpace(out.Text), MaxBodyRunes),
		EventID: data.ID, Topic: data.Topic, Type: data.Type, UnsubscribeURL: unsub,
		TTL: s.cfg.ttl(), Urgency: cmpOr(s.cfg.Urgency, "normal"),
	}
	if s.url != nil {
		u, err := s.url.Render(data)
		if err != nil {
			return herald.DeliveryResult{Outcome: herald.Rejected, Err: "template-error", Detail: err.Error()}
		}
		m.URL = strings.TrimSpace(u.Text)
	}
	if data.Events == nil && data.Text != "" {
		m.Data = data.Text
	}
	return s.c.send(ctx, s.cfg, m)
}

func truncateRunes(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n-1]) + "…"
}

// send sends m through the config's provider and classifies the answer.
func (c *Channel) send(ctx context.Context, cfg Config, m Message) herald.DeliveryResult {
	start := time.Now()
	var res Result
	switch cfg.Provider {
	case ProviderWebPush:
		res = c.sendWebPush(ctx, cfg, m)
	case ProviderFCM:
		if c.cfg.FCM == nil {
			return herald.DeliveryResult{Outcome: herald.Failed, Err: "provider-off", Detail: "this server no longer has FCM credentials"}
		}
		res = c.cfg.FCM.Send(ctx, cfg.Token, m)
	case ProviderAPNs:
		if c.cfg.APNs == nil {
			return herald.DeliveryResult{Outcome: herald.Failed, Err: "provider-off", Detail: "this server no longer has an APNs key"}
		}
		res = c.cfg.APNs.Send(ctx, cfg.Token, m)
	default:
		return herald.DeliveryResult{Outcome: herald.Rejected, Err: "bad-config", Detail: "unknown provider " + cfg.Provider}
	}
	out := herald.DeliveryResult{StatusCode: res.Status, Latency: time.Since(start), RetryAfter: res.RetryAfter, Response: res.Excerpt}
	switch {
	case res.Err != nil:
		out.Outcome, out.Detail = herald.Failed, res.Err.Error()
		out.Err = cmpOr(channel.NetReason(res.Err), cmpOr(res.Reason, channel.ReasonNetwork))
	case res.Status >= 200 && res.Status < 300:
		out.Outcome = herald.Delivered
	case res.Gone:
		out.Outcome, out.Err = herald.Gone, cmpOr(res.Reason, "http-"+strconv.Itoa(res.Status))
		out.Detail = "the push service says this subscription no longer exists"
	case res.Permanent:
		out.Outcome, out.Err = herald.Rejected, cmpOr(res.Reason, "http-"+strconv.Itoa(res.Status))
	default:
		out.Outcome, out.Err = herald.Failed, cmpOr(res.Reason, "http-"+strconv.Itoa(res.Status))
	}
	return out
}

// webPushBody is what a service worker's push event receives, decrypted.
type webPushBody struct {
	Title          string          `json:"title"`
	Body           string          `json:"body"`
	URL            string          `json:"url,omitempty"`
	EventID        string          `json:"event_id,omitempty"`
	Topic          string          `json:"topic,omitempty"`
	Type           string          `json:"type,omitempty"`
	Data           json.RawMessage `json:"data,omitempty"`
	UnsubscribeURL string          `json:"unsubscribe_url,omitempty"`
}

// webPushPlaintext encodes m to fit one record: the payload goes when it
// is too big, then the body is cut.
func webPushPlaintext(m Message) ([]byte, error) {
	b := webPushBody{Title: m.Title, Body: m.Body, URL: m.URL, EventID: m.EventID, Topic: m.Topic, Type: m.Type, UnsubscribeURL: m.UnsubscribeURL}
	if json.Valid([]byte(m.Data)) {
		b.Data = json.RawMessage(m.Data)
	} else if m.Data != "" {
		b.Data, _ = json.Marshal(m.Data)
	}
	for {
		out, err := json.Marshal(b)
		if err != nil || len(out) <= MaxPlaintext {
			return out, err
		}
		switch {
		case b.Data != nil:
			b.Data = nil
		case utf8.RuneCountInString(b.Body) > 20:
			b.Body = truncateRunes(b.Body, utf8.RuneCountInString(b.Body)/2)
		default:
			return nil, errors.New("the notification does not fit in a Web Push message")
		}
	}
}

func (c *Channel) sendWebPush(ctx context.Context, cfg Config, m Message) Result {
	if c.cfg.VAPID == nil {
		return Result{Err: errors.New("this server no longer has VAPID keys"), Reason: "provider-off"}
	}
	if cfg.Keys == nil {
		return Result{Status: 0, Permanent: true, Reason: "bad-config", Err: errors.New("no keys")}
	}
	plain, err := webPushPlaintext(m)
	if err != nil {
		return Result{Permanent: true, Reason: "too-large", Status: http.StatusRequestEntityTooLarge}
	}
	ua, _ := decodeB64(cfg.Keys.P256DH)
	auth, _ := decodeB64(cfg.Keys.Auth)
	body, err := Seal(plain, ua, auth)
	if err != nil {
		return Result{Permanent: true, Reason: "bad-keys", Status: http.StatusBadRequest, Excerpt: []byte(err.Error())}
	}
	authz, err := c.cfg.VAPID.Authorization(cfg.Endpoint)
	if err != nil {
		return Result{Err: err}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, cfg.Endpoint, strings.NewReader(string(body)))
	if err != nil {
		return Result{Err: err}
	}
	req.Header.Set("Authorization", authz)
	req.Header.Set("Content-Encoding", "aes128gcm")
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set("TTL", strconv.Itoa(int(m.TTL.Seconds())))
	req.Header.Set("Urgency", m.Urgency)
	res, _ := do(c.cfg.WebPushClient, req)
	switch res.Status {
	case http.StatusNotFound, http.StatusGone:
		res.Gone = true
	case http.StatusRequestEntityTooLarge:
		res.Permanent, res.Reason = true, "too-large"
	}
	return res
}

// Verify sends a notification whose link confirms the subscription.
func (c *Channel) Verify(ctx context.Context, sub *herald.Subscription) herald.DeliveryResult {
	cfg, err := ParseConfig(sub.Config)
	if err != nil {
		return herald.DeliveryResult{Outcome: herald.Failed, Err: "bad-config", Detail: err.Error()}
	}
	confirm := strings.TrimSuffix(c.cfg.PublicURL(), "/") + "/v1/confirm/" + channel.ConfirmToken(sub)
	m := Message{
		Title: "Confirm notifications of " + sub.Topic,
		Body:  "Open this to start receiving them. Ignore it if you did not ask.",
		URL:   confirm, Type: "herald.confirm", Topic: sub.Topic, EventID: "",
		UnsubscribeURL: c.unsubscribeURL(sub, cfg), TTL: time.Hour, Urgency: "normal",
	}
	res := c.send(ctx, cfg, m)
	switch res.Outcome {
	case herald.Delivered:
		res.Outcome, res.Err = herald.Sent, "a notification with a confirmation link was sent"
	case herald.Rejected, herald.Gone:
		res.Outcome = herald.Failed
	}
	return res
}

// maxExcerpt bounds the answer kept.
const maxExcerpt = 512

// newClient is the client for the operator's providers (FCM, APNs): TLS
// with HTTP/2, no redirects, bounded.
func newClient() *http.Client {
	return &http.Client{
		Timeout:       30 * time.Second,
		Transport:     &http.Transport{ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 16, IdleConnTimeout: 90 * time.Second, TLSHandshakeTimeout: 10 * time.Second},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// guardedClient is the client for Web Push endpoints, which subscribers
// name: every connection goes through the SSRF guard.
func guardedClient(allowPrivate bool) *http.Client {
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second, ControlContext: channel.DialControl(allowPrivate)}
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{DialContext: d.DialContext, ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 16,
			IdleConnTimeout: 90 * time.Second, TLSHandshakeTimeout: 10 * time.Second, Proxy: nil},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// do sends req: 2xx sent; 408, 429 and 5xx to retry; 401 and 403
// (Herald's credentials) to retry once fixed; other 4xx permanent.
func do(client *http.Client, req *http.Request) (Result, []byte) {
	resp, err := client.Do(req)
	if err != nil {
		return Result{Err: err}, nil
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	res := Result{Status: resp.StatusCode, Excerpt: body[:min(len(body), maxExcerpt)]}
	if s := resp.Header.Get("Retry-After"); s != "" {
		if n, err := strconv.Atoi(s); err == nil && n > 0 {
			res.RetryAfter = time.Duration(min(n, 3600)) * time.Second
		}
	}
	switch c := resp.StatusCode; {
	case c >= 200 && c < 300:
		res.Excerpt = nil
	case c == http.StatusRequestTimeout || c == http.StatusTooManyRequests || c >= 500:
	case c == http.StatusUnauthorized || c == http.StatusForbidden:
	default:
		res.Permanent = true
	}
	return res, body
}

func hostOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	return u.Host
}

func excerpt(b []byte) string {
	return string(b[:min(len(b), 200)])
}
