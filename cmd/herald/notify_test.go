package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald/channel/email/smtptest"
)

// notifyServer starts a Herald in dir sending mail to mail, with now (nil
// for time.Now) as the clock of quiet hours.
func notifyServer(t *testing.T, dir string, mail *smtptest.Server, now func() time.Time) *Main {
	t.Helper()
	ca := filepath.Join(dir, "smtp-ca.pem")
	if err := os.WriteFile(ca, mail.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return peopleServer(t, dir, now, func(c *Config) {
		c.EmailSMTPHost, c.EmailSMTPPort, c.EmailSMTPTLS = mail.Host, mail.Port, "starttls"
		c.EmailSMTPUsername, c.EmailSMTPPassword, c.EmailSMTPCAFile = "herald", "mail-pass-123", ca
		c.EmailFrom = "Herald <herald@example.org>"
	})
}

// peopleServer starts a Herald in dir configured by configure, with now
// (nil for time.Now) as the clock of quiet hours.
func peopleServer(t *testing.T, dir string, now func() time.Time, configure func(*Config)) *Main {
	t.Helper()
	return peopleServerHook(t, dir, func(m *Main) { m.peopleNow = now }, configure)
}

// peopleServerHook starts a Herald in dir configured by configure, after
// hook set what tests may set on Main.
func peopleServerHook(t testing.TB, dir string, hook func(*Main), configure func(*Config)) *Main {
	t.Helper()
	stderr := &syncBuffer{}
	m := NewMain(io.Discard, stderr, func(string) string { return "" })
	m.Config.Addr, m.Config.DataDir, m.Config.AdminKey = "127.0.0.1:0", dir, testAdminKey
	m.Config.LogLevel, m.Config.AllowPrivateDestinations = -8, true
	m.Config.ShutdownTimeout, m.Config.ShutdownDrainDelay = 10*time.Second, 0
	configure(&m.Config)
	hook(m)
	if err := m.Run(t.Context()); err != nil {
		t.Fatalf("Run: %v\nlog:\n%s", err, stderr)
	}
	t.Cleanup(func() {
		_ = m.Close(context.Background()) // idempotent: a test may close it first
		if t.Failed() {
			t.Logf("server log:\n%s", stderr)
		}
	})
	return m
}

func notifyMail(t *testing.T) *smtptest.Server {
	return smtptest.Start(t, smtptest.Options{TLS: smtptest.StartTLS, Username: "herald", Password: "mail-pass-123"})
}

// waitFor waits for cond up to limit (for waits longer than eventually's).
func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", limit, what)
		}
		<-tick.C
	}
}

func problemField(t *testing.T, status int, body []byte) string {
	t.Helper()
	var p struct {
		Type, Detail, Field string
	}
	if status != 400 || json.Unmarshal(body, &p) != nil || p.Type == "" || p.Detail == "" {
		t.Fatalf("want a 400 problem, got %d %s", status, body)
	}
	return p.Field
}

