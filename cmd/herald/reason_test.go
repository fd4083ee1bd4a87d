package main

import (
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/client"
	"github.com/heraldhq/herald/webhook"
)

// TestFailureReasonsHideAddressesFromNonAdmins: a key with the subscribe
// scope sees why deliveries to its endpoint fail as a classified reason
// (state_reason, attempt errors, dead letters), never the address or the
// resolver behind it; an admin key sees that detail too.
func TestFailureReasonsHideAddressesFromNonAdmins(t *testing.T) {
	t.Parallel()
	m, _ := testServer(t, t.TempDir(), nil)
	ctx := t.Context()
	admin := adminClient(m)
	if _, _, err := admin.PutTopic(ctx, "ops.down", client.TopicSettings{}); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close() // nothing listens: every request is refused
	k, err := admin.CreateKey(ctx, "ops", []string{"subscribe:ops.>", "publish:ops.>"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	user := client.New(m.URL(), client.WithKey(k.Secret))

	// A pending subscription whose challenge cannot be sent.
	pending, err := user.CreateSubscription(ctx, client.SubscriptionSpec{Topic: "ops.down", URL: "http://" + addr + "/pending"})
	if err != nil {
		t.Fatal(err)
	}
	// An active one whose only attempt fails: a dead letter.
	active, err := admin.CreateSubscription(ctx, client.SubscriptionSpec{Topic: "ops.down", URL: "http://" + addr + "/active",
		Verification: herald.VerifyNone, Retry: herald.RetryPolicy{MaxAttempts: 1}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := user.Publish(ctx, "ops.down", []byte(`{}`), client.PublishOptions{ContentType: "application/json"}); err != nil {
		t.Fatal(err)
	}
	waitCond(t, "the challenge failed", 20*time.Second, func() bool {
		s, err := admin.GetSubscription(ctx, pending.ID)
		return err == nil && s.StateReason != ""
	})
	waitCond(t, "the dead letter", 20*time.Second, func() bool {
		p, err := admin.ListDeadLetters(ctx, active.ID, "", 10)
		return err == nil && len(p.DeadLetters) == 1
	})

	get := func(key, path string) string {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, "GET", m.URL()+path, nil)
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d %s", path, resp.StatusCode, b)
		}
		return string(b)
	}
	paths := []string{
		"/v1/subscriptions/" + pending.ID,
		"/v1/subscriptions",
		"/v1/subscriptions/" + active.ID + "/attempts",
		"/v1/subscriptions/" + active.ID + "/dead-letters",
	}
	for _, p := range paths {
		if body := get(k.Secret, p); strings.Contains(body, "dial tcp") || strings.Contains(body, "_detail") {
			t.Errorf("GET %s with a subscribe key shows the dialer's error: %s", p, body)
		}
	}

	s, err := user.GetSubscription(ctx, pending.ID)
	want := "waiting for the endpoint to answer the verification challenge (last: " + webhook.ReasonConnectionRefused + ")"
	if err != nil || s.StateReason != want {
		t.Errorf("state_reason %q, %v; want %q", s.StateReason, err, want)
	}
	as, err := user.ListAttempts(ctx, active.ID, client.AttemptListOptions{})
	if err != nil || len(as.Attempts) != 1 || as.Attempts[0].Error != webhook.ReasonConnectionRefused {
		t.Errorf("attempts %+v, %v; want one with error %q", as.Attempts, err, webhook.ReasonConnectionRefused)
	}
	dl, err := user.ListDeadLetters(ctx, active.ID, "", 10)
	if err != nil || len(dl.DeadLetters) != 1 || dl.DeadLetters[0].LastError != webhook.ReasonConnectionRefused {
		t.Errorf("dead letters %+v, %v; want one with last_error %q", dl.DeadLetters, err, webhook.ReasonConnectionRefused)
	}

	// The admin sees the detail beside the same reasons.
	s, _ = admin.GetSubscription(ctx, pending.ID)
	as, _ = admin.ListAttempts(ctx, active.ID, client.AttemptListOptions{})
	dl, _ = admin.ListDeadLetters(ctx, active.ID, "", 10)
	const detail = "dial tcp 127.0.0.1:"
	if s.StateReason != want || !strings.Contains(s.StateReasonDetail, detail) ||
		len(as.Attempts) != 1 || !strings.Contains(as.Attempts[0].ErrorDetail, detail) ||
		len(dl.DeadLetters) != 1 || !strings.Contains(dl.DeadLetters[0].LastErrorDetail, detail) {
		t.Errorf("admin view: state %q / %q, attempts %+v, dead letters %+v; want the details with %q",
			s.StateReason, s.StateReasonDetail, as.Attempts, dl.DeadLetters, detail)
	}
}
