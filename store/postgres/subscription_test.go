package postgres

import (
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/jackc/pgx/v5"
)

// testSub returns a subscription with every field set.
func testSub(id, topic string, now time.Time) herald.Subscription {
	return herald.Subscription{
		ID: id, Topic: topic, Channel: "webhook", Description: "orders to the ERP",
		Config:           json.RawMessage(`{"url":"https://example.com/hook","headers":{"X-Team":"billing"},"secret":"whsec_new"}`),
		Filter:           json.RawMessage(`{"type":["order.created"]}`),
		Retry:            herald.RetryPolicy{MaxAttempts: 5, Initial: time.Second, Max: time.Minute},
		Timeout:          10 * time.Second,
		MaxInFlight:      8,
		RateLimit:        12.5,
		Ordered:          true,
		ExpiresAfterIdle: 48 * time.Hour,
		State:            herald.StateActive, StateReason: "",
		Challenge: "chal", VerifyDeadline: now.Add(24 * time.Hour), NextChallengeAt: now.Add(time.Minute), ChallengeTries: 2,
		OwnerKeyID: "key_1", CreatedAt: now, UpdatedAt: now, LastActivityAt: now.Add(-time.Minute),
		LastSuccessAt: now.Add(-2 * time.Minute), FailingSince: now.Add(-3 * time.Minute),
	}
}

func createSub(t *testing.T, s *Store, sub herald.Subscription, start herald.StartPosition) {
	t.Helper()
	if err := s.CreateSubscription(t.Context(), sub, start); err != nil {
		t.Fatalf("CreateSubscription %s: %v", sub.ID, err)
	}
}

func getSub(t *testing.T, s *Store, id string) herald.Subscription {
	t.Helper()
	got, err := s.GetSubscription(t.Context(), id)
	if err != nil {
		t.Fatalf("GetSubscription %s: %v", id, err)
	}
	return got
}

func appendN(t *testing.T, s *Store, topic string, n int, at time.Time, key string) {
	t.Helper()
	evs := make([]*herald.Event, n)
	for i := range evs {
		evs[i] = &herald.Event{ID: herald.NewID(at), Topic: topic, Time: at, Key: key, Payload: []byte("x")}
	}
	res, err := s.Append(t.Context(), evs)
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	for _, r := range res {
		if r.Err != nil {
			t.Fatalf("Append: %v", r.Err)
		}
	}
}

func wantCode(t *testing.T, what string, err error, code herald.Code) {
	t.Helper()
	if got := herald.ErrorCode(err); got != code {
		t.Fatalf("%s: error %v has code %q, want %q", what, err, got, code)
	}
}

func cursorsOf(t *testing.T, s *Store, id string) map[string]int64 {
	t.Helper()
	cs, err := s.Cursors(t.Context(), id)
	if err != nil {
		t.Fatalf("Cursors %s: %v", id, err)
	}
	out := make(map[string]int64, len(cs))
	for _, c := range cs {
		out[c.Topic] = c.Seq
	}
	return out
}

