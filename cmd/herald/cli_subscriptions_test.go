package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
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

func TestParseSubsCreate(t *testing.T) {
	dir := t.TempDir()
	filterFile := filepath.Join(dir, "filter.json")
	if err := os.WriteFile(filterFile, []byte(`{"types":["order.*"]}`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := &cli{stderr: &bytes.Buffer{}, getenv: env(nil)}
	got, err := parseSubsCreate(c, []string{"orders.*", "https://example.com/hook",
		"--description", "team", "--filter", "@" + filterFile, "--header", "X-Team=payments", "--header", "X-Empty=",
		"--retry-max-attempts", "5", "--retry-initial", "2s", "--retry-max", "1h", "--timeout", "30s",
		"--max-in-flight", "4", "--rate-limit", "2.5", "--ordered", "--expires-after-idle", "30d",
		"--start", "earliest", "--verification", "none"})
	if err != nil {
		t.Fatal(err)
	}
	want := client.SubscriptionSpec{
		Topic: "orders.*", URL: "https://example.com/hook", Description: "team",
		Filter:  json.RawMessage(`{"types":["order.*"]}` + "\n"),
		Headers: map[string]string{"X-Team": "payments", "X-Empty": ""},
		Retry:   herald.RetryPolicy{MaxAttempts: 5, Initial: 2 * time.Second, Max: time.Hour},
		Timeout: 30 * time.Second, MaxInFlight: 4, RateLimit: 2.5, Ordered: true,
		ExpiresAfterIdle: 30 * 24 * time.Hour, Verification: "none",
		Start: herald.StartPosition{Earliest: true},
	}
	if !reflect.DeepEqual(got.spec, want) || got.wait || got.waitTimeout != defaultWaitTimeout {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}

	got, err = parseSubsCreate(c, []string{"orders", "https://example.com"})
	if err != nil || !reflect.DeepEqual(got.spec, client.SubscriptionSpec{Topic: "orders", URL: "https://example.com"}) {
		t.Errorf("no options: %+v, %v; want only topic and URL (server defaults)", got, err)
	}

	for start, want := range map[string]herald.StartPosition{
		"now":                  {},
		"42":                   {Seq: 42},
		"0":                    {Earliest: true},
		"2025-01-02T03:04:05Z": {Time: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)},
	} {
		got, err := parseSubsCreate(c, []string{"orders", "https://example.com", "--start", start})
		if err != nil || !got.spec.Start.Time.Equal(want.Time) || got.spec.Start.Seq != want.Seq || got.spec.Start.Earliest != want.Earliest {
			t.Errorf("--start %s: %+v, %v; want %+v", start, got.spec.Start, err, want)
		}
	}

	// The secret comes from the flag or the first line of a file; --wait
	// takes a timeout.
	secretFile := filepath.Join(dir, "secret")
	if err := os.WriteFile(secretFile, []byte("  whsec_fromfile  \nignored\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		args    []string
		secret  string
		wait    bool
		timeout time.Duration
	}{
		{[]string{"--secret", "whsec_abc"}, "whsec_abc", false, defaultWaitTimeout},
		{[]string{"--secret", "@" + secretFile, "--wait"}, "whsec_fromfile", true, defaultWaitTimeout},
		{[]string{"--wait", "--wait-timeout", "5s"}, "", true, 5 * time.Second},
	} {
		got, err := parseSubsCreate(c, append([]string{"orders", "https://example.com"}, tt.args...))
		if err != nil || got.spec.Secret != tt.secret || got.wait != tt.wait || got.waitTimeout != tt.timeout {
			t.Errorf("%q: %+v, %v; want secret %q, wait %v for %s", tt.args, got, err, tt.secret, tt.wait, tt.timeout)
		}
	}
}

func TestParseSubsUpdate(t *testing.T) {
	c := &cli{stderr: &bytes.Buffer{}, getenv: env(nil)}
	got, err := parseSubsUpdate(c, []string{"sub_1", "--url", "https://example.com/new", "--header", "X-A=1",
		"--remove-header", "X-B", "--filter", "null", "--ordered=false", "--expires-after-idle", "0",
		"--retry-max", "2h", "--description", "", "--verification", "none"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(got.patch)
	if err != nil {
		t.Fatal(err)
	}
	var doc, want map[string]any
	_ = json.Unmarshal(b, &doc)
	_ = json.Unmarshal([]byte(`{"url":"https://example.com/new","headers":{"X-A":"1","X-B":null},"filter":null,
		"ordered":false,"expires_after_idle":null,"retry":{"max":"2h"},"description":"","verification":"none"}`), &want)
	if got.id != "sub_1" || !reflect.DeepEqual(doc, want) {
		t.Errorf("update sends %s to %s\nwant %v", b, got.id, want)
	}

	// Only the flags given are sent.
	got, err = parseSubsUpdate(c, []string{"sub_1", "--timeout", "5s", "--output", "json"})
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := json.Marshal(got.patch); string(b) != `{"timeout":"5s"}` {
		t.Errorf("timeout only: %s", b)
	}
}

func TestParseSubsReplayAndRotate(t *testing.T) {
	c := &cli{stderr: &bytes.Buffer{}, getenv: env(nil)}
	got, err := parseSubsReplay(c, []string{"sub_1", "--from-seq", "0", "--to-seq", "9", "--topic", "orders.eu"})
	if err != nil || got != (subsReplayArgs{"sub_1", client.ReplayOptions{FromSeq: 0, ToSeq: 9, Topic: "orders.eu"}}) {
		t.Errorf("replay by seq: %+v, %v", got, err)
	}
	got, err = parseSubsReplay(c, []string{"sub_1", "--from-time", "2025-01-02T03:04:05Z"})
	if err != nil || !got.opts.FromTime.Equal(time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)) {
		t.Errorf("replay by time: %+v, %v", got, err)
	}

	r, err := parseSubsRotate(c, []string{"sub_1"})
	if err != nil || r.grace != nil {
		t.Errorf("rotate without grace: %+v, %v; want nil grace (server default)", r, err)
	}
	r, err = parseSubsRotate(c, []string{"sub_1", "--grace", "0s"})
	if err != nil || r.grace == nil || *r.grace != 0 {
		t.Errorf("rotate with grace 0s: %+v, %v", r, err)
	}
}

func TestSubscriptionsUsageErrors(t *testing.T) {
	environ := map[string]string{"HERALD_URL": closedURL(t)}
	missing := filepath.Join(t.TempDir(), "missing.json")
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"subscriptions"}, "subscriptions: missing subverb"},
		{[]string{"subs", "frob"}, `subscriptions: unknown subverb "frob"`},
		{[]string{"subs", "create", "orders"}, "subscriptions create: missing arguments; usage: herald subscriptions create TOPIC URL"},
		{[]string{"subs", "create", "t", "https://e.com", "--filter", "{types"}, "--filter: not valid JSON"},
		{[]string{"subs", "create", "t", "https://e.com", "--header", "novalue"}, `--header "novalue": want NAME=VALUE`},
		{[]string{"subs", "create", "t", "https://e.com", "--retry-max-attempts", "0"}, "--retry-max-attempts 0: want 1 or more"},
		{[]string{"subs", "create", "t", "https://e.com", "--max-in-flight", "x"}, `invalid value "x" for flag -max-in-flight: want a whole number`},
		{[]string{"subs", "create", "t", "https://e.com", "--rate-limit", "-1"}, "--rate-limit -1: want 0 (unlimited) or more"},
		{[]string{"subs", "create", "t", "https://e.com", "--timeout", "soon"}, "want a duration such as 90m, 24h or 7d"},
		{[]string{"subs", "create", "t", "https://e.com", "--start", "yesterday"}, `--start "yesterday": want now, earliest, a seq or an RFC 3339 time`},
		{[]string{"subs", "create", "t", "https://e.com", "--verification", "skip"}, `--verification "skip": want challenge or none`},
		{[]string{"subs", "create", "t", "https://e.com", "--expires-after-idle", "0"}, "leave it out to never expire"},
		{[]string{"subs", "create", "t", "https://e.com", "--secret", ""}, "--secret is empty"},
		{[]string{"subs", "create", "t", "https://e.com", "--wait-timeout", "5s"}, "--wait-timeout: want a duration above 0, with --wait"},
		{[]string{"subs", "create", "t", "https://e.com", "--wait", "--wait-timeout", "0s"}, "--wait-timeout: want a duration above 0"},
		{[]string{"subs", "update", "sub_1"}, "nothing to change"},
		{[]string{"subs", "update", "sub_1", "--output", "json"}, "nothing to change"},
		{[]string{"subs", "update"}, "subscriptions update: missing arguments"},
		{[]string{"subs", "get"}, "subscriptions get: missing arguments; usage: herald subscriptions get ID"},
		{[]string{"subs", "get", "a", "b"}, `subscriptions get: unexpected argument "b"`},
		{[]string{"subs", "verify", "sub_1"}, "usage: herald subscriptions verify ID CHALLENGE"},
		{[]string{"subs", "replay", "sub_1"}, "give exactly one of --from-seq and --from-time"},
		{[]string{"subs", "replay", "sub_1", "--from-seq", "1", "--from-time", "2025-01-02T03:04:05Z"}, "give exactly one of --from-seq and --from-time"},
		{[]string{"subs", "replay", "sub_1", "--from-time", "monday"}, `--from-time "monday": want an RFC 3339 time`},
		{[]string{"subs", "replay", "sub_1", "--from-seq", "-2"}, "--from-seq -2: want 0 or more"},
		{[]string{"subs", "attempts", "sub_1", "--outcome", "maybe"}, `--outcome "maybe": want success or failure`},
		{[]string{"subs", "attempts", "sub_1", "--limit", "0"}, "--limit 0: want 1 to 1000"},
		{[]string{"subs", "dead-letters", "sub_1", "--limit", "1001"}, "--limit 1001: want 1 to 1000"},
		{[]string{"subs", "rotate-secret", "sub_1", "--grace", "-1h"}, "not negative"},
		{[]string{"subs", "get", ""}, "id is empty"},
	}
	for _, tt := range tests {
		r := runCLI(t, nil, environ, tt.args...)
		if r.code != exitUsage {
			t.Errorf("%q: exit code %d, want %d; stderr:\n%s", tt.args, r.code, exitUsage, r.stderr)
			continue
		}
		if !strings.Contains(r.stderr, tt.want) || !strings.Contains(r.stderr, `Run "herald help`) {
			t.Errorf("%q: stderr lacks %q:\n%s", tt.args, tt.want, r.stderr)
		}
	}
	// A missing filter file is a plain failure naming it, like publish --file.
	r := runCLI(t, nil, environ, "subs", "create", "t", "https://e.com", "--filter", "@"+missing)
	if r.code != exitFailure || !strings.Contains(r.stderr, "missing.json") {
		t.Errorf("missing filter file: code %d, stderr %q", r.code, r.stderr)
	}
}

