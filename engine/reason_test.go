package engine_test

import (
	"context"
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/engine"
	"github.com/heraldhq/herald/webhook"
)

// TestFailureDetailStaysOutOfPublicReasons: a subscription disabled by
// failures stores a public reason with the classified cause and, apart, the
// detail that names the address; its attempts and retries too. The system
// event carries neither the detail nor the URL's path and query, which
// often hold a token.
func TestFailureDetailStaysOutOfPublicReasons(t *testing.T) {
	t.Parallel()
	e := startEnv(t, dbPath(t), func(c *engine.DispatcherConfig) { c.DisableAfter = 300 * time.Millisecond })
	e.topic("down")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close() // nothing listens: every attempt is refused
	s := e.subscribe(herald.Subscription{Topic: "down", Config: hookConfig("http://" + addr + "/hooks/T0001/s3cret-path?token=s3cret"),
		Retry: herald.RetryPolicy{MaxAttempts: 100, Initial: 20 * time.Millisecond, Max: 50 * time.Millisecond}})
	e.publish("down", 1, nil)
	ev := e.systemEvent(herald.EventSubscriptionDisabled, s.ID)

	ctx := context.Background()
	got, err := e.store.GetSubscription(ctx, s.ID)
	if err != nil {
		t.Fatal(err)
	}
	reason, detail := herald.SplitReason(got.StateReason)
	if !strings.HasSuffix(reason, "(last: "+webhook.ReasonConnectionRefused+")") || strings.Contains(reason, "127.0.0.1") {
		t.Errorf("state reason %q, want the classified cause without the address", reason)
	}
	if !strings.Contains(detail, addr) {
		t.Errorf("state reason detail %q, want the address", detail)
	}
	as, err := e.store.ListAttempts(ctx, s.ID, herald.AttemptFilter{Limit: 1})
	if err != nil || len(as) == 0 {
		t.Fatalf("attempts: %v, %v", as, err)
	}
	if reason, detail := herald.SplitReason(as[0].Error); reason != webhook.ReasonConnectionRefused || !strings.Contains(detail, addr) {
		t.Errorf("attempt error %q", as[0].Error)
	}

	var body map[string]any
	if err := json.Unmarshal(ev.Payload, &body); err != nil {
		t.Fatal(err)
	}
	if body["endpoint"] != "http://"+addr || body["reason"] != reason {
		t.Errorf("system event endpoint %v, reason %v; want http://%s, %q", body["endpoint"], body["reason"], addr, reason)
	}
	if p := string(ev.Payload); strings.Contains(p, "s3cret") || strings.Contains(p, "connect:") {
		t.Errorf("system event %s holds the URL's secret or the detail", p)
	}
}