func TestSubscriptionCRUD(t *testing.T) {
	s := newTestStore(t)
	ctx := t.Context()
	now := time.Now().UTC()
	sub := testSub("sub_1", "orders.>", now)
	createSub(t, s, sub, herald.StartPosition{})
	if got := getSub(t, s, "sub_1"); !reflect.DeepEqual(got, sub) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, sub)
	}
	wantCode(t, "create a duplicate", s.CreateSubscription(ctx, sub, herald.StartPosition{}), herald.CodeConflict)
	_, err := s.GetSubscription(ctx, "sub_missing")
	wantCode(t, "get a missing subscription", err, herald.CodeNotFound)

	// Zero and nil fields read back as such; a zero CreatedAt is set.
	bare := herald.Subscription{ID: "sub_2", Topic: "orders", State: herald.StatePending}
	createSub(t, s, bare, herald.StartPosition{})
	got := getSub(t, s, "sub_2")
	if got.Filter != nil || string(got.Config) != "{}" || !got.LastSuccessAt.IsZero() || got.CreatedAt.IsZero() || !got.UpdatedAt.Equal(got.CreatedAt) {
		t.Fatalf("bare subscription read back as %+v", got)
	}

	// Update replaces everything but ID, Topic, CreatedAt and OwnerKeyID.
	upd := testSub("sub_1", "other.topic", now.Add(time.Hour))
	upd.Config, upd.State, upd.StateReason, upd.OwnerKeyID = json.RawMessage(`{"url":"https://example.org/new"}`), herald.StatePaused, "owner paused", "key_other"
	upd.Filter, upd.FailingSince = nil, time.Time{}
	if err := s.UpdateSubscription(ctx, upd); err != nil {
		t.Fatalf("UpdateSubscription: %v", err)
	}
	want := upd
	want.Topic, want.CreatedAt, want.OwnerKeyID = sub.Topic, sub.CreatedAt, sub.OwnerKeyID
	want.Version = 1 // the update's
	if got := getSub(t, s, "sub_1"); !reflect.DeepEqual(got, want) {
		t.Fatalf("after update:\n got %+v\nwant %+v", got, want)
	}
	upd.ID = "sub_missing"
	wantCode(t, "update a missing subscription", s.UpdateSubscription(ctx, upd), herald.CodeNotFound)

	// Invalid input names its field.
	bad := testSub("sub_bad", "orders", now)
	bad.Description = "nul\x00byte"
	wantCode(t, "NUL in a description", s.CreateSubscription(ctx, bad, herald.StartPosition{}), herald.CodeInvalid)
	bad = testSub("sub_bad", "orders..x", now)
	wantCode(t, "bad topic pattern", s.CreateSubscription(ctx, bad, herald.StartPosition{}), herald.CodeInvalid)

	if err := s.DeleteSubscription(ctx, "sub_2"); err != nil {
		t.Fatalf("DeleteSubscription: %v", err)
	}
	wantCode(t, "delete again", s.DeleteSubscription(ctx, "sub_2"), herald.CodeNotFound)
	_, err = s.GetSubscription(ctx, "sub_2")
	wantCode(t, "get a deleted subscription", err, herald.CodeNotFound)
}

func TestListSubscriptions(t *testing.T) {
	s := newTestStore(t)
	now := time.Now().UTC()
	for i := range 7 {
		sub := testSub(fmt.Sprintf("sub_%02d", i), "orders", now)
		sub.OwnerKeyID = fmt.Sprintf("key_%d", i%2)
		if i%3 == 0 {
			sub.State = herald.StatePaused
		}
		createSub(t, s, sub, herald.StartPosition{})
	}
	ids := func(f herald.SubscriptionFilter) []string {
		t.Helper()
		subs, err := s.ListSubscriptions(t.Context(), f)
		if err != nil {
			t.Fatalf("ListSubscriptions(%+v): %v", f, err)
		}
		var out []string
		for _, sub := range subs {
			out = append(out, sub.ID)
		}
		return out
	}
	var all []string
	for after := ""; ; {
		page := ids(herald.SubscriptionFilter{After: after, Limit: 3})
		all = append(all, page...)
		if len(page) < 3 {
			break
		}
		after = page[len(page)-1]
	}
	if want := []string{"sub_00", "sub_01", "sub_02", "sub_03", "sub_04", "sub_05", "sub_06"}; !slices.Equal(all, want) {
		t.Fatalf("pages: %v, want %v", all, want)
	}
	if got, want := ids(herald.SubscriptionFilter{State: herald.StatePaused}), []string{"sub_00", "sub_03", "sub_06"}; !slices.Equal(got, want) {
		t.Fatalf("paused: %v, want %v", got, want)
	}
	if got, want := ids(herald.SubscriptionFilter{Owner: "key_1", State: herald.StateActive}), []string{"sub_01", "sub_05"}; !slices.Equal(got, want) {
		t.Fatalf("key_1 active: %v, want %v", got, want)
	}
}

