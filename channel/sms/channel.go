// Package sms is the SMS channel: each event becomes one text message to
// a person's phone number (E.164), rendered from the subscription's
// template and sent through a provider's HTTP API: a Twilio-compatible
// Messages API or a generic HTTP request. Every message ends with an
// unsubscribe link. Each delivery reports the body's encoding (GSM-7 or
// UCS-2), length and segment count in the attempt log.
//
// A subscription is pending until the person types the code Verify sends
// (POST /v1/subscriptions/{id}/verify with {"code": "123456"}).
package sms

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/channel"
	"github.com/heraldhq/herald/channel/template"
)

// Name is the channel's name.
const Name = "sms"

// MaxTextRunes bounds a rendered message before the unsubscribe line:
// longer text is cut (with "…"), so one event costs at most about ten
// segments.
const MaxTextRunes = 1000

var e164 = regexp.MustCompile(`^\+[1-9][0-9]{6,14}$`)

// ValidatePhone checks an E.164 number ("+14155550123"). Errors name the
// field "phone".
func ValidatePhone(s string) (string, error) {
	if !e164.MatchString(s) {
		return "", herald.FieldErrorf("phone", "phone %q is not an E.164 number: a + then the country code and number, 8 to 15 digits, no spaces (+14155550123)", truncate(s, 40))
	}
	return s, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// Config is a subscription's stored config.
type Config struct {
	Phone string `json:"phone"`
	Text  string `json:"text,omitempty"`
	// Template names a template of the library (its text), instead of
	// Text.
	Template string `json:"template,omitempty"`
	template.Schedule
	LinkKey string `json:"link_key"`
}

// ParseConfig reads a stored config.
func ParseConfig(raw json.RawMessage) (Config, error) {
	var c Config
	if err := json.Unmarshal(raw, &c); err != nil {
		return c, fmt.Errorf("sms config: %w", err)
	}
	return c, nil
}

// DefaultText is the message template of a subscription that sets none.
// A digest lists its events, one a line.
const DefaultText = `{{if .Events}}{{len .Events}} events on {{.Topic}}:{{range .Events}}
{{with .Type}}{{.}}: {{end}}{{.Text}}{{end}}{{else}}{{.Topic}}{{with .Type}} {{.}}{{end}}: {{.Text}}{{end}}`

// ChannelConfig configures the channel.
type ChannelConfig struct {
	Provider  Provider
	PublicURL func() string // the base of unsubscribe links
	Now       func() time.Time
	// Library holds the named templates subscriptions may use; nil means
	// none.
	Library *template.Library
}

// Channel sends events as SMS. It is safe for concurrent use.
type Channel struct{ cfg ChannelConfig }

var (
	_ channel.Channel   = (*Channel)(nil)
	_ channel.Verifier  = (*Channel)(nil)
	_ channel.LinkKeyer = (*Channel)(nil)
)

// NewChannel returns the SMS channel sending through the provider.
func NewChannel(cfg ChannelConfig) (*Channel, error) {
	if cfg.Provider == nil || cfg.PublicURL == nil {
		return nil, errors.New("sms: a provider and the public URL are required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Channel{cfg: cfg}, nil
}

// Name is "sms".
func (c *Channel) Name() string { return Name }

func textTemplates(text string) template.Templates {
	return template.Templates{Subject: "-", Text: cmpOr(text, DefaultText)}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// Validate checks the phone number and the template; the link key stays
// on an update.
func (c *Channel) Validate(ctx context.Context, p channel.ValidateParams) (json.RawMessage, error) {
	var in struct {
		Phone    string `json:"phone"`
		Text     string `json:"text"`
		Template string `json:"template"`
		template.Schedule
	}
	if err := channel.DecodeConfig(p.Config, &in); err != nil {
		return nil, err
	}
	if in.Phone == "" {
		return nil, herald.FieldErrorf("phone", "phone is required: the E.164 number to send to, such as +14155550123")
	}
	phone, err := ValidatePhone(in.Phone)
	if err != nil {
		return nil, err
	}
	if err := textTemplates(in.Text).Validate(false); err != nil {
		return nil, err
	}
	if err := c.cfg.Library.CheckConfig(ctx, p.Tenant, in.Template, in.Text != ""); err != nil {
		return nil, err
	}
	if err := in.Schedule.Validate(); err != nil {
		return nil, err
	}
	out := Config{Phone: phone, Text: in.Text, Template: in.Template, Schedule: in.Schedule, LinkKey: channel.NewLinkKey()}
	if p.Previous != nil {
		if prev, err := ParseConfig(p.Previous); err == nil && prev.LinkKey != "" {
			out.LinkKey = prev.LinkKey
		}
	}
	return json.Marshal(out)
}

// Public returns the config without its link key.
func (c *Channel) Public(raw json.RawMessage) json.RawMessage {
	cfg, err := ParseConfig(raw)
	if err != nil {
		return json.RawMessage(`{}`)
	}
	b, _ := json.Marshal(struct {
		Phone    string `json:"phone"`
		Text     string `json:"text,omitempty"`
		Template string `json:"template,omitempty"`
		template.Schedule
	}{cfg.Phone, cfg.Text, cfg.Template, cfg.Schedule})
	return b
}

// Destination is the provider's API host.
func (c *Channel) Destination(json.RawMessage) string { return c.cfg.Provider.Destination() }

// LinkKey returns the key of the config's unsubscribe links.
func (c *Channel) LinkKey(raw json.RawMessage) []byte {
	cfg, err := ParseConfig(raw)
	if err != nil {
		return nil
	}
	return channel.DecodeLinkKey(cfg.LinkKey)
}

// Reverify is true when the number changed.
func (c *Channel) Reverify(previous, next json.RawMessage) bool {
	a, errA := ParseConfig(previous)
	b, errB := ParseConfig(next)
	return errA != nil || errB != nil || a.Phone != b.Phone
}

// Open parses the template once.
func (c *Channel) Open(_ context.Context, sub *herald.Subscription) (channel.Sink, error) {
	cfg, err := ParseConfig(sub.Config)
	if err != nil {
		return nil, err
	}
	set, err := textTemplates(cfg.Text).Parse(false)
	if err != nil {
		return nil, fmt.Errorf("subscription %s: %w", sub.ID, err)
	}
	s := &sink{c: c, sub: sub, cfg: cfg, set: set}
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
}

// send renders and sends one message (one event, or a digest).
func (s *sink) send(ctx context.Context, d template.Data, _ string) herald.DeliveryResult {
	unsub := d.UnsubscribeURL
	set, fail := s.c.cfg.Library.Choose(ctx, s.sub.Tenant, s.cfg.Text != "", s.set, s.cfg.Template, d)
	if fail != nil {
		return *fail
	}
	out, err := set.Render(d)
	if err != nil {
		return herald.DeliveryResult{Outcome: herald.Rejected, Err: "template-error", Detail: err.Error()}
	}
	text := strings.TrimSpace(out.Text)
	if utf8.RuneCountInString(text) > MaxTextRunes {
		text = string([]rune(text)[:MaxTextRunes-1]) + "…"
	}
	return s.c.send(ctx, s.cfg.Phone, text+"\nStop: "+unsub)
}

// Report is what the attempt log keeps of a sent message.
type Report struct {
	Segments
	Characters int    `json:"characters"`
	ProviderID string `json:"provider_id,omitempty"`
}

// send sends body and classifies the answer; the response excerpt is the
// Report (or, on failure, the provider's answer).
func (c *Channel) send(ctx context.Context, phone, body string) herald.DeliveryResult {
	start := time.Now()
	res := c.cfg.Provider.Send(ctx, phone, body)
	out := herald.DeliveryResult{StatusCode: res.StatusCode, Latency: time.Since(start), RetryAfter: res.RetryAfter}
	switch {
	case res.Err != nil:
		out.Outcome, out.Err, out.Detail = herald.Failed, "connection-failed", res.Err.Error()
		if errors.Is(res.Err, context.DeadlineExceeded) || strings.Contains(res.Err.Error(), "Timeout") {
			out.Err = "timeout"
		}
		if res.Permanent {
			out.Outcome, out.Err = herald.Rejected, "bad-request"
		}
	case res.StatusCode >= 200 && res.StatusCode < 300:
		out.Outcome = herald.Delivered
		out.Response, _ = json.Marshal(Report{Segments: Count(body), Characters: utf8.RuneCountInString(body), ProviderID: res.ID})
	default:
		out.Outcome, out.Err, out.Response = herald.Failed, fmt.Sprintf("http-%d", res.StatusCode), res.Excerpt
		if res.Permanent {
			out.Outcome = herald.Rejected
		}
	}
	return out
}

// Verify sends the confirmation code.
func (c *Channel) Verify(ctx context.Context, sub *herald.Subscription) herald.DeliveryResult {
	cfg, err := ParseConfig(sub.Config)
	if err != nil {
		return herald.DeliveryResult{Outcome: herald.Failed, Err: "bad-config", Detail: err.Error()}
	}
	body := fmt.Sprintf("Herald code %s: confirms notifications of %s to this number. Ignore it if you did not ask.", channel.ConfirmCode(sub), sub.Topic)
	res := c.send(ctx, cfg.Phone, body)
	switch res.Outcome {
	case herald.Delivered:
		res.Outcome, res.Err = herald.Sent, "a confirmation code was sent by SMS"
	case herald.Rejected:
		res.Outcome = herald.Failed
	}
	return res
}
