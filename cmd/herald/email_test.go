package main

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/heraldhq/herald/channel/email/smtptest"
)

// call makes one API request as admin and returns the status and body.
func emailAPICall(t *testing.T, m *Main, method, path, body string, header ...string) (int, []byte) {
	t.Helper()
	return emailCallURL(t, method, m.URL()+path, body, append([]string{"Authorization", "Bearer " + testAdminKey, "Content-Type", "application/json"}, header...)...)
}

func emailCallURL(t *testing.T, method, url, body string, header ...string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func emailMust(t *testing.T, m *Main, want int, method, path, body string) []byte {
	t.Helper()
	status, b := emailAPICall(t, m, method, path, body)
	if status != want {
		t.Fatalf("%s %s = %d %s, want %d", method, path, status, b, want)
	}
	return b
}

type emailSub struct {
	ID          string          `json:"id"`
	State       string          `json:"state"`
	StateReason string          `json:"state_reason"`
	Config      json.RawMessage `json:"config"`
}

func emailGetSub(t *testing.T, m *Main, id string) emailSub {
	t.Helper()
	var s emailSub
	if err := json.Unmarshal(emailMust(t, m, 200, "GET", "/v1/subscriptions/"+id, ""), &s); err != nil {
		t.Fatal(err)
	}
	return s
}

// emailServer starts an SMTP server with STARTTLS and AUTH and a Herald
// sending through it, trusting its certificate by email.smtp-ca-file.
func emailServer(t *testing.T, reply func(string) error) (*Main, *smtptest.Server) {
	t.Helper()
	mail := smtptest.Start(t, smtptest.Options{TLS: smtptest.StartTLS, Username: "herald", Password: "mail-pass-123", Reply: reply})
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, mail.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	m, _ := testServer(t, t.TempDir(), func(c *Config) {
		c.EmailSMTPHost, c.EmailSMTPPort, c.EmailSMTPTLS = mail.Host, mail.Port, "starttls"
		c.EmailSMTPUsername, c.EmailSMTPPassword, c.EmailSMTPCAFile = "herald", "mail-pass-123", ca
		c.EmailFrom = "Herald <herald@example.org>"
	})
	return m, mail
}

var emailConfirmLink = regexp.MustCompile(`http://\S+/v1/confirm/\S+`)

// The whole life of an email subscription through the real server and a
// real SMTP server: created pending, a confirmation message and nothing
// else; the link confirms it (once); events arrive as multipart mail with
// one-click unsubscribe headers; the one-click POST unsubscribes, is
// announced, and nothing more arrives.
func TestEmailSubscribeConfirmDeliverUnsubscribe(t *testing.T) {
	t.Parallel()
	m, mail := emailServer(t, nil)
	emailMust(t, m, 201, "PUT", "/v1/topics/alerts", `{}`)

	var sub emailSub
	body := emailMust(t, m, 201, "POST", "/v1/subscriptions", `{"topic":"alerts","channel":"email",
		"config":{"address":"ann@example.com","name":"Ann","subject":"Alert: {{.Payload.level}}","text":"Level {{.Payload.level}} on {{.Topic}}"}}`)
	if err := json.Unmarshal(body, &sub); err != nil {
		t.Fatal(err)
	}
	if sub.State != "pending" || strings.Contains(string(body), "link_key") {
		t.Fatalf("created: %s", body)
	}
	emailMust(t, m, 201, "POST", "/v1/topics/alerts/events", `{"level":"early"}`)

	eventually(t, "the confirmation message", func() bool { return len(mail.To("ann@example.com")) > 0 })
	msgs := mail.To("ann@example.com")
	if len(msgs) != 1 || !strings.HasPrefix(msgs[0].Header.Get("Subject"), "Confirm") {
		t.Fatalf("before confirming: %d messages, first %q; want only the confirmation", len(msgs), msgs[0].Header.Get("Subject"))
	}
	link := emailConfirmLink.FindString(msgs[0].Text)
	if link == "" {
		t.Fatalf("no confirmation link in %q", msgs[0].Text)
	}

	// A forged token is refused; the real one confirms, once.
	if status, b := emailCallURL(t, "GET", link+"x", "", "Accept", "application/json"); status != 404 && status != 410 {
		t.Fatalf("forged link = %d %s", status, b)
	}
	status, page := emailCallURL(t, "GET", link, "", "Accept", "text/html")
	if status != 200 || !strings.Contains(string(page), "confirmed") || !strings.Contains(string(page), "alerts") {
		t.Fatalf("confirm = %d %s", status, page)
	}
	if s := emailGetSub(t, m, sub.ID); s.State != "active" {
		t.Fatalf("after confirming: %+v", s)
	}
	if status, b := emailCallURL(t, "GET", link, "", "Accept", "application/json"); status != 200 || !strings.Contains(string(b), "already confirmed") {
		t.Fatalf("second use = %d %s", status, b)
	}

	emailMust(t, m, 201, "POST", "/v1/topics/alerts/events", `{"level":"high"}`)
	var alert smtptest.Message
	eventually(t, "the alert", func() bool {
		for _, msg := range mail.To("ann@example.com") {
			if msg.Header.Get("Subject") == "Alert: high" {
				alert = msg
				return true
			}
		}
		return false
	})
	if !strings.Contains(alert.Text, "Level high on alerts") || alert.HTML == "" {
		t.Fatalf("alert parts: text %q html %q", alert.Text, alert.HTML)
	}
	if alert.Header.Get("List-Unsubscribe-Post") != "List-Unsubscribe=One-Click" || !strings.HasSuffix(alert.Header.Get("Message-Id"), "@example.org>") {
		t.Fatalf("alert headers: %v", alert.Header)
	}
	unsub := strings.Trim(alert.Header.Get("List-Unsubscribe"), "<>")

	// GET shows a page and changes nothing; the one-click POST unsubscribes.
	if status, page := emailCallURL(t, "GET", unsub, "", "Accept", "text/html"); status != 200 || !strings.Contains(string(page), `method="post"`) {
		t.Fatalf("unsubscribe page = %d %s", status, page)
	}
	if s := emailGetSub(t, m, sub.ID); s.State != "active" {
		t.Fatalf("a GET unsubscribed: %+v", s)
	}
	if status, b := emailCallURL(t, "POST", unsub, "List-Unsubscribe=One-Click", "Content-Type", "application/x-www-form-urlencoded"); status != 200 {
		t.Fatalf("one-click unsubscribe = %d %s", status, b)
	}
	if s := emailGetSub(t, m, sub.ID); s.State != "disabled" || s.StateReason != "unsubscribed by the recipient" {
		t.Fatalf("after unsubscribing: %+v", s)
	}
	if status, _ := emailCallURL(t, "POST", unsub, ""); status != 200 {
		t.Fatalf("unsubscribing again = %d", status)
	}
	eventually(t, "the unsubscription announced", func() bool {
		return strings.Contains(string(emailMust(t, m, 200, "GET", "/v1/topics/herald.subscriptions/events", "")), "herald.subscription.unsubscribed")
	})

	// Nothing more reaches Ann: a pre-confirmed subscription (admin) to
	// Bob on the same topic gets the next event, Ann does not.
	emailMust(t, m, 201, "POST", "/v1/subscriptions", `{"topic":"alerts","channel":"email","verification":"none","config":{"address":"bob@example.com"}}`)
	before := len(mail.To("ann@example.com"))
	emailMust(t, m, 201, "POST", "/v1/topics/alerts/events", `{"level":"after"}`)
	eventually(t, "bob's message", func() bool { return len(mail.To("bob@example.com")) > 0 })
	if n := len(mail.To("bob@example.com")); n != 1 {
		t.Fatalf("bob got %d messages, want only the event published after he subscribed", n)
	}
	if n := len(mail.To("ann@example.com")); n != before {
		t.Fatalf("ann got %d more messages after unsubscribing", n-before)
	}
	// Resuming asks Ann to confirm again instead of sending.
	var resumed emailSub
	_ = json.Unmarshal(emailMust(t, m, 200, "POST", "/v1/subscriptions/"+sub.ID+"/resume", ""), &resumed)
	if resumed.State != "pending" {
		t.Fatalf("resumed after unsubscribing: %+v, want pending", resumed)
	}
}

// An SMTP 5xx is a dead letter at once, and a run of them disables the
// subscription; a 4xx is retried until the server takes it.
func TestEmailBouncesAndRetries(t *testing.T) {
	t.Parallel()
	var later atomic.Int32
	m, mail := emailServer(t, func(rcpt string) error {
		switch {
		case strings.HasPrefix(rcpt, "nobody@"):
			return smtptest.Reject(550, "no such user")
		case strings.HasPrefix(rcpt, "later@") && later.Add(1) <= 2:
			return smtptest.Reject(451, "greylisted, try again later")
		}
		return nil
	})
	emailMust(t, m, 201, "PUT", "/v1/topics/news", `{}`)
	var bounce, retry emailSub
	_ = json.Unmarshal(emailMust(t, m, 201, "POST", "/v1/subscriptions", `{"topic":"news","channel":"email","verification":"none","config":{"address":"nobody@example.com"}}`), &bounce)
	_ = json.Unmarshal(emailMust(t, m, 201, "POST", "/v1/subscriptions", `{"topic":"news","channel":"email","verification":"none",
		"retry":{"initial":"10ms","max":"50ms"},"config":{"address":"later@example.com"}}`), &retry)
	for range 3 {
		emailMust(t, m, 201, "POST", "/v1/topics/news/events", `{"n":1}`)
	}
	eventually(t, "the bouncing subscription disabled", func() bool { return emailGetSub(t, m, bounce.ID).State == "disabled" })
	var dead struct {
		DeadLetters []struct {
			Attempts  int    `json:"attempts"`
			LastError string `json:"last_error"`
		} `json:"dead_letters"`
	}
	// The worker's last settlement may land after the state changed.
	eventually(t, "three dead letters", func() bool {
		if err := json.Unmarshal(emailMust(t, m, 200, "GET", "/v1/subscriptions/"+bounce.ID+"/dead-letters", ""), &dead); err != nil {
			t.Fatal(err)
		}
		return len(dead.DeadLetters) >= 3
	})
	if len(dead.DeadLetters) != 3 || dead.DeadLetters[0].Attempts != 1 || !strings.HasPrefix(dead.DeadLetters[0].LastError, "smtp-550") {
		t.Fatalf("dead letters: %+v", dead)
	}
	if s := emailGetSub(t, m, bounce.ID); !strings.Contains(s.StateReason, "refused 3 deliveries") {
		t.Fatalf("state reason %q", s.StateReason)
	}
	eventually(t, "the greylisted messages delivered", func() bool { return len(mail.To("later@example.com")) == 3 })
	attempts := string(emailMust(t, m, 200, "GET", "/v1/subscriptions/"+retry.ID+"/attempts", ""))
	if !strings.Contains(attempts, "smtp-451") {
		t.Fatalf("attempts show no 451: %s", attempts)
	}
}
