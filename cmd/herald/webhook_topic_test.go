package main

import (
	"fmt"
	"strings"
	"testing"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/client"
)

// A topic deleted through the API and created again under the same name
// is delivered to its subscription from its first event: the dispatcher
// hears of the deletion from the API and restarts the subscription's
// worker, whose position in the old topic (seq 5) would otherwise skip
// the new topic's first events. Each event arrives once.
func TestWebhookTopicDeletedAndCreatedAgain(t *testing.T) {
	m, logs := testServer(t, t.TempDir(), nil)
	c := adminClient(m)
	ctx := t.Context()
	if _, _, err := c.PutTopic(ctx, "orders", client.TopicSettings{}); err != nil {
		t.Fatal(err)
	}
	ep := newEndpoint(t)
	ep.echo = true
	sub, err := c.CreateSubscription(ctx, client.SubscriptionSpec{Topic: "orders", URL: ep.srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	ep.mu.Lock()
	ep.secrets = []string{sub.Secret}
	ep.mu.Unlock()
	eventually(t, "the subscription verified", func() bool {
		s, err := c.GetSubscription(ctx, sub.ID)
		return err == nil && s.State == herald.StateActive
	})

	var ids []string
	publish := func(n int) {
		t.Helper()
		for i := range n {
			res, err := c.Publish(ctx, "orders", fmt.Appendf(nil, `{"i":%d}`, i), client.PublishOptions{ContentType: "application/json", Type: "order.created"})
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, res.ID)
		}
	}
	publish(5)
	eventually(t, "the old topic's 5 events", func() bool { return ep.delivered() == 5 })

	if err := c.DeleteTopic(ctx, "orders"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.PutTopic(ctx, "orders", client.TopicSettings{}); err != nil {
		t.Fatal(err)
	}
	publish(3)
	eventually(t, "the new topic's 3 events", func() bool { return ep.delivered() == 8 })

	ep.mu.Lock()
	defer ep.mu.Unlock()
	for _, id := range ids {
		if ep.got[id] != 1 {
			t.Errorf("event %s accepted %d times, want once", id, ep.got[id])
		}
	}
	if ep.badSig != 0 {
		t.Errorf("%d requests failed the signature check", ep.badSig)
	}
	// The API's deletion reached the dispatcher (a lease renewal would
	// also restart the worker, up to a second later).
	if !strings.Contains(logs.String(), "restarting its subscriptions' dispatch") {
		t.Errorf("the dispatcher did not log the restart for the deleted topic")
	}
}
