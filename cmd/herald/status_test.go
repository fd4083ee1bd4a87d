package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/client"
)

// GET /v1/subscriptions/{id}/events/{event_id} tells what happened to one
// event at one subscription, from the delivery state alone (issue 20):
// delivered, filtered, pending, retrying (with the next attempt) or dead.
func TestEventDeliveryStatus(t *testing.T) {
	t.Parallel()
	m, _ := testServer(t, t.TempDir(), nil)
	c := adminClient(m)
	ctx := t.Context()
	if _, _, err := c.PutTopic(ctx, "pay", client.TopicSettings{}); err != nil {
		t.Fatal(err)
	}
	// The receiver answers by the event's kind: ok, dead (500 until the
	// retries run out), later (503 with a Retry-After of an hour).
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		switch {
		case strings.Contains(string(body), `"dead"`):
			w.WriteHeader(500)
		case strings.Contains(string(body), `"later"`):
			w.Header().Set("Retry-After", "3600")
			w.WriteHeader(503)
		default:
			w.WriteHeader(204)
		}
	}))
	t.Cleanup(rcv.Close)
	sub, err := c.CreateSubscription(ctx, client.SubscriptionSpec{
		Topic: "pay", URL: rcv.URL, Verification: herald.VerifyNone,
		Filter: json.RawMessage(`{"types":["pay.*"]}`),
		Retry:  herald.RetryPolicy{MaxAttempts: 2, Initial: 10 * time.Millisecond, Max: 20 * time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	publish := func(id, typ, kind string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, "POST", m.URL()+"/v1/topics/pay/events", strings.NewReader(`{"kind":"`+kind+`"}`))
		req.Header.Set("Authorization", "Bearer "+testAdminKey)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Herald-Event-Id", id)
		req.Header.Set("Herald-Event-Type", typ)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != 201 {
			t.Fatalf("publish %s: %d", id, res.StatusCode)
		}
	}
	type status struct {
		Status        string `json:"status"`
		Seq           int64  `json:"seq"`
		Attempts      int    `json:"attempts"`
		NextAttemptAt string `json:"next_attempt_at"`
		LastError     string `json:"last_error"`
		LastAttempt   *struct {
			Outcome    string `json:"outcome"`
			StatusCode int    `json:"status_code"`
		} `json:"last_attempt"`
	}
	get := func(path string, want int) status {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, "GET", m.URL()+path, nil)
		req.Header.Set("Authorization", "Bearer "+testAdminKey)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		if res.StatusCode != want {
			t.Fatalf("GET %s: %d %s, want %d", path, res.StatusCode, b, want)
		}
		var s status
		_ = json.Unmarshal(b, &s)
		return s
	}
	of := func(id string) status { return get("/v1/subscriptions/"+sub.ID+"/events/"+id, 200) }

	publish("e-ok", "pay.done", "ok")
	publish("e-skip", "other.thing", "ok")
	publish("e-dead", "pay.done", "dead")
	publish("e-later", "pay.done", "later")
	eventually(t, "e-dead dead and e-later retrying", func() bool {
		return of("e-dead").Status == "dead" && of("e-later").Status == "retrying"
	})
	// A success is sampled, written with a settlement within about a second.
	eventually(t, "e-ok's attempt in the sample", func() bool { return of("e-ok").LastAttempt != nil })
	if s := of("e-ok"); s.Status != "delivered" || s.Seq != 1 || s.LastAttempt == nil || s.LastAttempt.StatusCode != 204 {
		t.Fatalf("e-ok: %+v, want delivered with its 204 attempt", s)
	}
	if s := of("e-skip"); s.Status != "filtered" {
		t.Fatalf("e-skip: %+v, want filtered", s)
	}
	if s := of("e-dead"); s.Attempts != 2 || !strings.Contains(s.LastError, "500") {
		t.Fatalf("e-dead: %+v, want 2 attempts ending in 500", s)
	}
	s := of("e-later")
	next, err := time.Parse(time.RFC3339Nano, s.NextAttemptAt)
	if s.Attempts != 1 || err != nil || time.Until(next) < 30*time.Minute {
		t.Fatalf("e-later: %+v, want 1 attempt and the next one about an hour away", s)
	}

	// Paused: what is published now waits above the cursor.
	if _, err := c.PauseSubscription(ctx, sub.ID); err != nil {
		t.Fatal(err)
	}
	publish("e-wait", "pay.done", "ok")
	if s := of("e-wait"); s.Status != "pending" {
		t.Fatalf("e-wait while paused: %+v, want pending", s)
	}

	// Bad input: an unknown event names the field; a topic the
	// subscription does not cover is refused.
	get("/v1/subscriptions/"+sub.ID+"/events/nope", 404)
	get("/v1/subscriptions/"+sub.ID+"/events/e-ok?topic=other", 400)
	get("/v1/subscriptions/sub_nope/events/e-ok", 404)
}
