package api

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/channel"
	"github.com/heraldhq/herald/engine"
	"github.com/heraldhq/herald/store/sqlite"
	"github.com/heraldhq/herald/webhook"
)

// subStore is what the subscription tests need of a store: the store of
// the whole server, with subscriptions.
type subStore interface {
	herald.Store
	herald.SubscriptionStore
}

// subEnv is a whole API with subscriptions over a real store and the real
// committer.
type subEnv struct {
	*env
	subs     subStore
	notified *notifyRecorder
}

// notifyRecorder is the Notices of the tests: it remembers every
// subscription id.
type notifyRecorder struct {
	mu  sync.Mutex
	ids []string
}

func (n *notifyRecorder) TopicDeleted(string) {}
func (n *notifyRecorder) KeyRevoked(string)   {}

func (n *notifyRecorder) SubscriptionChanged(id string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.ids = append(n.ids, id)
}

// count returns how often the id was notified.
func (n *notifyRecorder) count(id string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	c := 0
	for _, x := range n.ids {
		if x == id {
			c++
		}
	}
	return c
}

// openSubStore opens a real SQLite store in a temporary directory.
func openSubStore(t *testing.T) *sqlite.Store {
	t.Helper()
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "herald.db"), sqlite.Options{})
	if err != nil {
		t.Fatalf("open sqlite: %v", err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

func newSubEnv(t *testing.T, cfg Config) *subEnv {
	t.Helper()
	return newSubEnvWith(t, cfg, nil, false)
}

// newSubEnvWith is newSubEnv with a deliverer for test events, and webhooks
// that may name private addresses when allowPrivate is set.
func newSubEnvWith(t *testing.T, cfg Config, deliverer Deliverer, allowPrivate bool) *subEnv {
	t.Helper()
	st := openSubStore(t)
	logs := &lockedBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	reg := prometheus.NewRegistry()
	committer := engine.NewCommitter(st, engine.CommitterConfig{}, logger, reg)
	if err := committer.Start(context.Background()); err != nil {
		t.Fatalf("start committer: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := committer.Stop(ctx); err != nil {
			t.Errorf("stop committer: %v", err)
		}
	})
	admin, hash := herald.NewKeySecret()
	cfg.AdminKeyHash = hash
	notified := &notifyRecorder{}
	topics := engine.NewTopics(st, engine.TopicsConfig{})
	s := New(cfg, Deps{
		Store:         st,
		Topics:        topics,
		Publisher:     engine.NewPublisher(topics, committer, engine.PublisherConfig{}, logger, reg),
		Subscriptions: st,
		Notices:       notified,
		Channels: channel.NewRegistry(webhook.NewChannel(webhook.NewSender(webhook.SenderConfig{AllowPrivate: allowPrivate}),
			webhook.ChannelConfig{AllowPrivate: allowPrivate})),
		Logger:    logger,
		Registry:  reg,
		Deliverer: deliverer,
	})
	s.SetReady(true)
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("server log:\n%s", logs.String())
		}
	})
	e := &env{t: t, api: s, srv: srv, store: st, reg: reg, admin: admin, logs: logs, defaultK: admin}
	return &subEnv{env: e, subs: st, notified: notified}
}

// create makes a subscription from the JSON body with the key ("" admin).
func (e *subEnv) create(key, body string) subscriptionJSON {
	e.t.Helper()
	var out subscriptionJSON
	e.must(http.StatusCreated, req{method: "POST", path: "/v1/subscriptions", body: []byte(body), key: key}, &out)
	return out
}

// stored reads a subscription straight from the store.
// hookOf returns a stored webhook subscription's config.
func hookOf(t testing.TB, s herald.Subscription) webhook.Config {
	t.Helper()
	c, err := webhook.ParseConfig(s.Config)
	if err != nil {
		t.Fatalf("config of %s: %v", s.ID, err)
	}
	return c
}

func (e *subEnv) stored(id string) herald.Subscription {
	e.t.Helper()
	s, err := e.subs.GetSubscription(context.Background(), id)
	if err != nil {
		e.t.Fatalf("store: get %s: %v", id, err)
	}
	return s
}

func (e *subEnv) get(id string) subscriptionJSON {
	e.t.Helper()
	var out subscriptionJSON
	e.must(http.StatusOK, req{method: "GET", path: "/v1/subscriptions/" + id}, &out)
	return out
}

// post sends a POST with the body to a subscription's sub-path.
func (e *subEnv) post(want int, id, suffix, body string, out any) {
	e.t.Helper()
	r := req{method: "POST", path: "/v1/subscriptions/" + id + suffix}
	if body != "" {
		r.body = []byte(body)
	}
	e.must(want, r, out)
}

// publish publishes n events to the topic through the API and returns their ids.
func (e *subEnv) publish(topic string, n int) []string {
	e.t.Helper()
	var ids []string
	for i := range n {
		var res struct {
			ID string `json:"id"`
		}
		e.must(http.StatusCreated, req{method: "POST", path: "/v1/topics/" + topic + "/events",
			body: fmt.Appendf(nil, `{"n":%d}`, i), header: map[string]string{"Content-Type": "application/json", "Herald-Event-Key": fmt.Sprintf("k%d", i%2)}}, &res)
		ids = append(ids, res.ID)
	}
	return ids
}

// settle writes a settlement for the subscription under a fresh lease, as
// a dispatcher would.
func (e *subEnv) settle(id string, st herald.Settlement) {
	e.t.Helper()
	ctx := context.Background()
	epoch, err := e.subs.AcquireLease(ctx, id, "test-node", time.Now(), time.Minute)
	if err != nil {
		e.t.Fatalf("acquire lease: %v", err)
	}
	errs, err := e.subs.Settle(ctx, []herald.SettleItem{{SubscriptionID: id, Epoch: epoch, Settlement: st}})
	if err != nil || errs[0] != nil {
		e.t.Fatalf("settle: %v, %v", err, errs)
	}
	if err := e.subs.ReleaseLease(ctx, id, "test-node", epoch); err != nil {
		e.t.Fatalf("release lease: %v", err)
	}
}

// act posts an action to the subscription and returns the answer.
func (e *subEnv) act(id, suffix, body string) subscriptionJSON {
	e.t.Helper()
	var out subscriptionJSON
	e.post(http.StatusOK, id, suffix, body, &out)
	return out
}

func (e *subEnv) rotate(id, body string) secretJSON {
	e.t.Helper()
	var out secretJSON
	e.post(http.StatusOK, id, "/secret:rotate", body, &out)
	return out
}

func (e *subEnv) secret(id string) secretJSON {
	e.t.Helper()
	var out secretJSON
	e.must(http.StatusOK, req{method: "GET", path: "/v1/subscriptions/" + id + "/secret"}, &out)
	return out
}

// patch sends a merge patch with the key and returns the answer.
func (e *subEnv) patch(key, id, body string) subscriptionJSON {
	e.t.Helper()
	var out subscriptionJSON
	e.must(http.StatusOK, req{method: "PATCH", path: "/v1/subscriptions/" + id, key: key, body: []byte(body)}, &out)
	return out
}

// near reports whether the wire time is within a few seconds of want.
func near(t *testing.T, wire string, want time.Time) bool {
	t.Helper()
	got, err := time.Parse(time.RFC3339Nano, wire)
	if err != nil {
		t.Fatalf("time %q: %v", wire, err)
	}
	d := got.Sub(want)
	return d > -5*time.Second && d < 5*time.Second
}