func TestSubscriptionsHelp(t *testing.T) {
	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"help", "subscriptions"}, []string{"create TOPIC URL", "rotate-secret ID", "replay ID (--from-seq N | --from-time T)", "alias: subs"}},
		{[]string{"help", "subs", "create"}, []string{"--secret SECRET", "@FILE", "--wait", "--wait-timeout D", "(default 1m)", "openssl rand -base64 32", "--filter JSON", "--header NAME=VALUE", "--retry-max-attempts N", "--retry-initial D",
			"--retry-max D", "--timeout D", "--max-in-flight N", "--rate-limit R", "--ordered", "--expires-after-idle D", "--start POS", "--verification MODE"}},
		{[]string{"help", "subscriptions", "update"}, []string{"--url URL", "--remove-header NAME", "null removes it"}},
		{[]string{"help", "subscriptions", "attempts"}, []string{"--event-id E", "--outcome O", "--cursor C"}},
	}
	for _, tt := range tests {
		r := runCLI(t, nil, nil, tt.args...)
		if r.code != exitOK || r.stderr != "" {
			t.Errorf("%q: code %d, stderr %q", tt.args, r.code, r.stderr)
		}
		for _, w := range tt.want {
			if !strings.Contains(r.stdout, w) {
				t.Errorf("%q: help lacks %q:\n%s", tt.args, w, r.stdout)
			}
		}
		if strings.Contains(r.stdout, "(default 0)") || strings.Contains(r.stdout, "(default false)") {
			t.Errorf("%q: help shows zero defaults that the server overrides:\n%s", tt.args, r.stdout)
		}
	}
	r := runCLI(t, nil, nil, "help")
	if !strings.Contains(r.stdout, "\n  subscriptions ") {
		t.Errorf("help does not list subscriptions:\n%s", r.stdout)
	}
}