// A new subscription's cursors sit where its start position says, in
// every existing topic it matches and in no other.
func TestCreateSubscriptionStart(t *testing.T) {
	s := newTestStore(t)
	ctx := t.Context()
	t0 := time.Now().UTC().Add(-time.Hour)
	for _, name := range []string{"a.x", "a.y", "a_z", "b.x"} {
		putTopic(t, s, name)
	}
	// a.x: seqs 1-5 at t0, 6-10 at t0+10m; a.y: empty; a_z and b.x: 3 each.
	appendN(t, s, "a.x", 5, t0, "")
	appendN(t, s, "a.x", 5, t0.Add(10*time.Minute), "")
	appendN(t, s, "a_z", 3, t0, "")
	appendN(t, s, "b.x", 3, t0, "")
	// Retention takes a.x's first two events.
	if _, err := s.pool.Exec(ctx, `DELETE FROM events e USING topics t WHERE e.topic_id = t.id AND t.name = 'a.x' AND e.seq <= 2`); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name  string
		topic string
		start herald.StartPosition
		want  map[string]int64
	}{
		{"head", "a.*", herald.StartPosition{}, map[string]int64{"a.x": 10, "a.y": 0}},
		{"earliest", "a.*", herald.StartPosition{Earliest: true}, map[string]int64{"a.x": 2, "a.y": 0}},
		{"seq", "a.x", herald.StartPosition{Seq: 7}, map[string]int64{"a.x": 7}},
		{"time", "a.>", herald.StartPosition{Time: t0.Add(5 * time.Minute)}, map[string]int64{"a.x": 5, "a.y": 0}},
		{"time after all", "a.x", herald.StartPosition{Time: t0.Add(time.Hour)}, map[string]int64{"a.x": 10}},
		{"time before all", "a.x", herald.StartPosition{Time: t0.Add(-time.Hour)}, map[string]int64{"a.x": 2}},
		{"everything", ">", herald.StartPosition{}, map[string]int64{"a.x": 10, "a.y": 0, "a_z": 3, "b.x": 3}},
		{"missing topic", "c.x", herald.StartPosition{}, map[string]int64{}},
	} {
		id := "sub_" + tc.name
		createSub(t, s, testSub(id, tc.topic, t0), tc.start)
		if got := cursorsOf(t, s, id); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: cursors %v, want %v", tc.name, got, tc.want)
		}
	}
	// A topic created later has no cursor: the subscription starts at its
	// first event.
	putTopic(t, s, "a.new")
	appendN(t, s, "a.new", 2, t0, "")
	if got := cursorsOf(t, s, "sub_head"); got["a.new"] != 0 || len(got) != 2 {
		t.Errorf("after a new topic: cursors %v", got)
	}
}

func TestLeases(t *testing.T) {
	s := newTestStore(t)
	ctx := t.Context()
	now := time.Now().UTC()
	createSub(t, s, testSub("sub_1", "orders", now), herald.StartPosition{})
	acquire := func(node string, at time.Time) (int64, error) {
		return s.AcquireLease(ctx, "sub_1", node, at, 10*time.Second)
	}
	e1, err := acquire("n1", now)
	if err != nil || e1 != 1 {
		t.Fatalf("first acquire: %d %v, want epoch 1", e1, err)
	}
	if e, err := acquire("n1", now.Add(5*time.Second)); err != nil || e != e1 {
		t.Fatalf("extend: %d %v, want epoch %d", e, err, e1)
	}
	// Extended to now+15s: n2 is refused until then.
	_, err = acquire("n2", now.Add(14*time.Second))
	wantCode(t, "acquire a held lease", err, herald.CodeConflict)
	e2, err := acquire("n2", now.Add(15*time.Second))
	if err != nil || e2 != e1+1 {
		t.Fatalf("acquire an expired lease: %d %v, want epoch %d", e2, err, e1+1)
	}
	// n1's lease expired and moved on: it cannot release n2's.
	if err := s.ReleaseLease(ctx, "sub_1", "n1", e1); err != nil {
		t.Fatal(err)
	}
	_, err = acquire("n1", now.Add(16*time.Second))
	wantCode(t, "acquire after a stale release", err, herald.CodeConflict)
	// n2 releases: anyone may take it at once, with a new epoch.
	if err := s.ReleaseLease(ctx, "sub_1", "n2", e2); err != nil {
		t.Fatal(err)
	}
	if e, err := acquire("n1", now.Add(16*time.Second)); err != nil || e != e2+1 {
		t.Fatalf("acquire a released lease: %d %v, want epoch %d", e, err, e2+1)
	}
	// The holder's own lease that expired also gets a new epoch.
	if e, err := acquire("n1", now.Add(time.Hour)); err != nil || e != e2+2 {
		t.Fatalf("reacquire an expired own lease: %d %v, want epoch %d", e, err, e2+2)
	}
	_, err = s.AcquireLease(ctx, "sub_missing", "n1", now, time.Second)
	wantCode(t, "acquire on a missing subscription", err, herald.CodeNotFound)

	// Leases never touch the subscription's fields.
	if got := getSub(t, s, "sub_1"); !got.UpdatedAt.Equal(now) {
		t.Errorf("UpdatedAt moved to %v", got.UpdatedAt)
	}
}

