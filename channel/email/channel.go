// Package email is the email channel: each event becomes one message to a
// person's address, sent through the server's SMTP submission service
// with STARTTLS or implicit TLS and AUTH, over reused sessions within a
// rate limit. Messages are multipart text and HTML rendered from the
// subscription's templates (package template's defaults otherwise), carry
// a Message-ID made from the event and subscription ids (the same on every
// retry) and one-click unsubscribe headers (RFC 8058).
//
// A subscription is pending until its address confirms: Verify sends a
// message with a confirmation link (see channel.ConfirmToken) and reports
// herald.Sent; nothing else is sent before the person clicks it.
//
// SMTP replies classify deliveries: 2xx delivered, 4xx retried, 5xx
// refused for good (herald.Rejected: a dead letter at once; a run of them
// disables the subscription). Connection failures are retried.
package email

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/mail"
	"strings"
	"time"

	gomail "github.com/wneessen/go-mail"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/channel"
	"github.com/heraldhq/herald/channel/template"
)

// Name is the channel's name.
const Name = "email"

// MaxAddressLen bounds an address (RFC 5321's path limit).
const MaxAddressLen = 254

// Config is a subscription's stored config.
type Config struct {
	Address string `json:"address"`
	Name    string `json:"name,omitempty"`
	template.Templates
	// Template names a template of the library, instead of Templates.
	Template string `json:"template,omitempty"`
	template.Schedule
	// LinkKey signs the subscription's unsubscribe links; made at
	// creation, never shown.
	LinkKey string `json:"link_key"`
}

// ParseConfig reads a stored config.
func ParseConfig(raw json.RawMessage) (Config, error) {
	var c Config
	if err := json.Unmarshal(raw, &c); err != nil {
		return c, fmt.Errorf("email config: %w", err)
	}
	return c, nil
}

// ChannelConfig configures the channel.
type ChannelConfig struct {
	// From is the sender of every message ("Herald <herald@example.com>");
	// required.
	From string
	// PublicURL returns the base URL people's links point to
	// ("https://herald.example.com"); it is read per message, since a
	// server learns its address only once it listens.
	PublicURL func() string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Library holds the named templates subscriptions may use; nil means
	// none.
	Library *template.Library
}

// Channel sends events as email. It is safe for concurrent use.
type Channel struct {
	sender *Sender
	cfg    ChannelConfig
	from   *mail.Address
	domain string
}

var (
	_ channel.Channel   = (*Channel)(nil)
	_ channel.Verifier  = (*Channel)(nil)
	_ channel.LinkKeyer = (*Channel)(nil)
)

