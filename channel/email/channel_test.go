package email_test

import (
	"context"
	"encoding/json"
	"net"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/channel"
	"github.com/heraldhq/herald/channel/email"
	"github.com/heraldhq/herald/channel/email/smtptest"
)

const publicURL = "https://herald.example"

func newChannel(t *testing.T, srv *smtptest.Server, mut func(*email.ServerConfig)) *email.Channel {
	t.Helper()
	cfg := email.ServerConfig{Host: srv.Host, Port: srv.Port, TLSConfig: srv.ClientTLS, Timeout: 5 * time.Second}
	if mut != nil {
		mut(&cfg)
	}
	sender, err := email.NewSender(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sender.Close)
	ch, err := email.NewChannel(sender, email.ChannelConfig{From: "Herald <herald@example.org>", PublicURL: func() string { return publicURL }})
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

func subscription(t *testing.T, ch *email.Channel, config string) *herald.Subscription {
	t.Helper()
	canon, err := ch.Validate(t.Context(), channel.ValidateParams{Config: json.RawMessage(config)})
	if err != nil {
		t.Fatalf("Validate(%s): %v", config, err)
	}
	return &herald.Subscription{ID: "sub_" + strings.ToLower(herald.NewKeyID()[4:]), Topic: "orders.>", Channel: "email", Config: canon,
		State: herald.StateActive, Timeout: 5 * time.Second, Challenge: "challenge-token-0123456789"}
}

func event(payload string) *herald.Event {
	now := time.Now().UTC()
	return &herald.Event{ID: herald.NewID(now), Topic: "orders.paid", Seq: 7, Type: "order.paid", Key: "o-1", Time: now,
		ContentType: "application/json", Payload: []byte(payload)}
}

func deliver(t *testing.T, ch *email.Channel, sub *herald.Subscription, ev *herald.Event) herald.DeliveryResult {
	t.Helper()
	sink, err := ch.Open(t.Context(), sub)
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close(t.Context())
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	return sink.Deliver(ctx, ev, 1)
}

// A delivery through STARTTLS and AUTH PLAIN arrives as one multipart
// message with the templates rendered, the HTML escaped, a Message-ID made
// from the event and one-click unsubscribe headers whose link checks.
func TestDeliverStartTLSAuthPlain(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t, smtptest.Options{TLS: smtptest.StartTLS, Username: "herald", Password: "s3cret-pass"})
	ch := newChannel(t, srv, func(c *email.ServerConfig) { c.Username, c.Password = "herald", "s3cret-pass" })
	sub := subscription(t, ch, `{"address":"ann@example.com","name":"Ann",
		"subject":"Order {{.Payload.order}} paid",
		"text":"Order {{.Payload.order}}: {{.Payload.amount}} EUR",
		"html":"<p>Order <b>{{.Payload.order}}</b> by {{.Payload.who}}</p>"}`)
	ev := event(`{"order":"A-17","amount":42.5,"who":"<script>x</script>"}`)
	if res := deliver(t, ch, sub, ev); res.Outcome != herald.Delivered {
		t.Fatalf("Deliver = %+v", res)
	}
	msgs := srv.To("ann@example.com")
	if len(msgs) != 1 {
		t.Fatalf("received %d messages, want 1", len(msgs))
	}
	m := msgs[0]
	if got := m.Header.Get("Subject"); got != "Order A-17 paid" {
		t.Errorf("Subject = %q", got)
	}
	if got, want := m.Header.Get("Message-Id"), "<"+ev.ID+"."+sub.ID+"@example.org>"; got != want {
		t.Errorf("Message-ID = %q, want %q", got, want)
	}
	if got := m.Header.Get("List-Unsubscribe-Post"); got != "List-Unsubscribe=One-Click" {
		t.Errorf("List-Unsubscribe-Post = %q", got)
	}
	unsub := strings.Trim(m.Header.Get("List-Unsubscribe"), "<>")
	token, ok := strings.CutPrefix(unsub, publicURL+"/v1/unsubscribe/")
	if !ok || !channel.CheckLinkToken(token, channel.PurposeUnsubscribe, sub.ID, ch.LinkKey(sub.Config)) {
		t.Errorf("List-Unsubscribe = %q: not a valid unsubscribe link", unsub)
	}
	if !strings.Contains(m.Header.Get("Content-Type"), "multipart/alternative") {
		t.Errorf("Content-Type = %q, want multipart/alternative", m.Header.Get("Content-Type"))
	}
	if !strings.Contains(m.Text, "Order A-17: 42.5 EUR") || !strings.Contains(m.Text, unsub) {
		t.Errorf("text part = %q", m.Text)
	}
	if !strings.Contains(m.HTML, "&lt;script&gt;") || strings.Contains(m.HTML, "<script>") || !strings.Contains(m.HTML, "Unsubscribe") {
		t.Errorf("html part = %q: want the payload escaped and an unsubscribe link", m.HTML)
	}
	if m.Header.Get("X-Herald-Event-Id") != ev.ID || !strings.Contains(m.Header.Get("To"), "ann@example.com") {
		t.Errorf("headers = %v", m.Header)
	}
}

