package inbound

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/webhook"
)

func stripeHeader(secret string, ts int64, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	fmt.Fprintf(m, "%d.", ts)
	m.Write(body)
	return fmt.Sprintf("t=%d,v1=%s,v0=ignored", ts, hex.EncodeToString(m.Sum(nil)))
}

func TestStripe(t *testing.T) {
	cfg, err := Kind{}.Validate(json.RawMessage(`{"verify":"stripe","secret":"whsec_stripe","tolerance":"5m"}`), nil)
	if err != nil {
		t.Fatal(err)
	}
	body := []byte(`{"id":"evt_1","type":"invoice.paid","data":{}}`)
	now := time.Unix(1_700_000_000, 0)
	for _, tc := range []struct {
		name   string
		header string
		ok     bool
	}{
		{"good", stripeHeader("whsec_stripe", now.Unix()-10, body), true},
		{"old", stripeHeader("whsec_stripe", now.Unix()-301, body), false},
		{"future", stripeHeader("whsec_stripe", now.Unix()+301, body), false},
		{"wrong secret", stripeHeader("whsec_other", now.Unix(), body), false},
		{"missing", "", false},
		{"malformed", "t=x,v1=00", false},
	} {
		h := http.Header{}
		h.Set("Stripe-Signature", tc.header)
		msg, err := Kind{}.Receive(cfg, h, body, now)
		if tc.ok != (err == nil) {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if err != nil && !herald.IsCode(err, herald.CodeUnauthorized) {
			t.Errorf("%s: %v; want CodeUnauthorized", tc.name, err)
		}
		if tc.ok && (msg.IdempotencyKey != "delivery:evt_1" || msg.Type != "invoice.paid" || string(msg.Payload) != string(body)) {
			t.Errorf("%s: message %+v", tc.name, msg)
		}
	}
}

func TestStandardWebhooksAndSecrets(t *testing.T) {
	secret := webhook.NewSecret()
	cfg, err := Kind{}.Validate(json.RawMessage(`{"secret":"`+secret+`"}`), nil)
	if err != nil {
		t.Fatal(err)
	}
	if pub := (Kind{}).Public(cfg); contains(pub, secret) {
		t.Fatalf("Public shows the secret: %s", pub)
	}
	// An update without the secret keeps it.
	upd, err := Kind{}.Validate(json.RawMessage(`{"tolerance":"1m"}`), cfg)
	if err != nil || !contains(upd, secret) {
		t.Fatalf("update lost the secret: %s %v", upd, err)
	}
	body := []byte("hello")
	now := time.Now()
	key, _ := webhook.ParseSecret(secret)
	h := http.Header{}
	h.Set("webhook-id", "msg_1")
	h.Set("webhook-timestamp", fmt.Sprint(now.Unix()))
	h.Set("webhook-signature", webhook.Sign(key, "msg_1", now, body))
	if msg, err := (Kind{}).Receive(upd, h, body, now); err != nil || msg.IdempotencyKey != "delivery:msg_1" {
		t.Fatalf("Receive: %+v %v", msg, err)
	}
	if _, err := (Kind{}).Receive(upd, h, body, now.Add(2*time.Minute)); !herald.IsCode(err, herald.CodeUnauthorized) {
		t.Fatalf("outside the 1m tolerance: %v", err)
	}
	for _, bad := range []string{`{"verify":"standard-webhooks","secret":"short"}`, `{"verify":"hmac","secret":"s"}`, `{"verify":"hmac","secret":"s","header":"X","encoding":"b32"}`, `{"verify":"maybe"}`} {
		if _, err := (Kind{}).Validate(json.RawMessage(bad), nil); !herald.IsCode(err, herald.CodeInvalid) {
			t.Errorf("Validate(%s) = %v; want CodeInvalid", bad, err)
		}
	}
}

func contains(b []byte, s string) bool { return strings.Contains(string(b), s) }