// Named templates through the API and the real binary: bad templates are
// refused at write time naming the field; a subscription that names a
// template uses it; one that names none gets the template whose topic and
// event type match the event, else the defaults; a subscription may not
// name a template that does not exist; deleting one makes its
// subscriptions' deliveries fail (retried) until it is back.
func TestEmailNamedTemplates(t *testing.T) {
	t.Parallel()
	mail := notifyMail(t)
	m := notifyServer(t, t.TempDir(), mail, nil)
	emailMust(t, m, 201, "PUT", "/v1/topics/orders", `{}`)

	for _, c := range []struct{ body, field string }{
		{`{"subject":"{{.Topik}}"}`, "subject"},
		{`{"text":"{{if}}"}`, "text"},
		{`{"html":"<a href={{.Payload.x}}"}`, "html"},
		{`{"topic":"orders..x"}`, "topic"},
		{`{"event_type":"order.shipped"}`, "event_type"},
		{`{"subjekt":"x"}`, "subjekt"},
	} {
		status, b := emailAPICall(t, m, "PUT", "/v1/templates/bad", c.body)
		if f := problemField(t, status, b); f != c.field {
			t.Errorf("PUT %s: field %q, want %q (%s)", c.body, f, c.field, b)
		}
	}
	if status, b := emailAPICall(t, m, "PUT", "/v1/templates/Bad Name", `{}`); problemField(t, status, b) != "name" {
		t.Errorf("bad name: %s", b)
	}

	emailMust(t, m, 201, "PUT", "/v1/templates/shipped", `{"topic":"orders","event_type":"order.shipped",
		"subject":"Order {{.Payload.id}} shipped","text":"Your order {{.Payload.id}} is on its way."}`)
	emailMust(t, m, 200, "PUT", "/v1/templates/shipped", `{"topic":"orders","event_type":"order.shipped",
		"subject":"Order {{.Payload.id}} has shipped","text":"Your order {{.Payload.id}} is on its way."}`)
	emailMust(t, m, 201, "PUT", "/v1/templates/plain", `{"subject":"Plain {{.Payload.id}}","text":"plain","html":"<p>{{.Payload.id}}</p>"}`)

	var list struct {
		Templates []struct{ Name, Subject string } `json:"templates"`
	}
	_ = json.Unmarshal(emailMust(t, m, 200, "GET", "/v1/templates", ""), &list)
	if len(list.Templates) != 2 || list.Templates[0].Name != "plain" || list.Templates[1].Subject != "Order {{.Payload.id}} has shipped" {
		t.Fatalf("list: %+v", list)
	}
	// A preview of a stored template.
	if b := emailMust(t, m, 200, "POST", "/v1/templates:render", `{"template":"shipped","event":{"payload":{"id":7}}}`); !strings.Contains(string(b), "Order 7 has shipped") {
		t.Fatalf("preview: %s", b)
	}

	status, b := emailAPICall(t, m, "POST", "/v1/subscriptions", `{"topic":"orders","channel":"email","verification":"none","config":{"address":"x@example.com","template":"nope"}}`)
	if f := problemField(t, status, b); f != "config.template" {
		t.Fatalf("naming a missing template: field %q: %s", f, b)
	}
	status, b = emailAPICall(t, m, "POST", "/v1/subscriptions", `{"topic":"orders","channel":"email","verification":"none","config":{"address":"x@example.com","template":"plain","subject":"x"}}`)
	if f := problemField(t, status, b); f != "config.template" {
		t.Fatalf("template beside own templates: field %q: %s", f, b)
	}

	emailMust(t, m, 201, "POST", "/v1/subscriptions", `{"topic":"orders","channel":"email","verification":"none","config":{"address":"ann@example.com"}}`)
	var named emailSub
	_ = json.Unmarshal(emailMust(t, m, 201, "POST", "/v1/subscriptions", `{"topic":"orders","channel":"email","verification":"none","config":{"address":"bob@example.com","template":"plain"}}`), &named)
	if !strings.Contains(string(named.Config), `"template":"plain"`) {
		t.Fatalf("config shown: %s", named.Config)
	}

	for _, e := range []struct{ body, typ string }{{`{"id":1}`, "order.shipped"}, {`{"id":2}`, "order.paid"}} {
		if status, b := emailAPICall(t, m, "POST", "/v1/topics/orders/events", e.body, "Herald-Event-Type", e.typ); status != 201 {
			t.Fatalf("publish = %d %s", status, b)
		}
	}
	subjects := func(to string) []string {
		var out []string
		for _, msg := range mail.To(to) {
			out = append(out, msg.Header.Get("Subject"))
		}
		return out
	}
	eventually(t, "ann's two messages", func() bool { return len(mail.To("ann@example.com")) == 2 })
	eventually(t, "bob's two messages", func() bool { return len(mail.To("bob@example.com")) == 2 })
	ann := strings.Join(subjects("ann@example.com"), "|")
	if !strings.Contains(ann, "Order 1 has shipped") || !strings.Contains(ann, "orders: order.paid") {
		t.Fatalf("ann (matched by topic and type, else the default): %s", ann)
	}
	bob := strings.Join(subjects("bob@example.com"), "|")
	if !strings.Contains(bob, "Plain 1") || !strings.Contains(bob, "Plain 2") {
		t.Fatalf("bob (names plain): %s", bob)
	}

	// Deleted: bob's deliveries fail and retry; back again, they go.
	if status, _ := emailAPICall(t, m, "DELETE", "/v1/templates/plain", ""); status != 204 {
		t.Fatalf("delete = %d", status)
	}
	if status, _ := emailAPICall(t, m, "GET", "/v1/templates/plain", ""); status != 404 {
		t.Fatalf("get deleted = %d", status)
	}
	emailMust(t, m, 201, "POST", "/v1/topics/orders/events", `{"id":3}`)
	eventually(t, "a template-missing attempt", func() bool {
		return strings.Contains(string(emailMust(t, m, 200, "GET", "/v1/subscriptions/"+named.ID+"/attempts", "")), "template-missing")
	})
	emailMust(t, m, 201, "PUT", "/v1/templates/plain", `{"subject":"Plain again {{.Payload.id}}"}`)
	waitFor(t, 60*time.Second, "bob's message once the template is back", func() bool {
		return strings.Contains(strings.Join(subjects("bob@example.com"), "|"), "Plain again 3")
	})
}