func TestSubscriptionCreate(t *testing.T) {
	e := newSubEnv(t, Config{})
	res := e.must(http.StatusCreated, req{method: "POST", path: "/v1/subscriptions",
		body: []byte(`{"topic":"orders.*","url":"https://example.com/hook","description":"team",
			"filter":{"types":["order.*","order.*","a"]},"headers":{"x-team":"payments"}}`)}, nil)
	var created subscriptionJSON
	if err := json.Unmarshal(res.body, &created); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(created.ID, "sub_") || created.State != "pending" || created.Topic != "orders.*" {
		t.Fatalf("created %+v", created)
	}
	if !strings.HasPrefix(created.Secret, "whsec_") {
		t.Errorf("create response secret %q, want whsec_...", created.Secret)
	}
	if got := res.header.Get("Location"); got != "/v1/subscriptions/"+created.ID {
		t.Errorf("Location %q", got)
	}
	if res.header.Get("Cache-Control") != "no-store" {
		t.Errorf("Cache-Control %q on a response with a secret", res.header.Get("Cache-Control"))
	}
	if !near(t, created.VerifyDeadline, time.Now().Add(24*time.Hour)) {
		t.Errorf("verify_deadline %s, want about now+24h", created.VerifyDeadline)
	}
	// Defaults are filled and the filter is canonical.
	if created.Retry != (retryJSON{MaxAttempts: herald.DefaultRetryPolicy.MaxAttempts, Initial: "5s", Max: "4h"}) || created.Timeout != "15s" ||
		created.MaxInFlight != 16 || created.RateLimit != 0 || created.Ordered || created.ExpiresAfterIdle != "" {
		t.Errorf("defaults %+v", created)
	}
	if string(created.Filter) != `{"types":["a","order.*"]}` {
		t.Errorf("filter %s, want the canonical form", created.Filter)
	}
	if (*created.Headers)["X-Team"] != "payments" {
		t.Errorf("headers %v", created.Headers)
	}

	// The store holds the challenge and the schedule for the dispatcher.
	st := e.stored(created.ID)
	if len(st.Challenge) != 43 || st.NextChallengeAt.IsZero() || st.NextChallengeAt.After(time.Now()) ||
		st.LastActivityAt.IsZero() || hookOf(t, st).Secret != created.Secret || st.OwnerKeyID != "" {
		t.Errorf("stored %+v", st)
	}
	if e.notified.count(created.ID) != 1 {
		t.Errorf("notifier told %d times, want 1", e.notified.count(created.ID))
	}

	// GET shows no secret but adds the statistics.
	res = e.must(http.StatusOK, req{method: "GET", path: "/v1/subscriptions/" + created.ID}, nil)
	if strings.Contains(string(res.body), "whsec_") || strings.Contains(string(res.body), `"secret"`) {
		t.Errorf("GET shows the secret: %s", res.body)
	}
	got := e.get(created.ID)
	if got.Stats == nil || *got.Stats != (statsJSON{}) {
		t.Errorf("stats %+v, want all zero", got.Stats)
	}
	got.Stats, created.Secret = nil, ""
	if !sameJSON(t, got, created) {
		t.Errorf("GET %+v\nwant %+v", got, created)
	}

	// Admins may skip verification; a key's id is recorded as the owner.
	active := e.create("", `{"topic":"orders","url":"https://example.com/x","verification":"none"}`)
	if active.State != "active" || active.VerifyDeadline != "" {
		t.Errorf("verification none: %+v", active)
	}
	if st := e.stored(active.ID); st.Challenge != "" {
		t.Errorf("verification none stored a challenge")
	}
	keyID, key := e.createKey("subscribe:orders.>")
	owned := e.create(key, `{"topic":"orders.created","url":"https://example.com/y"}`)
	if st := e.stored(owned.ID); st.OwnerKeyID != keyID {
		t.Errorf("owner %q, want %q", st.OwnerKeyID, keyID)
	}
}

func withoutStats(s subscriptionJSON) subscriptionJSON {
	s.Stats = nil
	return s
}

func sameJSON(t *testing.T, a, b any) bool {
	t.Helper()
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

func TestSubscriptionStartAndLag(t *testing.T) {
	e := newSubEnv(t, Config{})
	e.putTopic("orders", "")
	e.publish("orders", 3)

	now := e.create("", `{"topic":"orders","url":"https://example.com/a","verification":"none"}`)
	earliest := e.create("", `{"topic":"orders","url":"https://example.com/b","verification":"none","start":"earliest"}`)
	afterOne := e.create("", `{"topic":"orders","url":"https://example.com/c","verification":"none","start":1}`)
	past := e.create("", `{"topic":"orders","url":"https://example.com/d","verification":"none","start":"2000-01-01T00:00:00Z"}`)
	for _, c := range []struct {
		id  string
		lag int64
	}{{now.ID, 0}, {earliest.ID, 3}, {afterOne.ID, 2}, {past.ID, 3}} {
		if got := e.get(c.id).Stats.Lag; got != c.lag {
			t.Errorf("%s: lag %d, want %d", c.id, got, c.lag)
		}
	}
	e.publish("orders", 2)
	if got := e.get(now.ID).Stats.Lag; got != 2 {
		t.Errorf("lag after 2 more events: %d, want 2", got)
	}
}

func TestSubscriptionValidation(t *testing.T) {
	e := newSubEnv(t, Config{})
	cases := []struct {
		name, body string
		code       herald.Code
		field      string
	}{
		{"no topic", `{"url":"https://example.com"}`, herald.CodeInvalid, "topic"},
		{"bad pattern", `{"topic":"orders.>.x","url":"https://example.com"}`, herald.CodeInvalid, "topic"},
		{"no url", `{"topic":"t"}`, herald.CodeInvalid, "url"},
		{"url scheme", `{"topic":"t","url":"file:///etc/passwd"}`, herald.CodeInvalid, "url"},
		{"description", `{"topic":"t","url":"https://example.com","description":"` + strings.Repeat("x", 1025) + `"}`, herald.CodeInvalid, "description"},
		{"filter", `{"topic":"t","url":"https://example.com","filter":{"payload":{"a":[{"numeric":[">"]}]}}}`, herald.CodeInvalid, "filter.payload.a"},
		{"filter type", `{"topic":"t","url":"https://example.com","filter":"order.*"}`, herald.CodeInvalid, "filter"},
		{"reserved header", `{"topic":"t","url":"https://example.com","headers":{"Webhook-Signature":"x"}}`, herald.CodeInvalid, "headers"},
		{"header type", `{"topic":"t","url":"https://example.com","headers":{"X-A":1}}`, herald.CodeInvalid, "headers"},
		{"retry attempts", `{"topic":"t","url":"https://example.com","retry":{"max_attempts":1000}}`, herald.CodeInvalid, "retry.max_attempts"},
		{"retry initial", `{"topic":"t","url":"https://example.com","retry":{"initial":"1ns"}}`, herald.CodeInvalid, "retry.initial"},
		{"retry max", `{"topic":"t","url":"https://example.com","retry":{"max":"30d"}}`, herald.CodeInvalid, "retry.max"},
		{"timeout", `{"topic":"t","url":"https://example.com","timeout":"2m"}`, herald.CodeInvalid, "timeout"},
		{"max_in_flight", `{"topic":"t","url":"https://example.com","max_in_flight":2000}`, herald.CodeInvalid, "max_in_flight"},
		{"max_in_flight type", `{"topic":"t","url":"https://example.com","max_in_flight":1.5}`, herald.CodeInvalid, "max_in_flight"},
		{"rate_limit", `{"topic":"t","url":"https://example.com","rate_limit":-2}`, herald.CodeInvalid, "rate_limit"},
		{"ordered type", `{"topic":"t","url":"https://example.com","ordered":"yes"}`, herald.CodeInvalid, "ordered"},
		{"expires_after_idle", `{"topic":"t","url":"https://example.com","expires_after_idle":"10m"}`, herald.CodeInvalid, "expires_after_idle"},
		{"verification", `{"topic":"t","url":"https://example.com","verification":"later"}`, herald.CodeInvalid, "verification"},
		{"start seq on pattern", `{"topic":"t.*","url":"https://example.com","start":5}`, herald.CodeInvalid, "start"},
		{"start word", `{"topic":"t","url":"https://example.com","start":"beginning"}`, herald.CodeInvalid, "start"},
		{"unknown field", `{"topic":"t","url":"https://example.com","state":"active"}`, herald.CodeInvalid, "state"},
		{"not JSON", `topic=t`, herald.CodeInvalid, ""},
		{"empty body", ``, herald.CodeInvalid, ""},
		{"too large", `{"topic":"t","url":"https://example.com","description":"` + strings.Repeat("x", maxJSONBody) + `"}`, herald.CodeTooLarge, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := e.with(t)
			r := req{method: "POST", path: "/v1/subscriptions"}
			if c.body != "" {
				r.body = []byte(c.body)
			}
			e.problem(c.code, c.field, r)
		})
	}
	e.problem(herald.CodeUnsupported, "", req{method: "POST", path: "/v1/subscriptions", body: []byte(`{}`),
		header: map[string]string{"Content-Type": "text/plain"}})
	// Nothing was created by the failures.
	var list subscriptionListJSON
	e.must(http.StatusOK, req{method: "GET", path: "/v1/subscriptions"}, &list)
	if len(list.Subscriptions) != 0 {
		t.Errorf("failed creates stored %d subscriptions", len(list.Subscriptions))
	}
}