// Nodes racing for a free lease: exactly one gets it.
func TestLeaseRace(t *testing.T) {
	dsn, _ := testDSN(t)
	nodes := []*Store{openTest(t, dsn), openTest(t, dsn)}
	now := time.Now().UTC()
	for i := range 20 {
		createSub(t, nodes[0], testSub(fmt.Sprintf("sub_%d", i), "orders", now), herald.StartPosition{})
	}
	for i := range 20 {
		id := fmt.Sprintf("sub_%d", i)
		var wg sync.WaitGroup
		errs := make([]error, 6)
		for j := range errs {
			wg.Go(func() {
				_, errs[j] = nodes[j%2].AcquireLease(t.Context(), id, fmt.Sprint("node", j), now, time.Minute)
			})
		}
		wg.Wait()
		won := 0
		for _, err := range errs {
			switch {
			case err == nil:
				won++
			case !herald.IsCode(err, herald.CodeConflict):
				t.Fatalf("%s: %v", id, err)
			}
		}
		if won != 1 {
			t.Fatalf("%s: %d nodes got the lease, want 1", id, won)
		}
	}
}

// A schema at version 5 with webhook subscriptions keeps them through the
// migration to channels: each becomes channel "webhook" with its URL,
// static headers and both signing secrets in its config.
func TestMigrateSubscriptionsToChannels(t *testing.T) {
	dsn, _ := testDSN(t)
	ctx := t.Context()
	ms, err := loadMigrations()
	if err != nil || len(ms) < 6 {
		t.Fatalf("loadMigrations = %d migrations, %v", len(ms), err)
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `CREATE TABLE schema_version (version integer PRIMARY KEY, name text NOT NULL,
		applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		t.Fatal(err)
	}
	for _, m := range ms[:5] {
		if _, err := conn.Exec(ctx, m.sql); err != nil {
			t.Fatalf("migration %s: %v", m.name, err)
		}
		if _, err := conn.Exec(ctx, `INSERT INTO schema_version (version, name) VALUES ($1, $2)`, m.version, m.name); err != nil {
			t.Fatal(err)
		}
	}
	prevExp := time.Date(2026, 12, 8, 9, 30, 0, 123456000, time.UTC) // microseconds: what the migration keeps
	insert := `INSERT INTO subscriptions (id, topic, url, description, headers, retry_max_attempts,
		retry_initial, retry_max, timeout, max_in_flight, rate_limit, ordered, expires_after_idle, state,
		state_reason, secret, previous_secret, previous_expires_at, challenge, verify_deadline,
		next_challenge_at, challenge_tries, owner_key_id, created_at, updated_at, last_activity_at,
		last_success_at, failing_since)
		VALUES ($1, 'orders', $2, '', $3, 5, 1000000000, 60000000000, 10000000000,
		10, 0, false, 0, 'active', '', $4, $5, $6, '', 0, 0, 0, '', 1, 1, 0, 0, 0)`
	if _, err := conn.Exec(ctx, insert, "sub_1", "https://hooks.example.com/a?k=v",
		json.RawMessage(`{"X-Team":"billing","Authorization":"Bearer t"}`), "whsec_cur", "whsec_old", prevExp.UnixNano()); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, insert, "sub_2", "https://hooks.example.com/b", nil, "whsec_only", "", int64(0)); err != nil {
		t.Fatal(err)
	}

	s := openTest(t, dsn)
	for _, want := range []struct {
		id, url, secret, prev string
		headers               map[string]string
		prevExpiry            time.Time
	}{
		{"sub_1", "https://hooks.example.com/a?k=v", "whsec_cur", "whsec_old", map[string]string{"X-Team": "billing", "Authorization": "Bearer t"}, prevExp},
		{"sub_2", "https://hooks.example.com/b", "whsec_only", "", nil, time.Time{}},
	} {
		got, err := s.GetSubscription(ctx, want.id)
		if err != nil {
			t.Fatal(err)
		}
		var c struct {
			URL               string            `json:"url"`
			Headers           map[string]string `json:"headers"`
			Secret            string            `json:"secret"`
			PreviousSecret    string            `json:"previous_secret"`
			PreviousExpiresAt time.Time         `json:"previous_expires_at"`
		}
		if err := json.Unmarshal(got.Config, &c); err != nil {
			t.Fatalf("%s config %s: %v", want.id, got.Config, err)
		}
		if got.Channel != herald.ChannelWebhook || c.URL != want.url || !maps.Equal(c.Headers, want.headers) ||
			c.Secret != want.secret || c.PreviousSecret != want.prev || !c.PreviousExpiresAt.Equal(want.prevExpiry) {
			t.Errorf("%s after migration: channel %q config %s; want the webhook's url, headers and secrets", want.id, got.Channel, got.Config)
		}
	}
}