// Implicit TLS with AUTH LOGIN; and a wrong password fails (and retries)
// rather than sending.
func TestDeliverImplicitTLSAuthLogin(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t, smtptest.Options{TLS: smtptest.Implicit, Username: "u", Password: "right"})
	ch := newChannel(t, srv, func(c *email.ServerConfig) {
		c.TLS, c.Auth, c.Username, c.Password = email.TLSImplicit, email.AuthLogin, "u", "right"
	})
	sub := subscription(t, ch, `{"address":"bob@example.com"}`)
	if res := deliver(t, ch, sub, event(`{"a":1}`)); res.Outcome != herald.Delivered {
		t.Fatalf("Deliver = %+v", res)
	}
	if n := len(srv.To("bob@example.com")); n != 1 {
		t.Fatalf("received %d", n)
	}
	bad := newChannel(t, srv, func(c *email.ServerConfig) { c.TLS, c.Username, c.Password = email.TLSImplicit, "u", "wrong" })
	if res := deliver(t, bad, subscription(t, bad, `{"address":"bob@example.com"}`), event(`{}`)); res.Outcome != herald.Failed {
		t.Fatalf("Deliver with a wrong password = %+v, want Failed", res)
	}
	if n := len(srv.To("bob@example.com")); n != 1 {
		t.Fatalf("received %d after a failed login, want still 1", n)
	}
}

// STARTTLS is required: a server that does not offer it gets nothing.
func TestStartTLSRequired(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t, smtptest.Options{TLS: smtptest.None})
	ch := newChannel(t, srv, nil)
	if res := deliver(t, ch, subscription(t, ch, `{"address":"c@example.com"}`), event(`{}`)); res.Outcome != herald.Failed {
		t.Fatalf("Deliver without STARTTLS = %+v, want Failed", res)
	}
	plain := newChannel(t, srv, func(c *email.ServerConfig) { c.TLS = email.TLSNone })
	if res := deliver(t, plain, subscription(t, plain, `{"address":"c@example.com"}`), event(`{}`)); res.Outcome != herald.Delivered {
		t.Fatalf("Deliver with tls none = %+v", res)
	}
}

// 5xx is Rejected (no retry), 4xx Failed (retry), with the code kept.
func TestRepliesClassify(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t, smtptest.Options{Reply: func(rcpt string) error {
		switch {
		case strings.HasPrefix(rcpt, "gone@"):
			return smtptest.Reject(550, "no such user")
		case strings.HasPrefix(rcpt, "later@"):
			return smtptest.Reject(451, "try again later")
		}
		return nil
	}})
	ch := newChannel(t, srv, nil)
	for _, c := range []struct {
		addr string
		want herald.DeliveryOutcome
		code int
	}{{"gone@example.com", herald.Rejected, 550}, {"later@example.com", herald.Failed, 451}, {"fine@example.com", herald.Delivered, 250}} {
		res := deliver(t, ch, subscription(t, ch, `{"address":"`+c.addr+`"}`), event(`{}`))
		if res.Outcome != c.want || res.StatusCode != c.code {
			t.Errorf("%s: Deliver = %+v, want outcome %v code %d", c.addr, res, c.want, c.code)
		}
	}
	// The session survives refused recipients: one session for all three.
	if n := srv.Sessions(); n != 1 {
		t.Errorf("sessions = %d, want 1 reused", n)
	}
}

// Many deliveries at once share at most MaxConns sessions.
func TestConnectionReuse(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t, smtptest.Options{})
	ch := newChannel(t, srv, func(c *email.ServerConfig) { c.MaxConns = 3 })
	sub := subscription(t, ch, `{"address":"many@example.com"}`)
	sink, err := ch.Open(t.Context(), sub)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 60 {
		wg.Go(func() {
			if res := sink.Deliver(t.Context(), event(`{}`), 1); res.Outcome != herald.Delivered {
				t.Errorf("Deliver = %+v", res)
			}
		})
	}
	wg.Wait()
	if n := len(srv.To("many@example.com")); n != 60 {
		t.Fatalf("received %d, want 60", n)
	}
	if n := srv.Sessions(); n > 3 {
		t.Fatalf("sessions = %d, want at most 3", n)
	}
}