func TestSubscriptionPrivateDestinations(t *testing.T) {
	body := `{"topic":"orders","url":"http://127.0.0.1:9/hook"}`
	e := newSubEnv(t, Config{})
	p := e.problem(herald.CodeInvalid, "url", req{method: "POST", path: "/v1/subscriptions", body: []byte(body)})
	if !strings.Contains(p.Detail, "127.0.0.1") {
		t.Errorf("detail %q does not name the address", p.Detail)
	}
	// A patch may not move an existing subscription there either.
	s := e.create("", `{"topic":"orders","url":"https://example.com/hook"}`)
	e.problem(herald.CodeInvalid, "url", req{method: "PATCH", path: "/v1/subscriptions/" + s.ID,
		body: []byte(`{"url":"http://[::1]/hook"}`)})

	open := newSubEnvWith(t, Config{}, nil, true)
	if got := open.create("", body); got.URL != "http://127.0.0.1:9/hook" {
		t.Errorf("created %+v", got)
	}
}

func TestSubscriptionAuth(t *testing.T) {
	e := newSubEnv(t, Config{})
	_, orders := e.createKey("subscribe:orders.>")
	_, everything := e.createKey("subscribe:>")
	_, publisher := e.createKey("publish:>", "read:>")

	// 401 for no key and a bad key, on every kind of route.
	for _, r := range []req{
		{method: "POST", path: "/v1/subscriptions", body: []byte(`{}`), key: "-"},
		{method: "GET", path: "/v1/subscriptions", key: "hrld_nope"},
		{method: "GET", path: "/v1/subscriptions/sub_x", key: "-"},
		{method: "POST", path: "/v1/subscriptions/sub_x/pause", key: "-"},
		{method: "DELETE", path: "/v1/subscriptions/sub_x/dead-letters", key: "-"},
	} {
		e.problem(herald.CodeUnauthorized, "", r)
	}

	// Create needs a subscribe scope covering the topic or pattern.
	mine := e.create(orders, `{"topic":"orders.*","url":"https://example.com/a"}`)
	for _, c := range []struct{ key, topic string }{
		{orders, "payments"},
		{orders, "orders"},
		{orders, "*.created"},
		{publisher, "orders.x"},
		{everything, "herald.subscriptions"}, // system topics need admin
		{everything, ">"},                    // so do patterns that can match them
	} {
		e.problem(herald.CodeForbidden, "", req{method: "POST", path: "/v1/subscriptions", key: c.key,
			body: []byte(`{"topic":"` + c.topic + `","url":"https://example.com/a"}`)})
	}
	e.problem(herald.CodeForbidden, "", req{method: "POST", path: "/v1/subscriptions", key: orders,
		body: []byte(`{"topic":"orders.x","url":"https://example.com/a","verification":"none"}`)})
	system := e.create("", `{"topic":"herald.subscriptions","url":"https://example.com/s"}`)
	theirs := e.create(everything, `{"topic":"payments","url":"https://example.com/p"}`)

	// Everything else: admin, or a key whose scopes cover the topic.
	for _, r := range []req{
		{method: "GET", path: "/v1/subscriptions/" + theirs.ID},
		{method: "PATCH", path: "/v1/subscriptions/" + theirs.ID, body: []byte(`{"description":"x"}`)},
		{method: "DELETE", path: "/v1/subscriptions/" + theirs.ID},
		{method: "POST", path: "/v1/subscriptions/" + theirs.ID + "/pause"},
		{method: "POST", path: "/v1/subscriptions/" + theirs.ID + "/resume"},
		{method: "POST", path: "/v1/subscriptions/" + theirs.ID + "/verify", body: []byte(`{"challenge":"x"}`)},
		{method: "GET", path: "/v1/subscriptions/" + theirs.ID + "/secret"},
		{method: "POST", path: "/v1/subscriptions/" + theirs.ID + "/secret:rotate"},
		{method: "GET", path: "/v1/subscriptions/" + theirs.ID + "/dead-letters"},
		{method: "POST", path: "/v1/subscriptions/" + theirs.ID + "/dead-letters/redrive"},
		{method: "DELETE", path: "/v1/subscriptions/" + theirs.ID + "/dead-letters"},
		{method: "DELETE", path: "/v1/subscriptions/" + theirs.ID + "/dead-letters/e1"},
		{method: "POST", path: "/v1/subscriptions/" + theirs.ID + "/replay", body: []byte(`{"from_seq":1}`)},
		{method: "GET", path: "/v1/subscriptions/" + theirs.ID + "/attempts"},
	} {
		r.key = orders
		e.problem(herald.CodeForbidden, "", r)
	}
	e.problem(herald.CodeForbidden, "", req{method: "GET", path: "/v1/subscriptions/" + system.ID, key: everything})
	e.must(http.StatusOK, req{method: "GET", path: "/v1/subscriptions/" + mine.ID, key: orders}, nil)
	e.must(http.StatusOK, req{method: "GET", path: "/v1/subscriptions/" + mine.ID, key: everything}, nil)
	e.must(http.StatusOK, req{method: "GET", path: "/v1/subscriptions/" + theirs.ID}, nil) // admin
	e.problem(herald.CodeNotFound, anyField, req{method: "GET", path: "/v1/subscriptions/sub_missing", key: orders})

	// Lists show only what the key may manage.
	list := func(key string) []string {
		var out subscriptionListJSON
		e.must(http.StatusOK, req{method: "GET", path: "/v1/subscriptions", key: key}, &out)
		var ids []string
		for _, s := range out.Subscriptions {
			ids = append(ids, s.ID)
		}
		slices.Sort(ids)
		return ids
	}
	sorted := func(ids ...string) []string { slices.Sort(ids); return ids }
	if got := list(orders); !slices.Equal(got, []string{mine.ID}) {
		t.Errorf("orders key lists %v", got)
	}
	if got := list(everything); !slices.Equal(got, sorted(mine.ID, theirs.ID)) {
		t.Errorf("subscribe:> key lists %v", got)
	}
	if got := list(publisher); len(got) != 0 {
		t.Errorf("publish key lists %v", got)
	}
	if got := list(""); !slices.Equal(got, sorted(mine.ID, theirs.ID, system.ID)) {
		t.Errorf("admin lists %v", got)
	}
}

func TestSubscriptionList(t *testing.T) {
	e := newSubEnv(t, Config{})
	var all []string
	for i := range 7 {
		topic := "a"
		if i%2 == 1 {
			topic = "b.*"
		}
		s := e.create("", fmt.Sprintf(`{"topic":%q,"url":"https://example.com/%d","verification":"none"}`, topic, i))
		all = append(all, s.ID)
	}
	slices.Sort(all)
	e.post(http.StatusOK, all[0], "/pause", "", nil)
	e.post(http.StatusOK, all[3], "/pause", "", nil)

	walk := func(query string, limit int) ([]string, int) {
		var seen []string
		cursor, pages := "", 0
		for {
			var page subscriptionListJSON
			e.must(http.StatusOK, req{method: "GET", path: fmt.Sprintf("/v1/subscriptions?limit=%d&cursor=%s&%s", limit, cursor, query)}, &page)
			pages++
			if len(page.Subscriptions) > limit {
				t.Fatalf("page of %d over limit %d", len(page.Subscriptions), limit)
			}
			for _, s := range page.Subscriptions {
				seen = append(seen, s.ID)
			}
			if page.NextCursor == "" {
				return seen, pages
			}
			if cursor = page.NextCursor; pages > 20 {
				t.Fatal("pagination does not end")
			}
		}
	}
	if got, pages := walk("", 3); !slices.Equal(got, all) || pages != 3 {
		t.Errorf("saw %v in %d pages, want %v in 3", got, pages, all)
	}
	if got, _ := walk("state=paused", 1); !slices.Equal(got, []string{all[0], all[3]}) {
		t.Errorf("paused: %v", got)
	}
	var bTopic, activeA []string
	for _, id := range all {
		st := e.stored(id)
		if st.Topic == "b.*" {
			bTopic = append(bTopic, id)
		}
		if st.Topic == "a" && st.State == herald.StateActive {
			activeA = append(activeA, id)
		}
	}
	if got, _ := walk("topic=b.*", 2); !slices.Equal(got, bTopic) {
		t.Errorf("topic b.*: %v, want %v", got, bTopic)
	}
	if got, _ := walk("state=active&topic=a", 1); !slices.Equal(got, activeA) {
		t.Errorf("active on a: %v, want %v", got, activeA)
	}
	for _, c := range []struct{ query, field string }{
		{"limit=0", "limit"}, {"limit=1001", "limit"}, {"cursor=%21", "cursor"},
		{"state=sleeping", "state"}, {"topic=a..b", "topic"},
	} {
		e.problem(herald.CodeInvalid, c.field, req{method: "GET", path: "/v1/subscriptions?" + c.query})
	}
}