// NewChannel returns the email channel sending through s.
func NewChannel(s *Sender, cfg ChannelConfig) (*Channel, error) {
	from, err := mail.ParseAddress(cfg.From)
	if err != nil {
		return nil, fmt.Errorf("sender address %q: %w", cfg.From, err)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.PublicURL == nil {
		return nil, errors.New("the public URL for confirmation and unsubscribe links is required")
	}
	_, domain, _ := strings.Cut(from.Address, "@")
	return &Channel{sender: s, cfg: cfg, from: from, domain: domain}, nil
}

// Name is "email".
func (c *Channel) Name() string { return Name }

// Validate checks an email config: an address, an optional display name
// and optional templates (each must parse). On an update the link key
// stays. Errors name the member.
func (c *Channel) Validate(ctx context.Context, p channel.ValidateParams) (json.RawMessage, error) {
	var in struct {
		Address string `json:"address"`
		Name    string `json:"name"`
		template.Templates
		Template string `json:"template"`
		template.Schedule
	}
	if err := channel.DecodeConfig(p.Config, &in); err != nil {
		return nil, err
	}
	addr, err := ValidateAddress(in.Address)
	if err != nil {
		return nil, err
	}
	if len(in.Name) > 200 || strings.ContainsAny(in.Name, "\r\n\x00") {
		return nil, herald.FieldErrorf("name", "name must be at most 200 bytes on one line")
	}
	if err := in.Templates.Validate(true); err != nil {
		return nil, err
	}
	if err := c.cfg.Library.CheckConfig(ctx, p.Tenant, in.Template, in.Templates != template.Templates{}); err != nil {
		return nil, err
	}
	if err := in.Schedule.Validate(); err != nil {
		return nil, err
	}
	out := Config{Address: addr, Name: in.Name, Templates: in.Templates, Template: in.Template, Schedule: in.Schedule, LinkKey: channel.NewLinkKey()}
	if p.Previous != nil {
		if prev, err := ParseConfig(p.Previous); err == nil && prev.LinkKey != "" {
			out.LinkKey = prev.LinkKey
		}
	}
	b, err := json.Marshal(out)
	if err != nil {
		return nil, fmt.Errorf("encode email config: %w", err)
	}
	return b, nil
}

// ValidateAddress checks one email address ("ann@example.com", without a
// display name) and returns it as given. Errors name the field "address".
func ValidateAddress(s string) (string, error) {
	if s == "" {
		return "", herald.FieldErrorf("address", "address is required: the email address to send to, such as ann@example.com")
	}
	a, err := mail.ParseAddress(s)
	if err != nil || a.Address != s || len(s) > MaxAddressLen || !strings.Contains(s[strings.LastIndexByte(s, '@')+1:], ".") && !strings.HasSuffix(s, "@localhost") {
		return "", herald.FieldErrorf("address", "address %q is not an email address such as ann@example.com (no display name, at most %d bytes)", truncate(s, 80), MaxAddressLen)
	}
	return s, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// Public returns the config without its link key.
func (c *Channel) Public(raw json.RawMessage) json.RawMessage {
	cfg, err := ParseConfig(raw)
	if err != nil {
		return json.RawMessage(`{}`)
	}
	cfg.LinkKey = ""
	b, _ := json.Marshal(struct {
		Address string `json:"address"`
		Name    string `json:"name,omitempty"`
		template.Templates
		Template string `json:"template,omitempty"`
		template.Schedule
	}{cfg.Address, cfg.Name, cfg.Templates, cfg.Template, cfg.Schedule})
	return b
}

// Destination is the mail server: every email subscription shares its
// part of the send slots.
func (c *Channel) Destination(json.RawMessage) string { return "smtp://" + c.sender.Addr() }

// LinkKey returns the key of the config's unsubscribe links.
func (c *Channel) LinkKey(raw json.RawMessage) []byte {
	cfg, err := ParseConfig(raw)
	if err != nil {
		return nil
	}
	return channel.DecodeLinkKey(cfg.LinkKey)
}

// Reverify is true when the address changed.
func (c *Channel) Reverify(previous, next json.RawMessage) bool {
	a, errA := ParseConfig(previous)
	b, errB := ParseConfig(next)
	return errA != nil || errB != nil || !strings.EqualFold(a.Address, b.Address)
}

// Open parses the subscription's templates once.
func (c *Channel) Open(_ context.Context, sub *herald.Subscription) (channel.Sink, error) {
	cfg, err := ParseConfig(sub.Config)
	if err != nil {
		return nil, err
	}
	set, err := cfg.Templates.Parse(true)
	if err != nil {
		return nil, fmt.Errorf("subscription %s: %w", sub.ID, err)
	}
	s := &sink{c: c, sub: sub, cfg: cfg, set: set, own: cfg.Templates != template.Templates{}}
	return template.NewSink(template.SinkParams{Schedule: cfg.Schedule, SubscriptionID: sub.ID,
		UnsubscribeURL: c.UnsubscribeURL(sub, cfg), Now: c.cfg.Now, Send: s.send})
}

// UnsubscribeURL is the link that unsubscribes the subscription.
func (c *Channel) UnsubscribeURL(sub *herald.Subscription, cfg Config) string {
	return strings.TrimSuffix(c.cfg.PublicURL(), "/") + "/v1/unsubscribe/" +
		channel.LinkToken(channel.PurposeUnsubscribe, sub.ID, channel.DecodeLinkKey(cfg.LinkKey))
}

// ConfirmURL is the link that confirms the subscription's current round
// of verification.
func (c *Channel) ConfirmURL(sub *herald.Subscription) string {
	return strings.TrimSuffix(c.cfg.PublicURL(), "/") + "/v1/confirm/" + channel.ConfirmToken(sub)
}

type sink struct {
	c   *Channel
	sub *herald.Subscription
	cfg Config
	set *template.Set
	own bool // the config has templates of its own
}

// send renders and sends one message (one event, or a digest). A template
// that fails on the event (a missing field) is Rejected: it would fail on
// every retry.
func (s *sink) send(ctx context.Context, d template.Data, id string) herald.DeliveryResult {
	set, fail := s.c.cfg.Library.Choose(ctx, s.sub.Tenant, s.own, s.set, s.cfg.Template, d)
	if fail != nil {
		return *fail
	}
	out, err := set.Render(d)
	if err != nil {
		return herald.DeliveryResult{Outcome: herald.Rejected, Err: "template-error", Detail: err.Error()}
	}
	msg, err := s.c.message(s.cfg, out, d.UnsubscribeURL, id+"."+s.sub.ID)
	if err != nil {
		return herald.DeliveryResult{Outcome: herald.Rejected, Err: "bad-message", Detail: err.Error()}
	}
	msg.SetGenHeader("X-Herald-Topic", d.Topic)
	if d.Type != "" {
		msg.SetGenHeader("X-Herald-Event-Type", d.Type)
	}
	if d.Events != nil {
		msg.SetGenHeader("X-Herald-Digest-Events", fmt.Sprint(len(d.Events)))
	} else {
		msg.SetGenHeader("X-Herald-Event-Id", d.ID)
		if d.Key != "" {
			msg.SetGenHeader("X-Herald-Event-Key", d.Key)
		}
	}
	return s.c.send(ctx, msg)
}

// message builds a multipart message to the config's address.
func (c *Channel) message(cfg Config, out template.Output, unsub, id string) (*gomail.Msg, error) {
	msg := gomail.NewMsg(gomail.WithNoDefaultUserAgent())
	if err := msg.FromFormat(c.from.Name, c.from.Address); err != nil {
		return nil, err
	}
	if err := msg.AddToFormat(cfg.Name, cfg.Address); err != nil {
		return nil, err
	}
	msg.Subject(out.Subject)
	msg.SetMessageIDWithValue(id + "@" + c.domain)
	msg.SetDate()
	msg.SetGenHeader(gomail.HeaderListUnsubscribe, "<"+unsub+">")
	msg.SetGenHeader(gomail.HeaderListUnsubscribePost, "List-Unsubscribe=One-Click")
	msg.SetGenHeader("Auto-Submitted", "auto-generated")
	msg.SetBodyString(gomail.TypeTextPlain, out.Text+"\n\n--\nUnsubscribe: "+unsub+"\n")
	msg.AddAlternativeString(gomail.TypeTextHTML, out.HTML+
		`<hr><p style="font-size:small;color:#666"><a href="`+template.HTMLAttr(unsub)+`">Unsubscribe</a></p>`)
	return msg, nil
}

// send sends msg and classifies the answer.
func (c *Channel) send(ctx context.Context, msg *gomail.Msg) herald.DeliveryResult {
	start := time.Now()
	err := c.sender.Send(ctx, msg)
	res := herald.DeliveryResult{Latency: time.Since(start)}
	if err == nil {
		res.Outcome, res.StatusCode = herald.Delivered, 250
		return res
	}
	code, reason := Classify(err)
	res.StatusCode, res.Err, res.Detail = code, reason, err.Error()
	switch {
	case code >= 500:
		res.Outcome = herald.Rejected
	default:
		res.Outcome = herald.Failed
	}
	return res
}

// Classify returns the SMTP reply code of a send error (0 when the server
// never answered: a connection failure, a timeout) and its public reason:
// "smtp-550", "timeout", "connection-failed".
func Classify(err error) (int, string) {
	var se *gomail.SendError
	if errors.As(err, &se) && se.ErrorCode() >= 400 {
		return se.ErrorCode(), fmt.Sprintf("smtp-%d", se.ErrorCode())
	}
	if errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "timeout") {
		return 0, "timeout"
	}
	return 0, "connection-failed"
}

// Verify sends the confirmation message: a link to confirm, and nothing
// else until the person follows it.
func (c *Channel) Verify(ctx context.Context, sub *herald.Subscription) herald.DeliveryResult {
	cfg, err := ParseConfig(sub.Config)
	if err != nil {
		return herald.DeliveryResult{Outcome: herald.Failed, Err: "bad-config", Detail: err.Error()}
	}
	confirm := c.ConfirmURL(sub)
	unsub := c.UnsubscribeURL(sub, cfg)
	var text, html bytes.Buffer
	fmt.Fprintf(&text, "Someone asked to send you notifications of %q at this address.\n\nTo confirm, open this link:\n%s\n\nIf you did not ask for this, ignore this message: nothing will be sent.\n", sub.Topic, confirm)
	fmt.Fprintf(&html, `<p>Someone asked to send you notifications of <b>%s</b> at this address.</p><p><a href="%s">Confirm the subscription</a></p><p>If you did not ask for this, ignore this message: nothing will be sent.</p>`,
		template.HTMLText(sub.Topic), template.HTMLAttr(confirm))
	out := template.Output{Subject: "Confirm your subscription to " + sub.Topic, Text: text.String(), HTML: html.String()}
	msg, err := c.message(cfg, out, unsub, fmt.Sprintf("confirm.%s.%d", sub.ID, sub.ChallengeTries+1))
	if err != nil {
		return herald.DeliveryResult{Outcome: herald.Failed, Err: "bad-message", Detail: err.Error()}
	}
	res := c.send(ctx, msg)
	if res.Outcome == herald.Delivered {
		res.Outcome, res.Err = herald.Sent, "a confirmation link was sent to "+cfg.Address
	} else if res.Outcome == herald.Rejected {
		res.Outcome = herald.Failed
	}
	return res
}
