package api

import (
	"net/http"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/engine"
)

// TestSystemTopicsNeedAdminOrANamedScope: a key whose read scope is a
// wildcard ("read:>", "read:*.subscriptions") cannot read, list or
// subscribe to herald.subscriptions; a scope an admin granted by name
// can.
func TestSystemTopicsNeedAdminOrANamedScope(t *testing.T) {
	t.Parallel()
	e := newSubEnvWith(t, Config{}, nil, true)
	ctx := t.Context()
	sys := herald.Topic{Name: herald.SubscriptionsTopic}.WithDefaults()
	if _, _, err := e.store.PutTopic(ctx, sys); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	if _, err := e.api.publisher.Publish(ctx, engine.PublishParams{System: true, Events: []*herald.Event{{ID: herald.NewID(now), Topic: sys.Name,
		ContentType: "application/json", Payload: []byte(`{"subscription_id":"sub_x"}`), Time: now}}}); err != nil {
		t.Fatal(err)
	}
	e.putTopic("orders.subscriptions", "")

	for _, scope := range []string{"read:>", "read:*.subscriptions", "read:*.>"} {
		_, key := e.createKey(scope, "subscribe:orders.>")
		for _, path := range []string{
			"/v1/topics/herald.subscriptions",
			"/v1/topics/herald.subscriptions/events",
			"/v1/topics/herald.subscriptions/events/some-id",
		} {
			e.problem(herald.CodeForbidden, "", req{method: "GET", path: path, key: key})
		}
		var list topicListJSON
		e.must(http.StatusOK, req{method: "GET", path: "/v1/topics", key: key}, &list)
		for _, tp := range list.Topics {
			if tp.Name == herald.SubscriptionsTopic {
				t.Errorf("%s lists %s", scope, tp.Name)
			}
		}
		if scope != "read:*.subscriptions" && len(list.Topics) != 1 {
			t.Errorf("%s lists %d topics, want orders.subscriptions", scope, len(list.Topics))
		}
	}

	_, named := e.createKey("read:herald.>", "subscribe:herald.subscriptions")
	var events eventListJSON
	e.must(http.StatusOK, req{method: "GET", path: "/v1/topics/herald.subscriptions/events", key: named}, &events)
	if len(events.Events) != 1 {
		t.Errorf("a read:herald.> key reads %d events, want 1", len(events.Events))
	}
	e.create(named, `{"topic":"herald.subscriptions","url":"https://example.com/s"}`)
}