func TestSubscriptionPatch(t *testing.T) {
	e := newSubEnv(t, Config{})
	_, key := e.createKey("subscribe:orders")
	s := e.create(key, `{"topic":"orders","url":"https://example.com/a","headers":{"X-Keep":"1","X-Drop":"2"},
		"retry":{"max_attempts":5},"filter":{"types":["a"]},"expires_after_idle":"2d"}`)
	// Make it active as if verified.
	e.post(http.StatusOK, s.ID, "/verify", `{"challenge":"`+e.stored(s.ID).Challenge+`"}`, nil)
	before := e.stored(s.ID)

	var got subscriptionJSON
	e.must(http.StatusOK, req{method: "PATCH", path: "/v1/subscriptions/" + s.ID, key: key,
		header: map[string]string{"Content-Type": "application/merge-patch+json"},
		body:   []byte(`{"headers":{"x-drop":null,"X-New":"3"},"retry":{"initial":"1s"},"filter":null,"expires_after_idle":null,"timeout":"5s"}`)}, &got)
	if got.State != "active" {
		t.Errorf("state %s after a patch without a new URL, want active", got.State)
	}
	if stored := e.get(s.ID); stored.Stats == nil || !sameJSON(t, withoutStats(stored), got) {
		t.Errorf("GET after PATCH %+v\nPATCH answered %+v", stored, got)
	}
	if !maps2Equal(*got.Headers, map[string]string{"X-Keep": "1", "X-New": "3"}) || got.Retry != (retryJSON{5, "1s", "4h"}) ||
		got.Filter != nil || got.ExpiresAfterIdle != "" || got.Timeout != "5s" {
		t.Errorf("patched %+v", got)
	}
	after := e.stored(s.ID)
	if !after.UpdatedAt.After(before.UpdatedAt) || hookOf(t, after).Secret != hookOf(t, before).Secret || after.CreatedAt != before.CreatedAt {
		t.Errorf("store after patch: updated %v -> %v, secret kept %v", before.UpdatedAt, after.UpdatedAt, hookOf(t, after).Secret == hookOf(t, before).Secret)
	}

	// A new URL must be verified again, with a new challenge.
	got = e.patch(key, s.ID, `{"url":"https://example.com/b"}`)
	st := e.stored(s.ID)
	if got.State != "pending" || got.URL != "https://example.com/b" || st.Challenge == "" || st.NextChallengeAt.IsZero() {
		t.Errorf("after URL change: %+v, challenge %q", got, st.Challenge)
	}
	// Only an admin may skip that, and then a pending subscription is active.
	got = e.patch("", s.ID, `{"url":"https://example.com/b2","verification":"none"}`)
	if got.State != "active" || e.stored(s.ID).Challenge != "" {
		t.Errorf("admin URL change of a pending subscription with verification none: %+v", got)
	}
	got = e.patch(key, s.ID, `{"url":"https://example.com/b3"}`)
	st = e.stored(s.ID)
	e.problem(herald.CodeForbidden, "", req{method: "PATCH", path: "/v1/subscriptions/" + s.ID, key: key,
		body: []byte(`{"url":"https://example.com/c","verification":"none"}`)})
	e.post(http.StatusOK, s.ID, "/verify", `{"challenge":"`+st.Challenge+`"}`, nil)
	got = e.patch("", s.ID, `{"url":"https://example.com/c","verification":"none"}`)
	if got.State != "active" {
		t.Errorf("admin URL change with verification none: state %s", got.State)
	}

	// A paused subscription stays paused, and resuming verifies the new URL.
	e.post(http.StatusOK, s.ID, "/pause", "", nil)
	got = e.patch("", s.ID, `{"url":"https://example.com/d"}`)
	if got.State != "paused" {
		t.Errorf("paused subscription after URL change: %s", got.State)
	}
	got = e.act(s.ID, "/resume", "")
	if got.State != "pending" {
		t.Errorf("resumed after URL change: %s, want pending", got.State)
	}

	for _, c := range []struct{ body, field string }{
		{`{"topic":"other"}`, "topic"},
		{`{"state":"active"}`, "state"},
		{`{"secret":"whsec_x"}`, "secret"},
		{`{"url":null}`, "url"},
		{`{"timeout":"1h"}`, "timeout"},
		{`{"max_in_flight":"x"}`, "max_in_flight"},
		{`{"retry":{"max_attempts":-1}}`, "retry.max_attempts"},
		{`{"headers":{"Host":"evil"}}`, "headers"},
		{`{"filter":{"bogus":1}}`, "filter.bogus"},
		{`{"verification":"maybe"}`, "verification"},
		{`[1]`, ""},
	} {
		e.problem(herald.CodeInvalid, c.field, req{method: "PATCH", path: "/v1/subscriptions/" + s.ID, body: []byte(c.body)})
	}
	e.problem(herald.CodeInvalid, "", req{method: "PATCH", path: "/v1/subscriptions/" + s.ID})
	e.problem(herald.CodeNotFound, anyField, req{method: "PATCH", path: "/v1/subscriptions/sub_none", body: []byte(`{}`)})
	// create, verify, 4 patches, verify, patch, pause, patch, resume
	if n := e.notified.count(s.ID); n != 11 {
		t.Errorf("notifier told %d times, want 11", n)
	}
}

