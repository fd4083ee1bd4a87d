package client_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/client"
	"github.com/heraldhq/herald/webhook"
)

// The subscription types marshal back to the API's JSON, which
// `herald --output json` prints.
func TestSubscriptionWireRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		into func() any
		doc  string
	}{
		{"pending subscription with everything", func() any { return new(client.Subscription) },
			`{"id":"sub_abc","topic":"orders.*","channel":"webhook","config":{"url":"https://example.com/h","headers":{"X-Team":"payments"}},
			  "url":"https://example.com/h","description":"team",
			  "filter":{"types":["order.*"]},"headers":{"X-Team":"payments"},
			  "retry":{"max_attempts":5,"initial":"1s","max":"1h30m"},"timeout":"15s","max_in_flight":16,
			  "rate_limit":2.5,"ordered":true,"expires_after_idle":"30d","state":"pending",
			  "state_reason":"waiting (last: dns-failure)","state_reason_detail":"lookup h on 10.0.0.53:53: no such host","verify_deadline":"2025-01-03T03:04:05.678Z",
			  "created_at":"2025-01-02T03:04:05.678Z","updated_at":"2025-01-02T03:04:05.678Z",
			  "last_success_at":"2025-01-02T04:00:00.000Z","failing_since":"2025-01-02T05:00:00.000Z",
			  "last_activity_at":"2025-01-02T06:00:00.000Z","secret":"whsec_x",
			  "stats":{"lag":3,"retries":2,"dead_letters":1,"delivered":7,"failed":2,"latency_ms":{"p50_ms":1.5,"p90_ms":4,"p99_ms":9.25}}}`},
		{"minimal subscription", func() any { return new(client.Subscription) },
			`{"id":"sub_b","topic":"t","channel":"webhook","config":{"url":"https://example.com","headers":{}},
			  "url":"https://example.com","description":"","headers":{},
			  "retry":{"max_attempts":15,"initial":"5s","max":"4h"},"timeout":"15s","max_in_flight":16,
			  "rate_limit":0,"ordered":false,"state":"active",
			  "created_at":"2025-01-02T03:04:05.000Z","updated_at":"2025-01-02T03:04:05.000Z"}`},
		{"broker subscription", func() any { return new(client.Subscription) },
			`{"id":"sub_k","topic":"payments.>","channel":"kafka","config":{"brokers":["k1:9092"],"topic":"payments"},
			  "description":"","retry":{"max_attempts":15,"initial":"5s","max":"4h"},"timeout":"15s","max_in_flight":16,
			  "rate_limit":0,"ordered":true,"state":"active",
			  "created_at":"2025-01-02T03:04:05.000Z","updated_at":"2025-01-02T03:04:05.000Z"}`},
		{"page", func() any { return new(client.SubscriptionPage) },
			`{"subscriptions":[],"next_cursor":"c3Vi"}`},
		{"secret", func() any { return new(client.Secret) },
			`{"secret":"whsec_new","previous_secret":"whsec_old","previous_expires_at":"2025-01-02T03:04:05.000Z"}`},
		{"dead letters", func() any { return new(client.DeadLetterPage) },
			`{"dead_letters":[{"topic":"orders","seq":4,"event_id":"e1","key":"k","attempts":15,
			  "last_error":"connection-refused","last_error_detail":"dial tcp 10.0.0.1:80: connect: connection refused","dead_at":"2025-01-02T03:04:05.000Z"}],"next_cursor":"x"}`},
		{"attempts", func() any { return new(client.AttemptPage) },
			`{"attempts":[{"id":9,"topic":"orders","seq":4,"event_id":"e1","attempt":2,
			  "time":"2025-01-02T03:04:05.000Z","outcome":"failure","status_code":503,"latency_ms":12.345,
			  "error":"http-503","response":"busy"},
			  {"id":8,"topic":"orders","seq":4,"event_id":"e1","attempt":1,
			  "time":"2025-01-02T03:04:04.000Z","outcome":"failure","latency_ms":0.5,"error":"connection-refused","error_detail":"dial tcp 10.0.0.1:80: connect: connection refused"}]}`},
		{"test result", func() any { return new(client.TestResult) },
			`{"event_id":"e9","outcome":"failure","status_code":503,"latency_ms":1.25,"error":"connection-refused","error_detail":"dial tcp 10.0.0.1:80: connect: connection refused"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := tt.into()
			if err := json.Unmarshal([]byte(tt.doc), v); err != nil {
				t.Fatalf("decode: %v", err)
			}
			out, err := json.Marshal(v)
			if err != nil {
				t.Fatalf("encode: %v", err)
			}
			var want, got any
			_ = json.Unmarshal([]byte(tt.doc), &want)
			_ = json.Unmarshal(out, &got)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("round trip changed the document\n got %s\nwant %s", out, tt.doc)
			}
		})
	}
}

func TestSubscriptionDecodedFields(t *testing.T) {
	var s client.Subscription
	doc := `{"id":"sub_a","topic":"t","url":"https://e.com","description":"","headers":{},
		"retry":{"max_attempts":3,"initial":"90s","max":"1d"},"timeout":"30s","max_in_flight":2,
		"rate_limit":0,"ordered":false,"expires_after_idle":"2d","state":"paused",
		"created_at":"2025-01-02T03:04:05.678Z","updated_at":"2025-01-02T03:04:05.678Z"}`
	if err := json.Unmarshal([]byte(doc), &s); err != nil {
		t.Fatal(err)
	}
	if s.Retry != (herald.RetryPolicy{MaxAttempts: 3, Initial: 90 * time.Second, Max: 24 * time.Hour}) ||
		s.Timeout != 30*time.Second || s.ExpiresAfterIdle != 48*time.Hour || s.State != herald.StatePaused ||
		s.CreatedAt != time.Date(2025, 1, 2, 3, 4, 5, 678e6, time.UTC) || s.Filter != nil || s.Stats != nil {
		t.Errorf("decoded %+v", s)
	}
	var a client.Attempt
	if err := json.Unmarshal([]byte(`{"latency_ms":12.345,"outcome":"success","time":"2025-01-02T03:04:05.000Z"}`), &a); err != nil {
		t.Fatal(err)
	}
	if a.Latency != 12345*time.Microsecond || a.Outcome != herald.OutcomeSuccess {
		t.Errorf("attempt %+v", a)
	}
}

func TestSubscriptionPatchJSON(t *testing.T) {
	tests := []struct {
		patch client.SubscriptionPatch
		want  string
	}{
		{client.SubscriptionPatch{}, `{}`},
		{client.SubscriptionPatch{URL: new("https://example.com/new"), Verification: herald.VerifyNone},
			`{"url":"https://example.com/new","verification":"none"}`},
		{client.SubscriptionPatch{Filter: json.RawMessage(`null`), Headers: map[string]*string{"X-A": new("1"), "X-B": nil}},
			`{"filter":null,"headers":{"X-A":"1","X-B":null}}`},
		{client.SubscriptionPatch{Retry: &herald.RetryPolicy{Max: time.Hour}, Timeout: new(30 * time.Second),
			MaxInFlight: new(4), RateLimit: new(0.0), Ordered: new(false), ExpiresAfterIdle: new(time.Duration(0)),
			Description: new("")},
			`{"retry":{"max":"1h"},"timeout":"30s","max_in_flight":4,"rate_limit":0,"ordered":false,
			  "expires_after_idle":null,"description":""}`},
		{client.SubscriptionPatch{ExpiresAfterIdle: new(7 * 24 * time.Hour), Filter: json.RawMessage(`{"types":["a"]}`)},
			`{"expires_after_idle":"7d","filter":{"types":["a"]}}`},
	}
	for _, tt := range tests {
		b, err := json.Marshal(tt.patch)
		if err != nil {
			t.Fatal(err)
		}
		var got, want any
		_ = json.Unmarshal(b, &got)
		if err := json.Unmarshal([]byte(tt.want), &want); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("patch %+v\n got %s\nwant %s", tt.patch, b, tt.want)
		}
	}
}

func TestVerifyWebhook(t *testing.T) {
	secret := webhook.NewSecret()
	key, err := webhook.ParseSecret(secret)
	if err != nil {
		t.Fatal(err)
	}
	body := []byte(`{"order":1}`)
	signed := func(ts time.Time, body []byte) http.Header {
		h := http.Header{}
		h.Set(webhook.HeaderID, "evt_1")
		h.Set(webhook.HeaderTimestamp, strconv.FormatInt(ts.Unix(), 10))
		h.Set(webhook.HeaderSignature, webhook.Sign(key, "evt_1", ts, body))
		return h
	}
	now := time.Now()
	if err := client.VerifyWebhook(secret, signed(now, body), body); err != nil {
		t.Errorf("genuine webhook refused: %v", err)
	}
	// Within the 5 minute tolerance either way.
	if err := client.VerifyWebhook(secret, signed(now.Add(-4*time.Minute), body), body); err != nil {
		t.Errorf("4 minutes old refused: %v", err)
	}
	cases := []struct {
		name   string
		header http.Header
		body   []byte
		want   error
	}{
		{"tampered body", signed(now, body), []byte(`{"order":2}`), webhook.ErrNoMatchingSignature},
		{"too old", signed(now.Add(-6*time.Minute), body), body, webhook.ErrTimestampTooOld},
		{"from the future", signed(now.Add(6*time.Minute), body), body, webhook.ErrTimestampTooNew},
		{"no headers", http.Header{}, body, webhook.ErrMissingHeaders},
	}
	for _, c := range cases {
		err := client.VerifyWebhook(secret, c.header, c.body)
		if !errors.Is(err, c.want) || !herald.IsCode(err, herald.CodeUnauthorized) {
			t.Errorf("%s: err %v, want %v", c.name, err, c.want)
		}
	}
	if err := client.VerifyWebhook(webhook.NewSecret(), signed(now, body), body); !errors.Is(err, webhook.ErrNoMatchingSignature) {
		t.Errorf("other secret: err %v", err)
	}
	if err := client.VerifyWebhook("not-a-secret", signed(now, body), body); !herald.IsCode(err, herald.CodeInvalid) {
		t.Errorf("malformed secret: err %v", err)
	}
}