// An unreachable server fails (to retry) by the deadline.
func TestUnreachableFails(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	sender, err := email.NewSender(email.ServerConfig{Host: "127.0.0.1", Port: port, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer sender.Close()
	ch, err := email.NewChannel(sender, email.ChannelConfig{From: "h@example.org", PublicURL: func() string { return publicURL }})
	if err != nil {
		t.Fatal(err)
	}
	if res := deliver(t, ch, subscription(t, ch, `{"address":"x@example.com"}`), event(`{}`)); res.Outcome != herald.Failed || res.Err != "connection-failed" {
		t.Fatalf("Deliver = %+v", res)
	}
}

// Verify sends a confirmation link whose token checks against the
// subscription's challenge and nothing else.
func TestVerifySendsConfirmationLink(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t, smtptest.Options{})
	ch := newChannel(t, srv, nil)
	sub := subscription(t, ch, `{"address":"dora@example.com"}`)
	sub.State = herald.StatePending
	res := ch.Verify(t.Context(), sub)
	if res.Outcome != herald.Sent {
		t.Fatalf("Verify = %+v, want Sent", res)
	}
	msgs := srv.To("dora@example.com")
	if len(msgs) != 1 {
		t.Fatalf("received %d", len(msgs))
	}
	link := regexp.MustCompile(regexp.QuoteMeta(publicURL) + `/v1/confirm/(\S+)`).FindStringSubmatch(msgs[0].Text)
	if link == nil {
		t.Fatalf("no confirmation link in %q", msgs[0].Text)
	}
	if !channel.CheckLinkToken(link[1], channel.PurposeConfirm, sub.ID, []byte(sub.Challenge)) {
		t.Fatalf("token %q does not check", link[1])
	}
	if channel.CheckLinkToken(link[1], channel.PurposeConfirm, sub.ID, []byte("another round")) ||
		channel.CheckLinkToken(link[1], channel.PurposeUnsubscribe, sub.ID, []byte(sub.Challenge)) {
		t.Fatal("the token checks for another challenge or purpose")
	}
	if !strings.Contains(msgs[0].Header.Get("Subject"), "orders.>") {
		t.Errorf("Subject = %q", msgs[0].Header.Get("Subject"))
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t, smtptest.Options{})
	ch := newChannel(t, srv, nil)
	for _, c := range []struct{ config, field string }{
		{`{}`, "address"},
		{`{"address":"not an address"}`, "address"},
		{`{"address":"Ann <ann@example.com>"}`, "address"},
		{`{"address":"ann@example.com","subject":"{{.Topic"}`, "subject"},
		{`{"address":"ann@example.com","text":"{{.Topik}}"}`, "text"},
		{`{"address":"ann@example.com","html":"{{nofunc .}}"}`, "html"},
		{`{"address":"ann@example.com","colour":"red"}`, "colour"},
	} {
		_, err := ch.Validate(t.Context(), channel.ValidateParams{Config: json.RawMessage(c.config)})
		e, ok := err.(*herald.Error)
		if !ok || e.Code != herald.CodeInvalid || e.Field != c.field {
			t.Errorf("Validate(%s) = %v, want CodeInvalid on %q", c.config, err, c.field)
		}
	}
	// A template naming a payload member passes: the payload is unknown now.
	canon, err := ch.Validate(t.Context(), channel.ValidateParams{Config: json.RawMessage(`{"address":"ann@example.com","text":"{{.Payload.amount}}"}`)})
	if err != nil {
		t.Fatal(err)
	}
	// The link key is kept on an update and never public.
	again, err := ch.Validate(t.Context(), channel.ValidateParams{Config: json.RawMessage(`{"address":"ann@example.com"}`), Previous: canon})
	if err != nil {
		t.Fatal(err)
	}
	if string(ch.LinkKey(again)) != string(ch.LinkKey(canon)) || len(ch.LinkKey(canon)) != 32 {
		t.Fatal("the link key changed on an update")
	}
	if strings.Contains(string(ch.Public(canon)), "link_key") {
		t.Fatalf("Public = %s", ch.Public(canon))
	}
	if !ch.Reverify(canon, json.RawMessage(`{"address":"other@example.com"}`)) || ch.Reverify(canon, again) {
		t.Fatal("Reverify: want true for a new address only")
	}
}

// A template that fails on an event (a payload member it lacks) is
// Rejected: a retry would fail the same way.
func TestTemplateErrorRejected(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t, smtptest.Options{})
	ch := newChannel(t, srv, nil)
	sub := subscription(t, ch, `{"address":"t@example.com","text":"{{.Payload.amount}}"}`)
	res := deliver(t, ch, sub, event(`{"other":1}`))
	if res.Outcome != herald.Rejected || res.Err != "template-error" || !strings.Contains(res.Detail, "amount") {
		t.Fatalf("Deliver = %+v", res)
	}
}
