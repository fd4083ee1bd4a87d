package main

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/client"
)

// Successful deliveries are counted and sampled, not logged one row each
// (issue 20, ADR 0009): every failure is in the attempt log; the attempts
// endpoint shows it with the newest success-sample successes, as one list
// paged newest first; the subscription's stats count every delivery.
func TestSuccessesAreSampledNotLogged(t *testing.T) {
	t.Parallel()
	const sample = 20
	m, _ := testServer(t, t.TempDir(), func(c *Config) { c.SuccessSample = sample })
	c := adminClient(m)
	ctx := t.Context()
	if _, _, err := c.PutTopic(ctx, "orders", client.TopicSettings{}); err != nil {
		t.Fatal(err)
	}
	// The receiver refuses each "flaky" event once.
	var refused sync.Map
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if id := r.Header.Get("webhook-id"); strings.Contains(string(body), "flaky") {
			if _, again := refused.LoadOrStore(id, true); !again {
				w.WriteHeader(500)
				return
			}
		}
		w.WriteHeader(204)
	}))
	t.Cleanup(rcv.Close)
	sub, err := c.CreateSubscription(ctx, client.SubscriptionSpec{
		Topic: "orders", URL: rcv.URL, Verification: herald.VerifyNone,
		Retry: herald.RetryPolicy{MaxAttempts: 3, Initial: 10 * time.Millisecond, Max: 10 * time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	const n, flaky = 50, 3
	var batch []client.BatchEvent
	for i := range n {
		kind := "fine"
		if i%(n/flaky) == 0 && i/(n/flaky) < flaky {
			kind = "flaky"
		}
		batch = append(batch, client.BatchEvent{ID: fmt.Sprintf("e%02d", i), Payload: []byte(`{"kind":"` + kind + `"}`)})
	}
	if _, err := c.PublishBatch(ctx, "orders", batch); err != nil {
		t.Fatal(err)
	}
	var got client.Subscription
	eventually(t, "every event delivered and counted", func() bool {
		got, err = c.GetSubscription(ctx, sub.ID)
		return err == nil && got.Stats != nil && got.Stats.Delivered == n
	})
	if st := got.Stats; st.Failed != flaky || st.Lag != 0 || st.LatencyMS.P50 <= 0 || st.LatencyMS.P99 < st.LatencyMS.P50 {
		t.Fatalf("stats %+v: want %d failed, no lag, a latency", *st, flaky)
	}

	// Walk every page: the failures from the log, the newest successes
	// from the sample, each once, newest first.
	var all []client.Attempt
	for cursor := ""; ; {
		p, err := c.ListAttempts(ctx, sub.ID, client.AttemptListOptions{Limit: 7, Cursor: cursor})
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, p.Attempts...)
		if cursor = p.NextCursor; cursor == "" {
			break
		}
	}
	failures, successes := 0, map[string]bool{}
	for i, a := range all {
		if i > 0 && a.Time.After(all[i-1].Time) {
			t.Errorf("attempt %d (%s) is newer than the one before it", i, a.EventID)
		}
		switch {
		case a.Outcome == herald.OutcomeFailure && a.ID > 0 && !a.Sampled && a.StatusCode == 500:
			failures++
		case a.Outcome == herald.OutcomeSuccess && a.Sampled && a.ID == 0 && a.StatusCode == 204:
			if successes[a.EventID] {
				t.Errorf("success of %s listed twice", a.EventID)
			}
			successes[a.EventID] = true
		default:
			t.Errorf("unexpected attempt %+v", a)
		}
	}
	if failures != flaky || len(successes) != sample {
		t.Fatalf("listed %d failures and %d successes; want %d and the sample of %d", failures, len(successes), flaky, sample)
	}
	// The sample holds the newest successes: the last event is in it,
	// the first fine one is not.
	if !successes[fmt.Sprintf("e%02d", n-1)] || successes["e01"] {
		t.Errorf("the sample %v is not the newest successes", successes)
	}
	// Filters apply to both.
	p, err := c.ListAttempts(ctx, sub.ID, client.AttemptListOptions{Outcome: herald.OutcomeFailure})
	if err != nil || len(p.Attempts) != flaky {
		t.Fatalf("outcome=failure: %d attempts, %v; want %d", len(p.Attempts), err, flaky)
	}
	last := fmt.Sprintf("e%02d", n-1)
	p, err = c.ListAttempts(ctx, sub.ID, client.AttemptListOptions{EventID: last})
	if err != nil || len(p.Attempts) != 1 || !p.Attempts[0].Sampled {
		t.Fatalf("event_id=%s: %+v, %v; want its sampled success", last, p.Attempts, err)
	}
	// A cursor this server did not issue is refused, naming the field.
	_, err = c.ListAttempts(ctx, sub.ID, client.AttemptListOptions{Cursor: "bm90LWEtY3Vyc29y"})
	if p, ok := err.(*client.Problem); !ok || p.Status != 400 || p.Field != "cursor" {
		t.Fatalf("a bad cursor: %v, want a 400 naming the cursor", err)
	}
}
