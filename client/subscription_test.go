package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/api"
	"github.com/heraldhq/herald/channel"
	"github.com/heraldhq/herald/client"
	"github.com/heraldhq/herald/engine"
	"github.com/heraldhq/herald/store/sqlite"
	"github.com/heraldhq/herald/webhook"
)

// subServer runs the real API over a SQLite file and the real committer,
// and returns an admin client for it with the store.
func subServer(t *testing.T) (*client.Client, *sqlite.Store) {
	t.Helper()
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "herald.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	committer := engine.NewCommitter(st, engine.CommitterConfig{}, nil, nil)
	if err := committer.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = committer.Stop(ctx)
	})
	admin, hash := herald.NewKeySecret()
	topics := engine.NewTopics(st, engine.TopicsConfig{})
	s := api.New(api.Config{AdminKeyHash: hash}, api.Deps{
		Store: st, Topics: topics, Publisher: engine.NewPublisher(topics, committer, engine.PublisherConfig{}, nil, nil), Subscriptions: st,
		Channels: channel.NewRegistry(webhook.NewChannel(webhook.NewSender(webhook.SenderConfig{}), webhook.ChannelConfig{})),
	})
	s.SetReady(true)
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	return client.New(srv.URL, client.WithKey(admin)), st
}

// wantCode checks that err is a problem with the code and field ("*": any).
func wantCode(t *testing.T, what string, err error, code herald.Code, field string) {
	t.Helper()
	p, ok := errors.AsType[*client.Problem](err)
	if !ok || p.Code() != code || (field != "*" && p.Field != field) {
		t.Errorf("%s: err %v, want %s with field %q", what, err, code, field)
	}
}