func maps2Equal(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestSubscriptionStateTransitions(t *testing.T) {
	e := newSubEnv(t, Config{})
	s := e.create("", `{"topic":"orders","url":"https://example.com/a"}`)
	challenge := e.stored(s.ID).Challenge
	var got subscriptionJSON

	// pending -> paused -> resume: never verified, so pending again with a new challenge.
	got = e.act(s.ID, "/pause", "")
	if got.State != "paused" || got.StateReason == "" {
		t.Errorf("paused: %+v", got)
	}
	e.problem(herald.CodeConflict, "", req{method: "POST", path: "/v1/subscriptions/" + s.ID + "/pause"})
	e.problem(herald.CodeConflict, "", req{method: "POST", path: "/v1/subscriptions/" + s.ID + "/verify", body: []byte(`{"challenge":"` + challenge + `"}`)})
	got = e.act(s.ID, "/resume", "")
	st := e.stored(s.ID)
	if got.State != "pending" || st.Challenge == challenge || st.Challenge == "" || got.VerifyDeadline == "" {
		t.Errorf("resumed unverified: %+v (challenge changed: %v)", got, st.Challenge != challenge)
	}
	e.problem(herald.CodeConflict, "", req{method: "POST", path: "/v1/subscriptions/" + s.ID + "/resume"})

	// Verify: a wrong token is 400 naming the field, the right one activates.
	e.problem(herald.CodeInvalid, "challenge", req{method: "POST", path: "/v1/subscriptions/" + s.ID + "/verify", body: []byte(`{"challenge":"` + challenge + `"}`)})
	e.problem(herald.CodeInvalid, "challenge", req{method: "POST", path: "/v1/subscriptions/" + s.ID + "/verify", body: []byte(`{"challenge":""}`)})
	e.problem(herald.CodeInvalid, "", req{method: "POST", path: "/v1/subscriptions/" + s.ID + "/verify"})
	got = e.act(s.ID, "/verify", `{"challenge":"`+st.Challenge+`"}`)
	if got.State != "active" || got.VerifyDeadline != "" || got.StateReason != "" {
		t.Errorf("verified: %+v", got)
	}
	if st := e.stored(s.ID); st.Challenge != "" || !st.NextChallengeAt.IsZero() {
		t.Errorf("verified subscription keeps challenge %q, next %v", st.Challenge, st.NextChallengeAt)
	}
	e.problem(herald.CodeConflict, "", req{method: "POST", path: "/v1/subscriptions/" + s.ID + "/verify", body: []byte(`{"challenge":"x"}`)})
	e.problem(herald.CodeConflict, "", req{method: "POST", path: "/v1/subscriptions/" + s.ID + "/resume"})

	// active -> paused -> active.
	got = e.act(s.ID, "/pause", "")
	got = e.act(s.ID, "/resume", "")
	if got.State != "active" || got.StateReason != "" {
		t.Errorf("resumed verified: %+v", got)
	}

	// disabled (by the dispatcher) -> resume -> active, failure run cleared.
	st = e.stored(s.ID)
	st.State, st.StateReason, st.FailingSince = herald.StateDisabled, "410 Gone", time.Now().Add(-time.Hour)
	if err := e.subs.UpdateSubscription(context.Background(), st); err != nil {
		t.Fatal(err)
	}
	e.problem(herald.CodeConflict, "", req{method: "POST", path: "/v1/subscriptions/" + s.ID + "/pause"})
	got = e.act(s.ID, "/resume", "")
	if got.State != "active" || got.FailingSince != "" || got.StateReason != "" {
		t.Errorf("resumed disabled: %+v", got)
	}

	// failed (verification deadline passed) -> resume -> pending, new deadline.
	st = e.stored(s.ID)
	st.State, st.StateReason, st.Challenge = herald.StateFailed, "no answer", "old"
	st.VerifyDeadline = time.Now().Add(-time.Hour)
	if err := e.subs.UpdateSubscription(context.Background(), st); err != nil {
		t.Fatal(err)
	}
	got = e.act(s.ID, "/resume", "")
	st = e.stored(s.ID)
	if got.State != "pending" || !near(t, got.VerifyDeadline, time.Now().Add(24*time.Hour)) || st.Challenge == "old" || st.ChallengeTries != 0 {
		t.Errorf("resumed failed: %+v, challenge %q", got, st.Challenge)
	}
	// create, pause, resume, verify, pause, resume, resume, resume
	if n := e.notified.count(s.ID); n != 8 {
		t.Errorf("notifier told %d times, want 8", n)
	}
	e.problem(herald.CodeNotFound, anyField, req{method: "POST", path: "/v1/subscriptions/sub_none/pause"})
}

func TestSubscriptionSecret(t *testing.T) {
	e := newSubEnv(t, Config{})
	s := e.create("", `{"topic":"orders","url":"https://example.com/a"}`)
	created := hookOf(t, e.stored(s.ID)).Secret

	var sec secretJSON
	res := e.must(http.StatusOK, req{method: "GET", path: "/v1/subscriptions/" + s.ID + "/secret"}, &sec)
	if sec.Secret != created || sec.PreviousSecret != "" || sec.PreviousExpiresAt != "" {
		t.Errorf("secret %+v, want the created one alone", sec)
	}
	if res.header.Get("Cache-Control") != "no-store" {
		t.Errorf("Cache-Control %q", res.header.Get("Cache-Control"))
	}

	rot := e.rotate(s.ID, `{"grace":"1h"}`)
	if rot.Secret == created || !strings.HasPrefix(rot.Secret, "whsec_") || rot.PreviousSecret != created ||
		!near(t, rot.PreviousExpiresAt, time.Now().Add(time.Hour)) {
		t.Errorf("rotate: %+v (old %s)", rot, created)
	}
	sec = e.secret(s.ID)
	if sec != rot {
		t.Errorf("secret after rotation %+v, want %+v", sec, rot)
	}
	st := e.stored(s.ID)
	if hookOf(t, st).Secret != rot.Secret || hookOf(t, st).PreviousSecret != created {
		t.Errorf("stored secrets %q %q", hookOf(t, st).Secret, hookOf(t, st).PreviousSecret)
	}

	// Default grace 24h; an empty body is fine.
	rot = e.rotate(s.ID, "")
	if rot.PreviousSecret != hookOf(t, st).Secret || !near(t, rot.PreviousExpiresAt, time.Now().Add(24*time.Hour)) {
		t.Errorf("default rotation: %+v", rot)
	}
	// Grace 0s: the previous secret stops at once.
	rot = e.rotate(s.ID, `{"grace":"0s"}`)
	sec = e.secret(s.ID)
	if sec.Secret != rot.Secret || sec.PreviousSecret != "" {
		t.Errorf("after a rotation without grace: %+v", sec)
	}
	for _, body := range []string{`{"grace":"8d"}`, `{"grace":"-1h"}`, `{"grace":"soon"}`, `{"grace":3600}`} {
		e.problem(herald.CodeInvalid, "grace", req{method: "POST", path: "/v1/subscriptions/" + s.ID + "/secret:rotate", body: []byte(body)})
	}
}

// A caller may choose the signing secret at creation, so a receiver
// configured with it beforehand passes the first verification challenge.
// The secret is write-only: the create answer echoes it, GET never shows it.
func TestSubscriptionCallerSecret(t *testing.T) {
	e := newSubEnv(t, Config{})
	key := make([]byte, 32)
	for i := range key {
		key[i] = byte(i*37 + 11)
	}
	chosen := "whsec_" + base64.StdEncoding.EncodeToString(key)
	s := e.create("", `{"topic":"orders","url":"https://example.com/a","secret":"`+chosen+`"}`)
	if s.Secret != chosen || hookOf(t, e.stored(s.ID)).Secret != chosen || e.secret(s.ID).Secret != chosen {
		t.Errorf("created with %s: answer %q, stored %q", chosen, s.Secret, hookOf(t, e.stored(s.ID)).Secret)
	}
	res := e.must(http.StatusOK, req{method: "GET", path: "/v1/subscriptions/" + s.ID}, nil)
	if strings.Contains(string(res.body), chosen) || strings.Contains(string(res.body), `"secret"`) {
		t.Errorf("GET shows the secret: %s", res.body)
	}
	// Base64 split over lines decodes to the same key and is stored in
	// canonical form, the form receivers are configured with.
	wrapped := chosen[:30] + `\n` + chosen[30:]
	if s := e.create("", `{"topic":"orders","url":"https://example.com/b","secret":"`+wrapped+`"}`); s.Secret != chosen {
		t.Errorf("a wrapped secret is answered as %q, want the canonical %q", s.Secret, chosen)
	}
	// A secret is not a setting a patch may change (rotate-secret does).
	e.problem(herald.CodeInvalid, "secret", req{method: "PATCH", path: "/v1/subscriptions/" + s.ID, body: []byte(`{"secret":"` + chosen + `"}`)})

	for name, secret := range map[string]string{
		"empty":         `""`,
		"no prefix":     `"` + base64.StdEncoding.EncodeToString(key) + `"`,
		"other prefix":  `"whsec-` + base64.StdEncoding.EncodeToString(key) + `"`,
		"not base64":    `"whsec_not base64!"`,
		"url base64":    `"whsec_` + base64.URLEncoding.EncodeToString([]byte{0xfb, 0xff, 0xfe, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21}) + `"`,
		"too short":     `"whsec_` + base64.StdEncoding.EncodeToString(key[:23]) + `"`,
		"too long":      `"whsec_` + base64.StdEncoding.EncodeToString(append(append(key, key...), key...)[:65]) + `"`,
		"not random":    `"whsec_` + base64.StdEncoding.EncodeToString(make([]byte, 32)) + `"`,
		"repeated word": `"whsec_` + base64.StdEncoding.EncodeToString([]byte(strings.Repeat("secret", 5))) + `"`,
		"not a string":  `42`,
	} {
		t.Run(name, func(t *testing.T) {
			p := e.with(t).problem(herald.CodeInvalid, "secret", req{method: "POST", path: "/v1/subscriptions",
				body: []byte(`{"topic":"orders","url":"https://example.com/c","secret":` + secret + `}`)})
			if strings.Contains(p.Detail, base64.StdEncoding.EncodeToString(key[:16])) {
				t.Errorf("the problem repeats the secret: %s", p.Detail)
			}
		})
	}
}

func TestSubscriptionDelete(t *testing.T) {
	e := newSubEnv(t, Config{})
	s := e.create("", `{"topic":"orders","url":"https://example.com/a"}`)
	e.must(http.StatusNoContent, req{method: "DELETE", path: "/v1/subscriptions/" + s.ID}, nil)
	e.problem(herald.CodeNotFound, anyField, req{method: "GET", path: "/v1/subscriptions/" + s.ID})
	e.problem(herald.CodeNotFound, anyField, req{method: "DELETE", path: "/v1/subscriptions/" + s.ID})
	if _, err := e.subs.GetSubscription(context.Background(), s.ID); !herald.IsCode(err, herald.CodeNotFound) {
		t.Errorf("store still has it: %v", err)
	}
	if n := e.notified.count(s.ID); n != 2 {
		t.Errorf("notified %d times, want 2 (create, delete)", n)
	}
}

func TestSubscriptionDeadLetters(t *testing.T) {
	e := newSubEnv(t, Config{})
	e.putTopic("orders", "")
	ids := e.publish("orders", 5)
	s := e.create("", `{"topic":"orders","url":"https://example.com/a","verification":"none","start":"earliest"}`)
	now := time.Now().UTC()
	var dls []herald.DeadLetter
	for i, id := range ids {
		dls = append(dls, herald.DeadLetter{SubscriptionID: s.ID, Topic: "orders", Seq: int64(i + 1), EventID: id,
			Key: fmt.Sprintf("k%d", i%2), Attempts: 15, LastError: "status 500", DeadAt: now})
	}
	e.settle(s.ID, herald.Settlement{Cursors: []herald.Cursor{{Topic: "orders", Seq: 5}}, DeadLetters: dls})

	// Pages of 2 in (topic, seq) order.
	var seen []deadLetterJSON
	cursor := ""
	for pages := 0; ; pages++ {
		var page deadLetterListJSON
		e.must(http.StatusOK, req{method: "GET", path: "/v1/subscriptions/" + s.ID + "/dead-letters?limit=2&cursor=" + cursor}, &page)
		if len(page.DeadLetters) > 2 || pages > 5 {
			t.Fatalf("page %+v", page)
		}
		seen = append(seen, page.DeadLetters...)
		if cursor = page.NextCursor; cursor == "" {
			break
		}
	}
	if len(seen) != 5 {
		t.Fatalf("listed %d dead letters, want 5", len(seen))
	}
	for i, d := range seen {
		if d.Seq != int64(i+1) || d.EventID != ids[i] || d.Topic != "orders" || d.Attempts != 15 ||
			d.LastError != "status 500" || d.Key != fmt.Sprintf("k%d", i%2) || !near(t, d.DeadAt, now) {
			t.Errorf("dead letter %d: %+v", i, d)
		}
	}
	if st := e.get(s.ID).Stats; st.DeadLetters != 5 || st.Retries != 0 {
		t.Errorf("stats %+v", st)
	}

	// Redrive one by id, then delete one, then redrive and delete the rest.
	var redriven map[string]int64
	e.post(http.StatusOK, s.ID, "/dead-letters/redrive", `{"event_ids":["`+ids[0]+`"]}`, &redriven)
	if redriven["redriven"] != 1 {
		t.Errorf("redrive one: %v", redriven)
	}
	if st := e.get(s.ID).Stats; st.DeadLetters != 4 || st.Retries != 1 {
		t.Errorf("stats after redrive: %+v", st)
	}
	var deleted map[string]int64
	e.must(http.StatusOK, req{method: "DELETE", path: "/v1/subscriptions/" + s.ID + "/dead-letters/" + ids[1]}, &deleted)
	if deleted["deleted"] != 1 {
		t.Errorf("delete one: %v", deleted)
	}
	e.problem(herald.CodeNotFound, "", req{method: "DELETE", path: "/v1/subscriptions/" + s.ID + "/dead-letters/" + ids[1]})
	e.post(http.StatusOK, s.ID, "/dead-letters/redrive", `{"event_ids":["`+ids[2]+`","nope"]}`, &redriven)
	if redriven["redriven"] != 1 {
		t.Errorf("redrive with an unknown id: %v", redriven)
	}
	e.must(http.StatusOK, req{method: "DELETE", path: "/v1/subscriptions/" + s.ID + "/dead-letters"}, &deleted)
	if deleted["deleted"] != 2 {
		t.Errorf("delete all: %v", deleted)
	}
	e.post(http.StatusOK, s.ID, "/dead-letters/redrive", "", &redriven)
	if redriven["redriven"] != 0 {
		t.Errorf("redrive all of none: %v", redriven)
	}
	if st := e.get(s.ID).Stats; st.DeadLetters != 0 || st.Retries != 2 {
		t.Errorf("final stats %+v", st)
	}
	for _, c := range []struct{ body, field string }{
		{`{"event_ids":[]}`, "event_ids"},
		{`{"event_ids":[""]}`, "event_ids[0]"},
		{`{"event_ids":"all"}`, "event_ids"},
	} {
		e.problem(herald.CodeInvalid, c.field, req{method: "POST", path: "/v1/subscriptions/" + s.ID + "/dead-letters/redrive", body: []byte(c.body)})
	}
	e.problem(herald.CodeInvalid, "cursor", req{method: "GET", path: "/v1/subscriptions/" + s.ID + "/dead-letters?cursor=xyz"})
	e.problem(herald.CodeInvalid, "limit", req{method: "GET", path: "/v1/subscriptions/" + s.ID + "/dead-letters?limit=5000"})
}

func TestSubscriptionReplay(t *testing.T) {
	e := newSubEnv(t, Config{})
	e.putTopic("orders.eu", "")
	e.putTopic("orders.us", "")
	e.putTopic("other", "")
	e.publish("orders.eu", 5)
	mid := time.Now()
	e.publish("orders.us", 3)
	e.publish("other", 2)

	pattern := e.create("", `{"topic":"orders.*","url":"https://example.com/a","verification":"none"}`)
	scheduled := func(id, body string) int64 {
		t.Helper()
		var out map[string]int64
		e.post(http.StatusAccepted, id, "/replay", body, &out)
		return out["scheduled"]
	}
	if n := scheduled(pattern.ID, `{"from_seq":2}`); n != 4+2 {
		t.Errorf("replay from seq 2 over both topics: %d, want 6", n)
	}
	if n := scheduled(pattern.ID, `{"from_seq":1}`); n != 2 {
		t.Errorf("replay again: %d, want only the 2 not yet waiting", n)
	}
	if st := e.get(pattern.ID).Stats; st.Retries != 8 {
		t.Errorf("retries %d, want 8", st.Retries)
	}

	single := e.create("", `{"topic":"orders.eu","url":"https://example.com/b","verification":"none"}`)
	if n := scheduled(single.ID, `{"from_seq":2,"to_seq":3}`); n != 2 {
		t.Errorf("seq 2 to 3: %d", n)
	}
	if n := scheduled(single.ID, `{"from_seq":1,"to_seq":100}`); n != 3 {
		t.Errorf("to_seq past the head: %d, want 3 more", n)
	}
	byTime := e.create("", `{"topic":"orders.*","url":"https://example.com/c","verification":"none"}`)
	if n := scheduled(byTime.ID, `{"from_time":"`+mid.UTC().Format(time.RFC3339Nano)+`"}`); n != 3 {
		t.Errorf("from_time between the topics' events: %d, want the 3 of orders.us", n)
	}
	oneTopic := e.create("", `{"topic":"orders.*","url":"https://example.com/d","verification":"none"}`)
	if n := scheduled(oneTopic.ID, `{"from_seq":0,"topic":"orders.us"}`); n != 3 {
		t.Errorf("one topic of a pattern: %d", n)
	}
	if n := e.notified.count(oneTopic.ID); n != 2 {
		t.Errorf("notified %d, want 2", n)
	}

	for _, c := range []struct {
		body, field string
		code        herald.Code
	}{
		{`{}`, "from_seq", herald.CodeInvalid},
		{`{"from_seq":1,"from_time":"2025-01-01T00:00:00Z"}`, "from_seq", herald.CodeInvalid},
		{`{"from_seq":-1}`, "from_seq", herald.CodeInvalid},
		{`{"from_time":"yesterday"}`, "from_time", herald.CodeInvalid},
		{`{"from_seq":5,"to_seq":4}`, "to_seq", herald.CodeInvalid},
		{`{"from_seq":1,"topic":"other"}`, "topic", herald.CodeInvalid},
		{`{"from_seq":1,"topic":"orders..x"}`, "topic", herald.CodeInvalid},
		{`{"from_seq":1,"topic":"orders.asia"}`, anyField, herald.CodeNotFound},
		{`{"from_seq":1,"extra":true}`, "extra", herald.CodeInvalid},
	} {
		e.problem(c.code, c.field, req{method: "POST", path: "/v1/subscriptions/" + pattern.ID + "/replay", body: []byte(c.body)})
	}
}

// A replay that schedules nothing says why: the events are already
// waiting in the retry set, have passed retention, or the range is empty.
func TestSubscriptionReplayExplainsNothing(t *testing.T) {
	e := newSubEnv(t, Config{})
	e.putTopic("orders", "")
	e.putTopic("empty", "")
	e.publish("orders", 5)
	replay := func(id, body string) replayJSON {
		t.Helper()
		var out replayJSON
		e.post(http.StatusAccepted, id, "/replay", body, &out)
		return out
	}
	s := e.create("", `{"topic":"orders","url":"https://example.com/a","verification":"none"}`)
	if got := replay(s.ID, `{"from_seq":2}`); got != (replayJSON{Scheduled: 4}) {
		t.Errorf("first replay: %+v", got)
	}
	got := replay(s.ID, `{"from_seq":1,"to_seq":4}`)
	if got.Scheduled != 1 || got.AlreadyPending != 3 || got.Reason != "" {
		t.Errorf("replay over 3 waiting events and a new one: %+v", got)
	}
	got = replay(s.ID, `{"from_seq":2,"to_seq":3}`)
	if got.Scheduled != 0 || got.AlreadyPending != 2 || !strings.Contains(got.Reason, "the 2 events of the range are already waiting in the subscription's retry set") {
		t.Errorf("replay of waiting events: %+v", got)
	}
	if got = replay(s.ID, `{"from_seq":9}`); got.Scheduled != 0 || got.Reason != "the range holds no event: the newest event of orders is seq 5" {
		t.Errorf("replay past the head: %+v", got)
	}
	if got = replay(s.ID, `{"from_time":"`+time.Now().Add(time.Hour).UTC().Format(time.RFC3339)+`"}`); got.Scheduled != 0 || !strings.Contains(got.Reason, "newest event of orders is seq 5") {
		t.Errorf("replay from a time after the last event: %+v", got)
	}
	empty := e.create("", `{"topic":"empty","url":"https://example.com/b","verification":"none"}`)
	if got = replay(empty.ID, `{"from_seq":0}`); got.Reason != "topic empty has no events" {
		t.Errorf("replay of an empty topic: %+v", got)
	}
	none := e.create("", `{"topic":"nothing.*","url":"https://example.com/c","verification":"none"}`)
	if got = replay(none.ID, `{"from_seq":0}`); got.Reason != "no topic matches the subscription's pattern nothing.*" {
		t.Errorf("replay of a pattern that matches no topic: %+v", got)
	}

	// Retention removes the events: a replay finds them gone.
	if _, err := e.subs.Prune(context.Background(), time.Now().Add(30*24*time.Hour), 1000); err != nil {
		t.Fatal(err)
	}
	late := e.create("", `{"topic":"orders","url":"https://example.com/d","verification":"none"}`)
	if got = replay(late.ID, `{"from_seq":1,"to_seq":3}`); got != (replayJSON{NotRetained: 3, Reason: "the 3 events of the range have passed retention and are no longer stored"}) {
		t.Errorf("replay of pruned events: %+v", got)
	}
}

func TestSubscriptionAttempts(t *testing.T) {
	e := newSubEnv(t, Config{})
	e.putTopic("orders", "")
	ids := e.publish("orders", 3)
	s := e.create("", `{"topic":"orders","url":"https://example.com/a","verification":"none","start":"earliest"}`)
	base := time.Now().UTC().Add(-time.Minute)
	var attempts []herald.Attempt
	for i, id := range ids {
		attempts = append(attempts,
			herald.Attempt{SubscriptionID: s.ID, Topic: "orders", Seq: int64(i + 1), EventID: id, Attempt: 1, Time: base.Add(time.Duration(2*i) * time.Second),
				Outcome: herald.OutcomeFailure, StatusCode: 503, Latency: 1500 * time.Microsecond, Error: "status 503", Response: "busy"},
			herald.Attempt{SubscriptionID: s.ID, Topic: "orders", Seq: int64(i + 1), EventID: id, Attempt: 2, Time: base.Add(time.Duration(2*i+1) * time.Second),
				Outcome: herald.OutcomeSuccess, StatusCode: 204, Latency: 2 * time.Millisecond})
	}
	e.settle(s.ID, herald.Settlement{Attempts: attempts})

	list := func(query string) []attemptJSON {
		t.Helper()
		var out []attemptJSON
		cursor := ""
		for pages := 0; ; pages++ {
			var page attemptListJSON
			e.must(http.StatusOK, req{method: "GET", path: "/v1/subscriptions/" + s.ID + "/attempts?limit=2&cursor=" + cursor + "&" + query}, &page)
			if len(page.Attempts) > 2 || pages > 10 {
				t.Fatalf("page %+v", page)
			}
			out = append(out, page.Attempts...)
			if cursor = page.NextCursor; cursor == "" {
				return out
			}
		}
	}
	all := list("")
	if len(all) != 6 {
		t.Fatalf("listed %d attempts, want 6", len(all))
	}
	for i := 1; i < len(all); i++ {
		if all[i].ID >= all[i-1].ID {
			t.Errorf("not newest first: ids %d then %d", all[i-1].ID, all[i].ID)
		}
	}
	newest := all[0]
	if newest.EventID != ids[2] || newest.Attempt != 2 || newest.Outcome != "success" || newest.StatusCode != 204 ||
		newest.LatencyMS != 2 || newest.Error != "" || newest.Seq != 3 || newest.Topic != "orders" {
		t.Errorf("newest %+v", newest)
	}
	failure := all[1]
	if failure.Outcome != "failure" || failure.StatusCode != 503 || failure.LatencyMS != 1.5 || failure.Error != "status 503" || failure.Response != "busy" {
		t.Errorf("failure %+v", failure)
	}
	if got := list("event_id=" + ids[1]); len(got) != 2 || got[0].EventID != ids[1] || got[1].EventID != ids[1] {
		t.Errorf("by event: %+v", got)
	}
	if got := list("outcome=failure"); len(got) != 3 || got[0].Outcome != "failure" {
		t.Errorf("failures: %+v", got)
	}
	if got := list("outcome=success&event_id=" + ids[0]); len(got) != 1 || got[0].Attempt != 2 {
		t.Errorf("success of the first: %+v", got)
	}
	for _, c := range []struct{ query, field string }{
		{"outcome=maybe", "outcome"}, {"cursor=%21%21", "cursor"}, {"limit=0", "limit"},
	} {
		e.problem(herald.CodeInvalid, c.field, req{method: "GET", path: "/v1/subscriptions/" + s.ID + "/attempts?" + c.query})
	}
}

// timeoutRecorder is a Deliverer that remembers the timeout of the last
// subscription it was given.
type timeoutRecorder struct {
	Deliverer
	mu      sync.Mutex
	timeout time.Duration
}

func (d *timeoutRecorder) Deliver(ctx context.Context, sub *herald.Subscription, ev *herald.Event, attempt int) herald.DeliveryResult {
	d.mu.Lock()
	d.timeout = sub.Timeout
	d.mu.Unlock()
	return d.Deliverer.Deliver(ctx, sub, ev, attempt)
}

// sinkDeliverer sends test events the way the dispatcher does, through
// the subscription's channel.
type sinkDeliverer struct{ ch channel.Channel }

func (d sinkDeliverer) Deliver(ctx context.Context, sub *herald.Subscription, ev *herald.Event, attempt int) herald.DeliveryResult {
	sink, err := d.ch.Open(ctx, sub)
	if err != nil {
		return herald.DeliveryResult{Outcome: herald.Failed, Err: err.Error()}
	}
	defer func() { _ = sink.Close(ctx) }()
	return sink.Deliver(ctx, ev, attempt)
}

func (d *timeoutRecorder) last() time.Duration {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.timeout
}

// POST .../test sends a signed herald.test event through the real
// deliverer, the way events are sent, and answers how the endpoint took
// it, without touching the subscription's delivery state.
func TestSubscriptionTestEvent(t *testing.T) {
	type received struct {
		path   string
		header http.Header
		body   []byte
	}
	var (
		mu         sync.Mutex
		got        []received
		status     = http.StatusNoContent
		answerBody = ""
	)
	ep := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		got = append(got, received{r.URL.Path, r.Header.Clone(), body})
		w.WriteHeader(status)
		io.WriteString(w, answerBody)
	}))
	t.Cleanup(ep.Close)
	answer := func(code int, body string) {
		mu.Lock()
		defer mu.Unlock()
		status, answerBody = code, body
	}
	requests := func() []received {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(got)
	}
	deliverer := &timeoutRecorder{Deliverer: sinkDeliverer{webhook.NewChannel(webhook.NewSender(webhook.SenderConfig{AllowPrivate: true}),
		webhook.ChannelConfig{AllowPrivate: true})}}
	e := newSubEnvWith(t, Config{}, deliverer, true)
	testPath := func(id string) string { return "/v1/subscriptions/" + id + "/test" }

	// Nothing goes to an endpoint that has not answered the challenge.
	pending := e.create("", `{"topic":"orders.*","url":"`+ep.URL+`/hook"}`)
	e.problem(herald.CodeConflict, "", req{method: "POST", path: testPath(pending.ID)})
	if n := len(requests()); n != 0 {
		t.Fatalf("the pending endpoint got %d requests", n)
	}

	s := e.create("", `{"topic":"orders.*","url":"`+ep.URL+`/hook","verification":"none","headers":{"X-Team":"billing"}}`)
	secret := e.secret(s.ID).Secret
	var res testResultJSON
	e.post(http.StatusOK, s.ID, "/test", "", &res)
	if res.Outcome != "success" || res.StatusCode != 204 || res.EventID == "" || res.LatencyMS <= 0 || res.Error != "" {
		t.Errorf("test of an endpoint answering 204: %+v", res)
	}
	reqs := requests()
	if len(reqs) != 1 {
		t.Fatalf("the endpoint got %d requests, want 1", len(reqs))
	}
	r := reqs[0]
	if err := webhook.Verify(secret, r.header, r.body, time.Now(), 0); err != nil {
		t.Errorf("the test event does not verify with the subscription's secret: %v", err)
	}
	for name, want := range map[string]string{
		"Webhook-Id": res.EventID, "Herald-Event-Type": "herald.test", "Herald-Topic": "orders.*", "Herald-Seq": "0",
		"Herald-Attempt": "1", "Herald-Subscription-Id": s.ID, "X-Team": "billing", "Content-Type": "application/json",
	} {
		if v := r.header.Get(name); v != want {
			t.Errorf("header %s: %q, want %q", name, v, want)
		}
	}
	var payload map[string]string
	if err := json.Unmarshal(r.body, &payload); err != nil || payload["type"] != "herald.test" || payload["subscription_id"] != s.ID || r.path != "/hook" {
		t.Errorf("request to %s with body %s (%v)", r.path, r.body, err)
	}

	// A failing endpoint: the answer says how; nothing is recorded,
	// retried or counted as a run of failures.
	answer(http.StatusServiceUnavailable, "down for maintenance")
	e.post(http.StatusOK, s.ID, "/test", "{}", &res)
	if res.Outcome != "failure" || res.StatusCode != 503 || res.Response != "down for maintenance" || res.Error == "" {
		t.Errorf("test of an endpoint answering 503: %+v", res)
	}
	var attempts attemptListJSON
	e.must(http.StatusOK, req{method: "GET", path: "/v1/subscriptions/" + s.ID + "/attempts"}, &attempts)
	if st := e.get(s.ID); len(attempts.Attempts) != 0 || *st.Stats != (statsJSON{}) || st.FailingSince != "" || st.LastSuccessAt != "" || st.State != "active" {
		t.Errorf("test events changed the delivery state: attempts %+v, subscription %+v", attempts, st)
	}

	// The subscription's timeout applies, at most 20s: the answer must
	// come before clients stop waiting for it.
	slow := e.create("", `{"topic":"orders","url":"`+ep.URL+`/slow","verification":"none","timeout":"60s"}`)
	e.post(http.StatusOK, slow.ID, "/test", "", &res)
	if got := deliverer.last(); got != 20*time.Second {
		t.Errorf("a subscription with a 60s timeout was tested with %s, want 20s", got)
	}
	e.post(http.StatusOK, s.ID, "/test", "", &res)
	if got := deliverer.last(); got != 15*time.Second {
		t.Errorf("a subscription with the default timeout was tested with %s, want 15s", got)
	}

	// A paused subscription's verified endpoint may be tested.
	answer(http.StatusOK, "")
	e.act(s.ID, "/pause", "")
	if e.post(http.StatusOK, s.ID, "/test", "", &res); res.Outcome != "success" {
		t.Errorf("test of a paused subscription: %+v", res)
	}
	e.problem(herald.CodeInvalid, "type", req{method: "POST", path: testPath(s.ID), body: []byte(`{"type":"order.created"}`)})
	_, key := e.createKey("subscribe:payments.>")
	e.problem(herald.CodeForbidden, "", req{method: "POST", path: testPath(s.ID), key: key})
	e.problem(herald.CodeNotFound, anyField, req{method: "POST", path: testPath("sub_missing")})

	// A server without a deliverer says so.
	plain := newSubEnv(t, Config{})
	other := plain.create("", `{"topic":"orders","url":"https://example.com/a","verification":"none"}`)
	plain.problem(herald.CodeUnavailable, "", req{method: "POST", path: testPath(other.ID)})
}