// A digest gathers the events of its window into one message, and
// survives a restart: events gathered but not sent are not settled, so
// the restarted server gathers and sends them.
func TestEmailDigestAcrossRestart(t *testing.T) {
	t.Parallel()
	mail := notifyMail(t)
	dir := t.TempDir()
	m := notifyServer(t, dir, mail, nil)
	emailMust(t, m, 201, "PUT", "/v1/topics/news", `{}`)
	var sub emailSub
	_ = json.Unmarshal(emailMust(t, m, 201, "POST", "/v1/subscriptions", `{"topic":"news","channel":"email","verification":"none",
		"config":{"address":"dee@example.com","digest":{"window":"30s","max":50}}}`), &sub)
	if !strings.Contains(string(sub.Config), `"digest":{"window":"30s","max":50}`) {
		t.Fatalf("config: %s", sub.Config)
	}
	status, b := emailAPICall(t, m, "PATCH", "/v1/subscriptions/"+sub.ID, `{"config":{"address":"dee@example.com","digest":{"window":"2y"}}}`)
	if f := problemField(t, status, b); f != "config.digest.window" {
		t.Fatalf("bad window: field %q", f)
	}
	emailMust(t, m, 201, "POST", "/v1/topics/news/events:batch", `{"events":[{"data":{"n":1},"type":"a"},{"data":{"n":2},"type":"b"},{"data":{"n":3},"type":"c"}]}`)
	// Stop well inside the window (gathered or not, the events are not
	// settled).
	if err := m.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := len(mail.To("dee@example.com")); n != 0 {
		t.Fatalf("%d messages before the window ended", n)
	}

	m2 := notifyServer(t, dir, mail, nil)
	_ = m2
	waitFor(t, 90*time.Second, "the digest", func() bool { return len(mail.To("dee@example.com")) > 0 })
	msgs := mail.To("dee@example.com")
	if len(msgs) != 1 || msgs[0].Header.Get("X-Herald-Digest-Events") != "3" {
		t.Fatalf("%d messages, first with %q events; want one digest of 3", len(msgs), msgs[0].Header.Get("X-Herald-Digest-Events"))
	}
	for _, want := range []string{"3 events", `{"n":1}`, `{"n":3}`} {
		if !strings.Contains(msgs[0].Text, want) {
			t.Errorf("digest text lacks %q:\n%s", want, msgs[0].Text)
		}
	}
}