func TestSubscriptionClientEndToEnd(t *testing.T) {
	c, st := subServer(t)
	ctx := t.Context()
	if _, _, err := c.PutTopic(ctx, "orders", client.TopicSettings{}); err != nil {
		t.Fatal(err)
	}
	var eventIDs []string
	for i := range 3 {
		res, err := c.Publish(ctx, "orders", []byte(`{"n":`+strconv.Itoa(i)+`}`), client.PublishOptions{ContentType: "application/json"})
		if err != nil {
			t.Fatal(err)
		}
		eventIDs = append(eventIDs, res.ID)
	}

	// Create with every setting; the answer echoes them with the secret.
	sub, err := c.CreateSubscription(ctx, client.SubscriptionSpec{
		Topic: "orders", URL: "https://example.com/hook", Description: "team",
		Filter: json.RawMessage(`{"types": ["b", "a"]}`), Headers: map[string]string{"x-team": "payments"},
		Retry:   herald.RetryPolicy{MaxAttempts: 3, Initial: time.Second},
		Timeout: 20 * time.Second, MaxInFlight: 2, RateLimit: 1.5, Ordered: true, ExpiresAfterIdle: 48 * time.Hour,
		Start: herald.StartPosition{Seq: 1},
	})
	if err != nil {
		t.Fatal(err)
	}
	if sub.State != herald.StatePending || sub.Secret == "" || string(sub.Filter) != `{"types":["a","b"]}` ||
		sub.Headers["X-Team"] != "payments" || sub.Retry != (herald.RetryPolicy{MaxAttempts: 3, Initial: time.Second, Max: 4 * time.Hour}) ||
		sub.Timeout != 20*time.Second || sub.MaxInFlight != 2 || sub.RateLimit != 1.5 || !sub.Ordered ||
		sub.ExpiresAfterIdle != 48*time.Hour || sub.VerifyDeadline.IsZero() || sub.CreatedAt.IsZero() {
		t.Errorf("created %+v", sub)
	}
	got, err := c.GetSubscription(ctx, sub.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Secret != "" || got.Stats == nil || got.Stats.Lag != 2 {
		t.Errorf("get: secret %q, stats %+v (want lag 2: started after seq 1)", got.Secret, got.Stats)
	}
	// A secret of the caller's own is the one the subscription signs with.
	own := webhook.NewSecret()
	mine, err := c.CreateSubscription(ctx, client.SubscriptionSpec{Topic: "orders", URL: "https://example.com/mine", Secret: own})
	if err != nil {
		t.Fatal(err)
	}
	if sec, err := c.GetSecret(ctx, mine.ID); err != nil || mine.Secret != own || sec.Secret != own {
		t.Errorf("created with secret %s: answered %q, GetSecret %+v, %v", own, mine.Secret, sec, err)
	}
	if err := c.DeleteSubscription(ctx, mine.ID); err != nil {
		t.Fatal(err)
	}
	_, err = c.CreateSubscription(ctx, client.SubscriptionSpec{Topic: "orders", URL: "https://example.com/mine", Secret: "hunter2"})
	wantCode(t, "malformed secret", err, herald.CodeInvalid, "secret")
	_, err = c.CreateSubscription(ctx, client.SubscriptionSpec{Topic: "orders", URL: "http://10.0.0.1/"})
	wantCode(t, "private URL", err, herald.CodeInvalid, "url")
	_, err = c.CreateSubscription(ctx, client.SubscriptionSpec{Topic: "orders", URL: "https://example.com", Retry: herald.RetryPolicy{Initial: time.Nanosecond}})
	wantCode(t, "tiny retry", err, herald.CodeInvalid, "retry.initial")

	page, err := c.ListSubscriptions(ctx, client.SubscriptionListOptions{State: herald.StatePending, Topic: "orders"})
	if err != nil || len(page.Subscriptions) != 1 || page.Subscriptions[0].ID != sub.ID {
		t.Errorf("list pending: %+v, %v", page, err)
	}

	// Verify with the wrong token, then with the one the endpoint got.
	_, err = c.VerifySubscription(ctx, sub.ID, "wrong")
	wantCode(t, "wrong challenge", err, herald.CodeInvalid, "challenge")
	stored, err := st.GetSubscription(ctx, sub.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got, err = c.VerifySubscription(ctx, sub.ID, stored.Challenge); err != nil || got.State != herald.StateActive {
		t.Fatalf("verify: %+v, %v", got, err)
	}

	// Patch: only what is named changes.
	got, err = c.UpdateSubscription(ctx, sub.ID, client.SubscriptionPatch{
		Description: new("renamed"), Headers: map[string]*string{"X-Team": nil, "X-New": new("1")},
		Retry: &herald.RetryPolicy{MaxAttempts: 7}, ExpiresAfterIdle: new(time.Duration(0)), Filter: json.RawMessage("null"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if got.Description != "renamed" || len(got.Headers) != 1 || got.Headers["X-New"] != "1" || got.Retry.MaxAttempts != 7 ||
		got.Retry.Initial != time.Second || got.ExpiresAfterIdle != 0 || got.Filter != nil || got.Timeout != 20*time.Second || got.State != herald.StateActive {
		t.Errorf("patched %+v", got)
	}
	got, err = c.UpdateSubscription(ctx, sub.ID, client.SubscriptionPatch{URL: new("https://example.com/new")})
	if err != nil || got.State != herald.StatePending {
		t.Errorf("new URL: %+v, %v; want pending", got, err)
	}
	if got, err = c.UpdateSubscription(ctx, sub.ID, client.SubscriptionPatch{URL: new("https://example.com/v2"), Verification: herald.VerifyNone}); err != nil || got.State != herald.StateActive {
		t.Errorf("an admin's new URL with verification none: %+v, %v; want active", got, err)
	}

	// Pause and resume: a new URL while paused must be verified on resume.
	if got, err = c.UpdateSubscription(ctx, sub.ID, client.SubscriptionPatch{URL: new("https://example.com/v3")}); err != nil || got.State != herald.StatePending {
		t.Errorf("new URL: %+v, %v; want pending", got, err)
	}
	if got, err = c.PauseSubscription(ctx, sub.ID); err != nil || got.State != herald.StatePaused {
		t.Errorf("pause: %+v, %v", got, err)
	}
	_, err = c.PauseSubscription(ctx, sub.ID)
	wantCode(t, "pause twice", err, herald.CodeConflict, "")
	if got, err = c.ResumeSubscription(ctx, sub.ID); err != nil || got.State != herald.StatePending {
		t.Errorf("resume unverified: %+v, %v", got, err)
	}
	stored, _ = st.GetSubscription(ctx, sub.ID)
	if _, err = c.VerifySubscription(ctx, sub.ID, stored.Challenge); err != nil {
		t.Fatal(err)
	}
	_, err = c.ResumeSubscription(ctx, sub.ID)
	wantCode(t, "resume active", err, herald.CodeConflict, "")

	// Secrets: the one from create signs; a rotation keeps the old one for the grace.
	sec, err := c.GetSecret(ctx, sub.ID)
	if err != nil || sec.Secret != sub.Secret || sec.PreviousSecret != "" {
		t.Errorf("secret %+v, %v", sec, err)
	}
	body := []byte(`{"n":1}`)
	key, _ := webhook.ParseSecret(sec.Secret)
	h := http.Header{}
	h.Set("webhook-id", eventIDs[0])
	h.Set("webhook-timestamp", strconv.FormatInt(time.Now().Unix(), 10))
	h.Set("webhook-signature", webhook.SignatureHeader([][]byte{key}, eventIDs[0], time.Now(), body))
	if err := client.VerifyWebhook(sec.Secret, h, body); err != nil {
		t.Errorf("a request signed with the subscription's secret: %v", err)
	}
	rot, err := c.RotateSecret(ctx, sub.ID, new(time.Hour))
	if err != nil || rot.PreviousSecret != sec.Secret || rot.Secret == sec.Secret || time.Until(rot.PreviousExpiresAt) < 59*time.Minute {
		t.Errorf("rotate: %+v, %v", rot, err)
	}
	if rot, err = c.RotateSecret(ctx, sub.ID, nil); err != nil || time.Until(rot.PreviousExpiresAt) < 23*time.Hour {
		t.Errorf("rotate with the default grace: %+v, %v", rot, err)
	}
	_, err = c.RotateSecret(ctx, sub.ID, new(30*24*time.Hour))
	wantCode(t, "grace too long", err, herald.CodeInvalid, "grace")

	// Replay, dead letters and attempts.
	rp, err := c.Replay(ctx, sub.ID, client.ReplayOptions{FromSeq: 1, ToSeq: 2})
	if err != nil || rp != (client.ReplayResult{Scheduled: 2}) {
		t.Errorf("replay: %+v, %v", rp, err)
	}
	if rp, err = c.Replay(ctx, sub.ID, client.ReplayOptions{FromTime: time.Now().Add(-time.Hour)}); err != nil || rp != (client.ReplayResult{Scheduled: 1, AlreadyPending: 2}) {
		t.Errorf("replay by time: %+v, %v; want the 1 not yet waiting", rp, err)
	}
	if rp, err = c.Replay(ctx, sub.ID, client.ReplayOptions{FromSeq: 2, ToSeq: 3}); err != nil || rp.Scheduled != 0 || !strings.Contains(rp.Reason, "already waiting") {
		t.Errorf("replay of waiting events: %+v, %v; want a reason", rp, err)
	}
	_, err = c.Replay(ctx, sub.ID, client.ReplayOptions{FromSeq: 1, Topic: "payments"})
	wantCode(t, "replay another topic", err, herald.CodeInvalid, "topic")

	epoch, err := st.AcquireLease(ctx, sub.ID, "test", time.Now(), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	item := herald.SettleItem{SubscriptionID: sub.ID, Epoch: epoch}
	for i, id := range eventIDs {
		item.DeadLetters = append(item.DeadLetters, herald.DeadLetter{SubscriptionID: sub.ID, Topic: "orders", Seq: int64(i + 1), EventID: id, Attempts: 7, LastError: "boom", DeadAt: now})
		item.Attempts = append(item.Attempts, herald.Attempt{SubscriptionID: sub.ID, Topic: "orders", Seq: int64(i + 1), EventID: id, Attempt: 7, Time: now,
			Outcome: herald.OutcomeFailure, StatusCode: 500, Latency: 3 * time.Millisecond, Error: "boom"})
	}
	if errs, err := st.Settle(ctx, []herald.SettleItem{item}); err != nil || errs[0] != nil {
		t.Fatalf("settle: %v %v", err, errs)
	}
	dl, err := c.ListDeadLetters(ctx, sub.ID, "", 2)
	if err != nil || len(dl.DeadLetters) != 2 || dl.NextCursor == "" || dl.DeadLetters[0].EventID != eventIDs[0] || dl.DeadLetters[0].Attempts != 7 {
		t.Fatalf("dead letters page 1: %+v, %v", dl, err)
	}
	if dl, err = c.ListDeadLetters(ctx, sub.ID, dl.NextCursor, 2); err != nil || len(dl.DeadLetters) != 1 || dl.NextCursor != "" || dl.DeadLetters[0].Seq != 3 {
		t.Errorf("dead letters page 2: %+v, %v", dl, err)
	}
	n, err := c.RedriveDeadLetters(ctx, sub.ID, []string{eventIDs[0]})
	if err != nil || n != 1 {
		t.Errorf("redrive one: %d, %v", n, err)
	}
	if n, err = c.DeleteDeadLetters(ctx, sub.ID, eventIDs[1]); err != nil || n != 1 {
		t.Errorf("delete one: %d, %v", n, err)
	}
	_, err = c.DeleteDeadLetters(ctx, sub.ID, eventIDs[1])
	wantCode(t, "delete a missing dead letter", err, herald.CodeNotFound, "")
	if n, err = c.RedriveDeadLetters(ctx, sub.ID, nil); err != nil || n != 1 {
		t.Errorf("redrive all: %d, %v", n, err)
	}
	if n, err = c.DeleteDeadLetters(ctx, sub.ID, ""); err != nil || n != 0 {
		t.Errorf("delete all of none: %d, %v", n, err)
	}

	at, err := c.ListAttempts(ctx, sub.ID, client.AttemptListOptions{Limit: 2})
	if err != nil || len(at.Attempts) != 2 || at.NextCursor == "" || at.Attempts[0].Seq != 3 || at.Attempts[0].Latency != 3*time.Millisecond ||
		at.Attempts[0].Outcome != herald.OutcomeFailure || at.Attempts[0].StatusCode != 500 {
		t.Fatalf("attempts: %+v, %v", at, err)
	}
	if at, err = c.ListAttempts(ctx, sub.ID, client.AttemptListOptions{Cursor: at.NextCursor}); err != nil || len(at.Attempts) != 1 || at.Attempts[0].Seq != 1 {
		t.Errorf("attempts page 2: %+v, %v", at, err)
	}
	if at, err = c.ListAttempts(ctx, sub.ID, client.AttemptListOptions{EventID: eventIDs[1], Outcome: herald.OutcomeFailure}); err != nil || len(at.Attempts) != 1 {
		t.Errorf("attempts of one event: %+v, %v", at, err)
	}
	if at, err = c.ListAttempts(ctx, sub.ID, client.AttemptListOptions{Outcome: herald.OutcomeSuccess}); err != nil || len(at.Attempts) != 0 {
		t.Errorf("successes: %+v, %v", at, err)
	}

	// The dead letters replaced the replayed retries; seqs 1 and 3 were
	// redriven and seq 2 deleted.
	if got, err = c.GetSubscription(ctx, sub.ID); err != nil || got.Stats.Retries != 2 || got.Stats.DeadLetters != 0 {
		t.Errorf("stats at the end: %+v, %v", got.Stats, err)
	}
	if err := c.DeleteSubscription(ctx, sub.ID); err != nil {
		t.Fatal(err)
	}
	_, err = c.GetSubscription(ctx, sub.ID)
	wantCode(t, "get deleted", err, herald.CodeNotFound, "*") // the store may name the id
	_, err = c.GetSubscription(ctx, "")
	if he, ok := errors.AsType[*herald.Error](err); !ok || he.Field != "id" {
		t.Errorf("empty id: %v", err)
	}
}