// API calls on a subscription count as activity, written at most once a
// minute and without changing updated_at.
func TestSubscriptionActivity(t *testing.T) {
	e := newSubEnv(t, Config{})
	s := e.create("", `{"topic":"orders","url":"https://example.com/a"}`)
	start := e.stored(s.ID)

	var mu sync.Mutex
	clock := time.Now()
	e.api.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	advance := func(d time.Duration) { mu.Lock(); clock = clock.Add(d); mu.Unlock() }

	advance(30 * time.Second)
	e.get(s.ID)
	if got := e.stored(s.ID); !got.LastActivityAt.Equal(start.LastActivityAt) {
		t.Errorf("activity written after 30s: %v -> %v", start.LastActivityAt, got.LastActivityAt)
	}
	advance(time.Minute)
	e.must(http.StatusOK, req{method: "GET", path: "/v1/subscriptions/" + s.ID + "/secret"}, nil)
	got := e.stored(s.ID)
	if !got.LastActivityAt.After(start.LastActivityAt) || !got.UpdatedAt.Equal(start.UpdatedAt) {
		t.Errorf("after 90s: activity %v -> %v, updated %v -> %v", start.LastActivityAt, got.LastActivityAt, start.UpdatedAt, got.UpdatedAt)
	}
	if n := e.notified.count(s.ID); n != 1 {
		t.Errorf("reads notified the dispatcher: %d", n)
	}
}

// Without a subscription store the routes answer 503, not a panic.
func TestSubscriptionsWithoutStore(t *testing.T) {
	e := newEnv(t, Config{})
	e.problem(herald.CodeUnavailable, "", req{method: "GET", path: "/v1/subscriptions"})
	e.problem(herald.CodeUnavailable, "", req{method: "GET", path: "/v1/subscriptions/sub_x"})
}
