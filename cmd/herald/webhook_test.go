package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/client"
	"github.com/heraldhq/herald/webhook"
)

// endpoint is a webhook receiver written the way a customer would write
// one from the Standard Webhooks spec alone: it recomputes the HMAC itself
// rather than trusting Herald's own verifier.
type endpoint struct {
	srv *httptest.Server

	mu         sync.Mutex
	secrets    []string       // any of these may sign
	echo       bool           // answer verification challenges
	challenges []string       // tokens received
	failPct    int            // fail this % of attempts (deterministic)
	got        map[string]int // webhook-id -> 2xx answers
	bodies     map[string]string
	sigCount   map[int]int // number of v1 signatures per request -> requests
	badSig     int
	headers    http.Header // of the last event delivery
}

func newEndpoint(t *testing.T) *endpoint {
	e := &endpoint{got: map[string]int{}, bodies: map[string]string{}, sigCount: map[int]int{}}
	e.srv = httptest.NewServer(http.HandlerFunc(e.serve))
	t.Cleanup(e.srv.Close)
	return e
}

func (e *endpoint) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	// Herald may send the verification challenge before the create call
	// that returns the secret has returned to the test: wait for the test
	// to know it, as a real receiver is configured before it is used.
	deadline := time.Now().Add(10 * time.Second)
	for {
		e.mu.Lock()
		if len(e.secrets) > 0 || time.Now().After(deadline) {
			break
		}
		e.mu.Unlock()
		time.Sleep(2 * time.Millisecond) // polling a condition under a deadline
	}
	defer e.mu.Unlock()
	n, ok := e.checkSignature(r.Header, body)
	if !ok {
		e.badSig++
		w.WriteHeader(401)
		return
	}
	e.sigCount[n]++
	if r.Header.Get("Herald-Event-Type") == "herald.verification" {
		var c struct {
			Type, Challenge string
		}
		_ = json.Unmarshal(body, &c)
		e.challenges = append(e.challenges, c.Challenge)
		if e.echo {
			fmt.Fprintf(w, `{"challenge":%q}`, c.Challenge)
		}
		return
	}
	id := r.Header.Get("webhook-id")
	attempt, _ := strconv.Atoi(r.Header.Get("Herald-Attempt"))
	if e.failPct > 0 && hashPct(id, attempt) < e.failPct {
		w.WriteHeader(503)
		return
	}
	e.got[id]++
	e.bodies[id] = string(body)
	e.headers = r.Header.Clone()
	w.WriteHeader(204)
}

func hashPct(id string, attempt int) int {
	h := sha256.Sum256([]byte(id + "/" + strconv.Itoa(attempt)))
	return int(h[0]) * 100 / 256
}

// checkSignature implements the spec's verification: HMAC-SHA256 keyed with
// the base64 secret after "whsec_", over "id.timestamp.body", compared with
// each space-separated "v1,<base64>" item; the timestamp must be recent.
func (e *endpoint) checkSignature(h http.Header, body []byte) (int, bool) {
	id, ts, sig := h.Get("webhook-id"), h.Get("webhook-timestamp"), h.Get("webhook-signature")
	sec, err := strconv.ParseInt(ts, 10, 64)
	if id == "" || err != nil || time.Since(time.Unix(sec, 0)).Abs() > 5*time.Minute {
		return 0, false
	}
	items := strings.Fields(sig)
	for _, s := range e.secrets {
		key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(s, "whsec_"))
		if err != nil {
			continue
		}
		mac := hmac.New(sha256.New, key)
		mac.Write([]byte(id + "." + ts + "."))
		mac.Write(body)
		want := "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
		for _, it := range items {
			if hmac.Equal([]byte(it), []byte(want)) {
				return len(items), true
			}
		}
	}
	return len(items), false
}

func (e *endpoint) delivered() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.got)
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