// subsServer runs the real API over a SQLite file and returns the
// environment that points herald at it with an admin key, and the store.
func subsServer(t *testing.T) (map[string]string, *sqlite.Store) {
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
	return map[string]string{"HERALD_URL": srv.URL, "HERALD_KEY": admin}, st
}

func TestSubscriptionsVerbsEndToEnd(t *testing.T) {
	environ, st := subsServer(t)
	ok := func(args ...string) result {
		t.Helper()
		r := runCLI(t, nil, environ, args...)
		if r.code != exitOK {
			t.Fatalf("%q: code %d\nstdout %s\nstderr %s", args, r.code, r.stdout, r.stderr)
		}
		return r
	}
	ok("topics", "create", "orders")
	ok("publish", "orders", `{"n":1}`)
	ok("publish", "orders", `{"n":2}`)

	// create, in JSON to read the id and the secret.
	r := ok("--output", "json", "subs", "create", "orders", "https://example.com/hook", "--header", "X-Team=payments",
		"--filter", `{"types":["order.*"]}`, "--retry-max-attempts", "4", "--start", "earliest")
	var created client.Subscription
	if err := json.Unmarshal([]byte(r.stdout), &created); err != nil {
		t.Fatalf("create --output json: %v\n%s", err, r.stdout)
	}
	if created.State != herald.StatePending || created.Secret == "" || created.Retry.MaxAttempts != 4 || created.Headers["X-Team"] != "payments" {
		t.Errorf("created %+v", created)
	}
	id := created.ID

	// create in text shows the details, the secret, and a note on verification.
	r = ok("subscriptions", "create", "orders", "https://example.com/other", "--description", "second")
	for _, w := range []string{"created subscription sub_", "state:", "pending", "secret:", "whsec_", "description:", "second"} {
		if !strings.Contains(r.stdout, w) {
			t.Errorf("create output lacks %q:\n%s", w, r.stdout)
		}
	}
	if !strings.Contains(r.stderr, "verification challenge") {
		t.Errorf("create stderr: %q", r.stderr)
	}

	r = ok("subs", "list", "--state", "pending")
	if !strings.Contains(r.stdout, "ID") || !strings.Contains(r.stdout, id) || strings.Count(r.stdout, "sub_") != 2 {
		t.Errorf("list:\n%s", r.stdout)
	}
	r = ok("subs", "get", id)
	for _, w := range []string{"lag:", "2 events", "headers:", "X-Team: payments", `filter:         {"types":["order.*"]}`, "retry:", "4 attempts"} {
		if !strings.Contains(r.stdout, w) {
			t.Errorf("get output lacks %q:\n%s", w, r.stdout)
		}
	}
	if strings.Contains(r.stdout, "whsec_") {
		t.Errorf("get shows the secret:\n%s", r.stdout)
	}

	stored, err := st.GetSubscription(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	if r := runCLI(t, nil, environ, "subs", "verify", id, "wrong"); r.code != exitFailure || !strings.Contains(r.stderr, "field: challenge") {
		t.Errorf("verify with a wrong token: %+v", r)
	}
	if r = ok("subs", "verify", id, stored.Challenge); !strings.HasPrefix(r.stdout, "verified subscription "+id+": active\n") {
		t.Errorf("verify: %s", r.stdout)
	}
	if r = ok("subs", "update", id, "--timeout", "5s", "--remove-header", "X-Team", "--filter", "null"); !strings.Contains(r.stdout, "timeout:        5s") || strings.Contains(r.stdout, "X-Team") {
		t.Errorf("update:\n%s", r.stdout)
	}
	// --config merges into the channel's settings: a header added there
	// joins the stored config, the URL stays.
	r = ok("--output", "json", "subs", "update", id, "--config", `{"headers":{"X-Env":"prod"}}`)
	var updated client.Subscription
	if err := json.Unmarshal([]byte(r.stdout), &updated); err != nil || updated.Headers["X-Env"] != "prod" ||
		updated.URL != "https://example.com/hook" || updated.State != herald.StateActive {
		t.Errorf("update --config: %s (%v)", r.stdout, err)
	}
	if r := runCLI(t, nil, environ, "subs", "update", id, "--config", `["not an object"]`); r.code == exitOK {
		t.Errorf("update --config with an array: %+v", r)
	}
	if r = ok("subs", "pause", id); !strings.HasPrefix(r.stdout, "paused subscription "+id+": paused\n") {
		t.Errorf("pause: %s", r.stdout)
	}
	if r := runCLI(t, nil, environ, "subs", "pause", id); r.code != exitFailure || !strings.Contains(r.stderr, "status 409") {
		t.Errorf("pause twice: %+v", r)
	}
	if r = ok("subs", "resume", id); !strings.HasPrefix(r.stdout, "resumed subscription "+id+": active\n") {
		t.Errorf("resume: %s", r.stdout)
	}

	r = ok("subs", "secret", id)
	if !strings.Contains(r.stdout, created.Secret) || strings.Contains(r.stdout, "previous") {
		t.Errorf("secret:\n%s", r.stdout)
	}
	r = ok("--output", "json", "subs", "rotate-secret", id, "--grace", "1h")
	var rot client.Secret
	if err := json.Unmarshal([]byte(r.stdout), &rot); err != nil || rot.PreviousSecret != created.Secret || rot.Secret == created.Secret {
		t.Errorf("rotate-secret: %s (%v)", r.stdout, err)
	}

	if r = ok("subs", "replay", id, "--from-seq", "1"); r.stdout != "scheduled 2 events for delivery to "+id+"\n" {
		t.Errorf("replay: %q", r.stdout)
	}
	// A replay that schedules nothing says why.
	if r = ok("subs", "replay", id, "--from-seq", "1"); r.stdout != "scheduled 0 events for delivery to "+id+
		" (left out: 2 already waiting in the retry set): the 2 events of the range are already waiting in the subscription's retry set; they are sent when due (see GET .../attempts)\n" {
		t.Errorf("replay of waiting events: %q", r.stdout)
	}
	if r = ok("subs", "dead-letters", id); r.stdout != "" || !strings.Contains(r.stderr, "no dead letters") {
		t.Errorf("dead-letters of none: %+v", r)
	}

	// Seed a dead letter and an attempt as a dispatcher would.
	epoch, err := st.AcquireLease(t.Context(), id, "test", time.Now(), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	events, err := st.ReadEvents(t.Context(), "orders", 0, 10)
	if err != nil || len(events) != 2 {
		t.Fatalf("events %v %v", events, err)
	}
	now := time.Now().UTC()
	errs, err := st.Settle(t.Context(), []herald.SettleItem{{SubscriptionID: id, Epoch: epoch, Settlement: herald.Settlement{
		DeadLetters: []herald.DeadLetter{{SubscriptionID: id, Topic: "orders", Seq: 1, EventID: events[0].ID, Attempts: 4, LastError: "status 500", DeadAt: now}},
		Attempts: []herald.Attempt{{SubscriptionID: id, Topic: "orders", Seq: 1, EventID: events[0].ID, Attempt: 4, Time: now,
			Outcome: herald.OutcomeFailure, StatusCode: 500, Latency: 12 * time.Millisecond, Error: "status 500",
			Response: "database locked\nretry later " + strings.Repeat("x", 100)}},
	}}})
	if err != nil || errs[0] != nil {
		t.Fatalf("settle: %v %v", err, errs)
	}
	r = ok("subs", "dead-letters", id)
	if !strings.Contains(r.stdout, "EVENT ID") || !strings.Contains(r.stdout, events[0].ID) || !strings.Contains(r.stdout, "status 500") {
		t.Errorf("dead-letters:\n%s", r.stdout)
	}
	r = ok("subs", "attempts", id, "--outcome", "failure")
	if !strings.Contains(r.stdout, "OUTCOME") || !strings.Contains(r.stdout, "failure") || !strings.Contains(r.stdout, "500") || !strings.Contains(r.stdout, "12ms") {
		t.Errorf("attempts:\n%s", r.stdout)
	}
	// The start of the endpoint's answer, on one line.
	if !strings.Contains(r.stdout, "RESPONSE") || !strings.Contains(r.stdout, `database locked\nretry later xxx`) || strings.Contains(r.stdout, strings.Repeat("x", 60)) {
		t.Errorf("attempts do not show the start of the response on one line:\n%s", r.stdout)
	}
	if r = ok("subs", "redrive", id, events[0].ID); r.stdout != "redriven 1 dead letters of "+id+"\n" {
		t.Errorf("redrive: %q", r.stdout)
	}
	if r = ok("subs", "delete-dead-letters", id); r.stdout != "deleted 0 dead letters of "+id+"\n" {
		t.Errorf("delete-dead-letters: %q", r.stdout)
	}
	if r = ok("subs", "delete", id); r.stdout != "deleted subscription "+id+"\n" {
		t.Errorf("delete: %q", r.stdout)
	}
	if r := runCLI(t, nil, environ, "subs", "get", id); r.code != exitFailure || !strings.Contains(r.stderr, "status 404") {
		t.Errorf("get deleted: %+v", r)
	}
}

// "create --secret --wait" is the documented first step: it returns once
// the receiver, configured with the secret beforehand, has answered the
// challenge, and fails with the reason when it does not.
func TestSubscriptionsCreateWait(t *testing.T) {
	t.Parallel()
	m, _ := testServer(t, t.TempDir(), nil)
	environ := map[string]string{"HERALD_URL": m.URL(), "HERALD_KEY": testAdminKey}
	if r := runCLI(t, nil, environ, "topics", "create", "orders"); r.code != exitOK {
		t.Fatalf("topics create: %+v", r)
	}
	secret := webhook.NewSecret()
	receiver := func(echo bool) string {
		ep := newEndpoint(t)
		ep.mu.Lock()
		ep.secrets, ep.echo = []string{secret}, echo
		ep.mu.Unlock()
		return ep.srv.URL
	}

	r := runCLI(t, nil, environ, "subs", "create", "orders", receiver(true), "--secret", secret, "--wait")
	if r.code != exitOK || !strings.Contains(r.stdout, "is active: the endpoint answered the verification challenge") ||
		!strings.Contains(r.stdout, secret) || !strings.Contains(r.stderr, "Waiting up to 1m") {
		t.Errorf("create --wait with a receiver that answers: %+v", r)
	}
	r = runCLI(t, nil, environ, "--output", "json", "subs", "create", "orders", receiver(true), "--secret", secret, "--wait")
	var got client.Subscription
	if err := json.Unmarshal([]byte(r.stdout), &got); r.code != exitOK || err != nil || got.State != herald.StateActive || got.Secret != secret {
		t.Errorf("create --wait --output json: %+v (%v); want one document, active, with the secret", r, err)
	}

	// A receiver that does not echo the challenge: exit 1 after the
	// timeout, with the state and what is known of why.
	r = runCLI(t, nil, environ, "subs", "create", "orders", receiver(false), "--secret", secret, "--wait", "--wait-timeout", "1s")
	if r.code != exitFailure || !strings.Contains(r.stderr, "is still pending after 1s: ") || !strings.Contains(r.stderr, "verification challenge") {
		t.Errorf("create --wait with a receiver that does not answer: %+v", r)
	}
	// An admin's unverified subscription is active at once.
	if r = runCLI(t, nil, environ, "subs", "create", "orders", receiver(false), "--verification", "none", "--wait"); r.code != exitOK {
		t.Errorf("create --verification none --wait: %+v", r)
	}
	// A malformed secret is the server's 400 naming the field.
	if r = runCLI(t, nil, environ, "subs", "create", "orders", receiver(true), "--secret", "whsec_short", "--wait"); r.code != exitFailure || !strings.Contains(r.stderr, "field: secret") {
		t.Errorf("create with a malformed secret: %+v", r)
	}
}