// Quiet hours hold messages until they end, by the subscriber's time
// zone (the clock is the test's): one subscription gets each held event
// alone, one with digest gets them as one message; a hold is no failed
// attempt.
func TestEmailQuietHours(t *testing.T) {
	t.Parallel()
	mail := notifyMail(t)
	paris, err := time.LoadLocation("Europe/Paris")
	if err != nil {
		t.Fatal(err)
	}
	// The clock says 06:59:45 in Paris now: quiet hours end in 15s.
	start := time.Now()
	fake := time.Date(2026, 1, 10, 6, 59, 45, 0, paris)
	quietEnd := start.Add(15 * time.Second)
	var offset atomic.Int64
	offset.Store(int64(fake.Sub(start)))
	now := func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	m := notifyServer(t, t.TempDir(), mail, now)
	emailMust(t, m, 201, "PUT", "/v1/topics/alerts", `{}`)

	status, b := emailAPICall(t, m, "POST", "/v1/subscriptions", `{"topic":"alerts","channel":"email","verification":"none",
		"config":{"address":"q@example.com","quiet_hours":{"start":"22:00","end":"07:00","time_zone":"Mars/Olympus"}}}`)
	if f := problemField(t, status, b); f != "config.quiet_hours.time_zone" {
		t.Fatalf("bad zone: field %q", f)
	}
	status, b = emailAPICall(t, m, "POST", "/v1/subscriptions", `{"topic":"alerts","channel":"email","verification":"none",
		"config":{"address":"q@example.com","quiet_hours":{"start":"25:00","end":"07:00"}}}`)
	if f := problemField(t, status, b); f != "config.quiet_hours.start" {
		t.Fatalf("bad start: field %q", f)
	}
	var alone, digest emailSub
	_ = json.Unmarshal(emailMust(t, m, 201, "POST", "/v1/subscriptions", `{"topic":"alerts","channel":"email","verification":"none",
		"config":{"address":"alone@example.com","quiet_hours":{"start":"22:00","end":"07:00","time_zone":"Europe/Paris"}}}`), &alone)
	_ = json.Unmarshal(emailMust(t, m, 201, "POST", "/v1/subscriptions", `{"topic":"alerts","channel":"email","verification":"none",
		"config":{"address":"digest@example.com","quiet_hours":{"start":"22:00","end":"07:00","time_zone":"Europe/Paris","digest":true}}}`), &digest)
	emailMust(t, m, 201, "POST", "/v1/topics/alerts/events:batch", `{"events":[{"data":{"n":1}},{"data":{"n":2}},{"data":{"n":3}}]}`)

	waitFor(t, 60*time.Second, "the held messages", func() bool {
		return len(mail.To("alone@example.com")) == 3 && len(mail.To("digest@example.com")) >= 1
	})
	if time.Now().Before(quietEnd) {
		t.Fatalf("messages arrived during quiet hours")
	}
	msgs := mail.To("digest@example.com")
	if len(msgs) != 1 || msgs[0].Header.Get("X-Herald-Digest-Events") != "3" {
		t.Fatalf("digest subscriber: %d messages, first of %q events; want one of 3", len(msgs), msgs[0].Header.Get("X-Herald-Digest-Events"))
	}
	for _, id := range []string{alone.ID, digest.ID} {
		if b := emailMust(t, m, 200, "GET", "/v1/subscriptions/"+id+"/attempts", ""); strings.Contains(string(b), "failure") {
			t.Errorf("a hold was logged as a failed attempt: %s", b)
		}
	}
}

// SMS uses library templates (matched by topic) and quiet hours too: a
// held message goes out when they end, as no failed attempt.
func TestSMSLibraryTemplateAndQuietHours(t *testing.T) {
	t.Parallel()
	p := &smsProvider{}
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	// The clock says 07:59:50 in Tokyo: quiet hours end in 10s.
	start := time.Now()
	tokyo, err := time.LoadLocation("Asia/Tokyo")
	if err != nil {
		t.Fatal(err)
	}
	offset := time.Date(2026, 1, 10, 7, 59, 50, 0, tokyo).Sub(start)
	quietEnd := start.Add(10 * time.Second)
	m := peopleServer(t, t.TempDir(), func() time.Time { return time.Now().Add(offset) }, func(c *Config) {
		c.SMSProvider, c.SMSTwilioURL, c.SMSTwilioAccountSID, c.SMSTwilioAuthToken, c.SMSFrom = "twilio", srv.URL, "ACtest", "sms-token", "+15005550006"
	})
	emailMust(t, m, 201, "PUT", "/v1/topics/pager.db", `{}`)
	emailMust(t, m, 201, "PUT", "/v1/templates/pager", `{"topic":"pager.*","text":"PAGE {{.Payload.msg}}"}`)
	status, b := emailAPICall(t, m, "POST", "/v1/subscriptions", `{"topic":"pager.db","channel":"sms","verification":"none","config":{"phone":"+14155550199","template":"pager","text":"x"}}`)
	if f := problemField(t, status, b); f != "config.template" {
		t.Fatalf("template beside text: field %q", f)
	}
	var sub emailSub
	_ = json.Unmarshal(emailMust(t, m, 201, "POST", "/v1/subscriptions", `{"topic":"pager.db","channel":"sms","verification":"none",
		"config":{"phone":"+14155550199","quiet_hours":{"start":"23:00","end":"08:00","time_zone":"Asia/Tokyo"}}}`), &sub)
	emailMust(t, m, 201, "POST", "/v1/topics/pager.db/events", `{"msg":"disk full"}`)
	waitFor(t, 60*time.Second, "the held SMS", func() bool { return len(p.to("+14155550199")) == 1 })
	if time.Now().Before(quietEnd) {
		t.Fatalf("the SMS went out in quiet hours")
	}
	if got := p.to("+14155550199")[0]; !strings.HasPrefix(got, "PAGE disk full\nStop: ") {
		t.Fatalf("SMS %q, want the library template's text", got)
	}
	if b := emailMust(t, m, 200, "GET", "/v1/subscriptions/"+sub.ID+"/attempts", ""); strings.Contains(string(b), "failure") {
		t.Errorf("the hold was logged as a failed attempt: %s", b)
	}
}