func TestWebhookVerificationSigningAndFilters(t *testing.T) {
	m, _ := testServer(t, t.TempDir(), nil)
	c := adminClient(m)
	ctx := t.Context()
	if _, _, err := c.PutTopic(ctx, "deposits", client.TopicSettings{}); err != nil {
		t.Fatal(err)
	}
	ep := newEndpoint(t)
	sub, err := c.CreateSubscription(ctx, client.SubscriptionSpec{
		Topic: "deposits", URL: ep.srv.URL,
		Filter:  json.RawMessage(`{"types":["deposit.*"],"payload":{"amount":[{"numeric":[">=",100]}]}}`),
		Headers: map[string]string{"X-Team": "treasury"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if sub.State != herald.StatePending || !strings.HasPrefix(sub.Secret, "whsec_") {
		t.Fatalf("new subscription = %s with secret %q; want pending with a whsec_ secret", sub.State, sub.Secret)
	}
	ep.mu.Lock()
	ep.secrets = []string{sub.Secret}
	ep.mu.Unlock()

	// Published while pending: kept, but nothing is sent before the
	// endpoint agrees.
	publish := func(typ string, amount int) {
		t.Helper()
		if _, err := c.Publish(ctx, "deposits", fmt.Appendf(nil, `{"amount":%d}`, amount), client.PublishOptions{ContentType: "application/json", Type: typ, Key: "wallet-1"}); err != nil {
			t.Fatal(err)
		}
	}
	publish("deposit.created", 500)
	eventually(t, "a challenge", func() bool { ep.mu.Lock(); defer ep.mu.Unlock(); return len(ep.challenges) > 0 })
	if ep.delivered() != 0 {
		t.Fatal("an event reached an endpoint that has not answered the challenge")
	}
	// The endpoint cannot echo, so its owner confirms out of band with the
	// token from its request log; a wrong token is refused.
	if _, err := c.VerifySubscription(ctx, sub.ID, "wrong"); err == nil {
		t.Fatal("verify with a wrong token succeeded")
	}
	ep.mu.Lock()
	token := ep.challenges[0]
	ep.mu.Unlock()
	if s, err := c.VerifySubscription(ctx, sub.ID, token); err != nil || s.State != herald.StateActive {
		t.Fatalf("verify = %v, %v", s.State, err)
	}
	publish("deposit.created", 50)     // filtered out: amount < 100
	publish("withdrawal.created", 900) // filtered out: type
	publish("deposit.created", 100)
	eventually(t, "the two matching events", func() bool { return ep.delivered() == 2 })

	ep.mu.Lock()
	h := ep.headers
	bad := ep.badSig
	ep.mu.Unlock()
	if bad != 0 {
		t.Fatalf("%d requests failed an independent signature check", bad)
	}
	if h.Get("Herald-Topic") != "deposits" || h.Get("Herald-Event-Type") != "deposit.created" ||
		h.Get("Herald-Event-Key") != "wallet-1" || h.Get("X-Team") != "treasury" || h.Get("Content-Type") != "application/json" {
		t.Fatalf("delivery headers = %v", h)
	}
	// Go receivers can use the client's verifier on the same requests.
	if err := client.VerifyWebhook(sub.Secret, h, []byte(ep.bodies[h.Get("webhook-id")])); err != nil {
		t.Fatalf("client.VerifyWebhook: %v", err)
	}

	// Rotation: during the grace period every request carries two
	// signatures, and a receiver holding either secret accepts it.
	sec, err := c.RotateSecret(ctx, sub.ID, nil)
	if err != nil || sec.PreviousSecret != sub.Secret {
		t.Fatalf("rotate = %+v, %v", sec, err)
	}
	ep.mu.Lock()
	ep.secrets = []string{sec.Secret} // the receiver moved to the new secret first
	ep.mu.Unlock()
	publish("deposit.created", 1000)
	eventually(t, "the event after rotation", func() bool { return ep.delivered() == 3 })
	ep.mu.Lock()
	two, bad := ep.sigCount[2], ep.badSig
	ep.mu.Unlock()
	if two == 0 || bad != 0 {
		t.Fatalf("after rotation: %d requests with two signatures, %d rejected", two, bad)
	}
	ep.mu.Lock()
	ep.secrets = []string{sub.Secret} // ... or still on the old one
	ep.mu.Unlock()
	publish("deposit.created", 2000)
	eventually(t, "the event verified with the old secret", func() bool { return ep.delivered() == 4 })

	// The attempt log records the deliveries.
	var page client.AttemptPage
	eventually(t, "4 attempts in the log", func() bool {
		page, err = c.ListAttempts(ctx, sub.ID, client.AttemptListOptions{})
		return err == nil && len(page.Attempts) >= 4
	})
	if a := page.Attempts[0]; a.Outcome != herald.OutcomeSuccess || a.StatusCode != 204 || a.Attempt != 1 {
		t.Fatalf("newest attempt = %+v", a)
	}
}

func TestWebhookFailuresDeadLettersRedriveAndReplay(t *testing.T) {
	m, _ := testServer(t, t.TempDir(), nil)
	c := adminClient(m)
	ctx := t.Context()
	if _, _, err := c.PutTopic(ctx, "orders", client.TopicSettings{}); err != nil {
		t.Fatal(err)
	}
	ep := newEndpoint(t)
	ep.failPct = 30
	sub, err := c.CreateSubscription(ctx, client.SubscriptionSpec{
		Topic: "orders", URL: ep.srv.URL, Verification: herald.VerifyNone,
		Retry: herald.RetryPolicy{MaxAttempts: 20, Initial: 20 * time.Millisecond, Max: 100 * time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	ep.mu.Lock()
	ep.secrets = []string{sub.Secret}
	ep.mu.Unlock()
	events := make([]client.BatchEvent, 200)
	for i := range events {
		events[i] = client.BatchEvent{ContentType: "application/json", Payload: fmt.Appendf(nil, `{"i":%d}`, i)}
	}
	if _, err := c.PublishBatch(ctx, "orders", events); err != nil {
		t.Fatal(err)
	}
	eventually(t, "every event despite 30% failures", func() bool { return ep.delivered() == 200 })

	// An endpoint that refuses everything: retries run out, events become
	// dead letters, and a redrive delivers them once it is back.
	ep.mu.Lock()
	ep.failPct = 101
	ep.mu.Unlock()
	if _, err := c.UpdateSubscription(ctx, sub.ID, client.SubscriptionPatch{Retry: &herald.RetryPolicy{MaxAttempts: 2, Initial: 20 * time.Millisecond, Max: 20 * time.Millisecond}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.PublishBatch(ctx, "orders", events[:5]); err != nil {
		t.Fatal(err)
	}
	eventually(t, "5 dead letters", func() bool {
		p, err := c.ListDeadLetters(ctx, sub.ID, "", 100)
		return err == nil && len(p.DeadLetters) == 5
	})
	ep.mu.Lock()
	ep.failPct = 0
	ep.mu.Unlock()
	if n, err := c.RedriveDeadLetters(ctx, sub.ID, nil); err != nil || n != 5 {
		t.Fatalf("redrive = %d, %v", n, err)
	}
	eventually(t, "the redriven events", func() bool { return ep.delivered() == 205 })

	// Replay re-sends what is retained: the same webhook-ids again.
	if n, err := c.Replay(ctx, sub.ID, client.ReplayOptions{FromSeq: 1, ToSeq: 10}); err != nil || n.Scheduled != 10 {
		t.Fatalf("replay = %+v, %v", n, err)
	}
	eventually(t, "the replayed events", func() bool {
		ep.mu.Lock()
		defer ep.mu.Unlock()
		twice := 0
		for _, n := range ep.got {
			if n >= 2 {
				twice++
			}
		}
		return twice >= 10
	})
	got, err := c.GetSubscription(ctx, sub.ID)
	if err != nil || got.Stats == nil || got.Stats.DeadLetters != 0 {
		t.Fatalf("subscription after redrive = %+v, %v", got.Stats, err)
	}
}

func TestWebhookPrivateDestinationsRefusedByDefault(t *testing.T) {
	dir := t.TempDir()
	// Allowed: a subscription to a loopback endpoint is created and works.
	m, _ := testServer(t, dir, nil)
	c := adminClient(m)
	ctx := t.Context()
	if _, _, err := c.PutTopic(ctx, "t", client.TopicSettings{}); err != nil {
		t.Fatal(err)
	}
	ep := newEndpoint(t)
	sub, err := c.CreateSubscription(ctx, client.SubscriptionSpec{
		Topic: "t", URL: ep.srv.URL, Verification: herald.VerifyNone,
		Retry: herald.RetryPolicy{MaxAttempts: 2, Initial: 10 * time.Millisecond, Max: 10 * time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	ep.mu.Lock()
	ep.secrets = []string{sub.Secret}
	ep.mu.Unlock()
	if _, err := c.Publish(ctx, "t", []byte("a"), client.PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "delivery while private destinations are allowed", func() bool { return ep.delivered() == 1 })
	if err := m.Close(ctx); err != nil {
		t.Fatal(err)
	}

	// Refused (the default): new subscriptions to private addresses fail
	// early, naming the field...
	m2, _ := testServer(t, dir, func(c *Config) { c.AllowPrivateDestinations = false })
	c2 := adminClient(m2)
	for _, u := range []string{"http://127.0.0.1:9/hook", "http://localhost/hook", "http://169.254.169.254/latest", "http://10.1.2.3/x", "http://[::1]/x"} {
		_, err := c2.CreateSubscription(ctx, client.SubscriptionSpec{Topic: "t", URL: u, Verification: herald.VerifyNone})
		var p *client.Problem
		if !errors.As(err, &p) || p.Status != 400 || p.Field != "url" {
			t.Errorf("create with %s = %v; want a 400 problem on field url", u, err)
		}
	}
	// ... and the existing one is refused when the connection is made.
	if _, err := c2.Publish(ctx, "t", []byte("b"), client.PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a refused attempt", func() bool {
		p, err := c2.ListAttempts(ctx, sub.ID, client.AttemptListOptions{Outcome: herald.OutcomeFailure})
		return err == nil && len(p.Attempts) > 0 && strings.Contains(p.Attempts[0].Error, "refused")
	})
	if ep.delivered() != 1 {
		t.Fatalf("the endpoint got %d events; the second must not arrive", ep.delivered())
	}
}

// A receiver configured with its secret before the subscription exists,
// as docs/webhooks.md shows first, passes the very first verification
// challenge: the caller chose the secret.
func TestWebhookCallerSecretPassesFirstChallenge(t *testing.T) {
	t.Parallel()
	m, _ := testServer(t, t.TempDir(), nil)
	c := adminClient(m)
	ctx := t.Context()
	if _, _, err := c.PutTopic(ctx, "orders", client.TopicSettings{}); err != nil {
		t.Fatal(err)
	}
	secret := webhook.NewSecret()
	ep := newEndpoint(t)
	ep.mu.Lock()
	ep.secrets, ep.echo = []string{secret}, true
	ep.mu.Unlock()
	sub, err := c.CreateSubscription(ctx, client.SubscriptionSpec{Topic: "orders", URL: ep.srv.URL, Secret: secret})
	if err != nil {
		t.Fatal(err)
	}
	if sub.Secret != secret {
		t.Errorf("created with secret %q, answered %q", secret, sub.Secret)
	}
	eventually(t, "the subscription to turn active", func() bool {
		s, err := c.GetSubscription(ctx, sub.ID)
		return err == nil && s.State == herald.StateActive
	})
	ep.mu.Lock()
	challenges, bad := len(ep.challenges), ep.badSig
	ep.mu.Unlock()
	if challenges != 1 || bad != 0 {
		t.Errorf("the endpoint got %d challenges and %d badly signed requests; want the first challenge to pass", challenges, bad)
	}
	if _, err := c.Publish(ctx, "orders", []byte(`{"n":1}`), client.PublishOptions{ContentType: "application/json"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the event to arrive", func() bool { return ep.delivered() == 1 })
}
