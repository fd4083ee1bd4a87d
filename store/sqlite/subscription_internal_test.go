package sqlite

import (
	"encoding/json"
	"maps"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald"
)

// The statements on the dispatch path, and the API's lists, search an
// index for the one subscription (and key, or due time) they are about:
// none scans a table or sorts, however large the retry set and the attempt
// log grow. SQLite plans them here with the bundled version of whichever
// driver the build uses.
func TestSubscriptionQueryPlans(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "h.db"))
	list, listArgs := attemptsQuery("sub", herald.AttemptFilter{Limit: 10})
	byEvent, byEventArgs := attemptsQuery("sub", herald.AttemptFilter{EventID: "e", Outcome: herald.OutcomeFailure, BeforeID: 9, Limit: 10})
	cases := []struct {
		name string
		sql  string
		args []any
	}{
		{"settle epoch", settleEpochSQL, []any{"sub"}},
		{"delete retry", deleteRetrySQL, []any{1, "t", 1}},
		{"unblock", unblockSQL, []any{1, "t", "k", 5}},
		{"subscription times", subFieldsSQL, []any{1, 1, 2, 3}},
		{"get subscription", getSubSQL, []any{"sub"}},
		{"cursors", cursorsSQL, []any{"sub"}},
		{"due retries", dueRetriesSQL, []any{"sub", 10}},
		{"retry keys", retryKeysSQL, []any{"sub"}},
		{"count retries", countRetriesSQL, []any{"sub"}},
		{"count dead letters", countDeadSQL, []any{"sub"}},
		{"list dead letters", listDeadSQL, []any{"sub", "t", 1, 10}},
		{"replay", replaySQL, []any{1, "t", 5, 1, 100, 10}},
		{"redrive", redriveSQL, []any{1, `["e"]`, 5}},
		{"delete dead letters", deleteDeadSQL, []any{1, `["e"]`}},
		{"list attempts", list, listArgs},
		{"list attempts of an event", byEvent, byEventArgs},
		{"prune attempts", pruneAttemptsSQL, []any{5, 10}},
		{"delete topic retries", `DELETE FROM retries WHERE topic = ?`, []any{"t"}},
	}
	for _, c := range cases {
		rows, err := s.writer.QueryContext(t.Context(), `EXPLAIN QUERY PLAN `+c.sql, c.args...)
		if err != nil {
			t.Fatalf("%s: EXPLAIN: %v", c.name, err)
		}
		var plan []string
		for rows.Next() {
			var id, parent, unused int
			var detail string
			if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
			plan = append(plan, detail)
		}
		rows.Close()
		for _, step := range plan {
			scan := strings.HasPrefix(step, "SCAN ") && !strings.Contains(step, "json_each") && !strings.Contains(step, "CONSTANT ROW") && !strings.Contains(step, "VALUES CLAUSE")
			if scan || strings.Contains(step, "TEMP B-TREE") {
				t.Errorf("%s is planned with %q:\n  %s", c.name, step, strings.Join(plan, "\n  "))
			}
		}
	}
}

// DeleteSubscription leaves no row of the subscription behind, even those
// no API could reach any more (its sid is never reused).
func TestDeleteSubscriptionLeavesNoRows(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "h.db"))
	ctx := t.Context()
	if _, _, err := s.PutTopic(ctx, herald.Topic{Name: "orders"}.WithDefaults()); err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_700_000_000, 0)
	sub := herald.Subscription{ID: "sub_1", Topic: "orders", State: herald.StateActive, CreatedAt: now}
	if err := s.CreateSubscription(ctx, sub, herald.StartPosition{}); err != nil {
		t.Fatal(err)
	}
	epoch, err := s.AcquireLease(ctx, sub.ID, "node", now, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	errs, err := s.Settle(ctx, []herald.SettleItem{{SubscriptionID: sub.ID, Epoch: epoch, Settlement: herald.Settlement{
		Cursors:     []herald.Cursor{{Topic: "orders", Seq: 0}, {Topic: "other", Seq: 3}},
		AddRetries:  []herald.Retry{{Topic: "orders", Seq: 1, EventID: "a", DueAt: now}},
		DeadLetters: []herald.DeadLetter{{Topic: "orders", Seq: 2, EventID: "b", DeadAt: now}},
		Attempts:    []herald.Attempt{{Topic: "orders", Seq: 2, EventID: "b", Attempt: 1, Time: now, Outcome: herald.OutcomeFailure}},
	}}})
	if err != nil || errs[0] != nil {
		t.Fatalf("Settle: %v, %v", errs, err)
	}
	sid := count(t, s, `SELECT sid FROM subscriptions WHERE id = ?`, sub.ID)
	tables := []string{"cursors", "retries", "dead_letters", "attempts"}
	for _, table := range tables {
		if n := count(t, s, `SELECT count(*) FROM `+table+` WHERE sid = ?`, sid); n == 0 {
			t.Fatalf("setup: no rows in %s", table)
		}
	}
	if err := s.DeleteSubscription(ctx, sub.ID); err != nil {
		t.Fatal(err)
	}
	for _, table := range tables {
		if n := count(t, s, `SELECT count(*) FROM `+table+` WHERE sid = ?`, sid); n != 0 {
			t.Errorf("%d rows of the deleted subscription left in %s", n, table)
		}
	}
}

// A store made by a build that knew only the first migration keeps its
// topics and events and gains subscriptions when a newer build opens it.
func TestMigrateFromVersion1(t *testing.T) {
	path := filepath.Join(t.TempDir(), "h.db")
	ms, err := loadMigrations()
	if err != nil || len(ms) < 2 {
		t.Fatalf("loadMigrations = %d migrations, %v", len(ms), err)
	}
	old := openDB(dsn(path, time.Second, false))
	for _, q := range []string{ms[0].sql, `CREATE TABLE schema_version (version INTEGER NOT NULL)`,
		`INSERT INTO schema_version (version) VALUES (1)`,
		`INSERT INTO topics (name, retention, max_event_bytes, dedup_window, created_at, updated_at, head_seq)
			VALUES ('orders', 3600000000000, 1000, 0, 1, 1, 7)`} {
		if _, err := old.ExecContext(t.Context(), q); err != nil {
			t.Fatalf("build a version 1 store: %v", err)
		}
	}
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}

	s := openTest(t, path)
	if v := count(t, s, `SELECT version FROM schema_version`); v != int64(SchemaVersion()) {
		t.Fatalf("schema version after open = %d, want %d", v, SchemaVersion())
	}
	tp, err := s.GetTopic(t.Context(), "orders")
	if err != nil || tp.HeadSeq != 7 {
		t.Fatalf("topic after migration = %+v, %v; want head 7", tp, err)
	}
	sub := herald.Subscription{ID: "sub_1", Topic: "orders", State: herald.StateActive, CreatedAt: time.Unix(1_700_000_000, 0)}
	if err := s.CreateSubscription(t.Context(), sub, herald.StartPosition{}); err != nil {
		t.Fatalf("CreateSubscription after migration: %v", err)
	}
	cs, err := s.Cursors(t.Context(), "sub_1")
	if err != nil || len(cs) != 1 || cs[0] != (herald.Cursor{Topic: "orders", Seq: 7}) {
		t.Fatalf("cursors after migration = %v, %v; want orders at 7", cs, err)
	}
}

// A store at version 5 with webhook subscriptions keeps them through the
// migration to channels: each becomes channel "webhook" with its URL,
// static headers and both signing secrets in its config.
func TestMigrateSubscriptionsToChannels(t *testing.T) {
	path := filepath.Join(t.TempDir(), "h.db")
	ms, err := loadMigrations()
	if err != nil || len(ms) < 6 {
		t.Fatalf("loadMigrations = %d migrations, %v", len(ms), err)
	}
	old := openDB(dsn(path, time.Second, false))
	steps := []string{ms[0].sql, ms[1].sql, ms[2].sql, ms[3].sql, ms[4].sql,
		`CREATE TABLE schema_version (version INTEGER NOT NULL)`, `INSERT INTO schema_version (version) VALUES (5)`}
	prevExp := time.Date(2026, 12, 8, 9, 30, 0, 123456789, time.UTC)
	insert := `INSERT INTO subscriptions (id, topic, url, description, headers, retry_max_attempts,
		retry_initial, retry_max, timeout, max_in_flight, rate_limit, ordered, expires_after_idle, state,
		state_reason, secret, previous_secret, previous_expires_at, challenge, verify_deadline,
		next_challenge_at, challenge_tries, owner_key_id, created_at, updated_at, last_activity_at,
		last_success_at, failing_since)
		VALUES (?, 'orders', ?, '', ?, 5, 1000000000, 60000000000, 10000000000,
		10, 0, 0, 0, 'active', '', ?, ?, ?, '', 0, 0, 0, '', 1, 1, 0, 0, 0)`
	for _, q := range steps {
		if _, err := old.ExecContext(t.Context(), q); err != nil {
			t.Fatalf("build a version 5 store: %v", err)
		}
	}
	rows := []struct {
		id, url    string
		headers    map[string]string
		secret     string
		prev       string
		prevExpiry time.Time
	}{
		{"sub_1", "https://hooks.example.com/a?k=v", map[string]string{"X-Team": "billing", "Authorization": "Bearer t"},
			"whsec_cur", "whsec_old", prevExp},
		{"sub_2", "https://hooks.example.com/b", nil, "whsec_only", "", time.Time{}},
	}
	for _, r := range rows {
		var h []byte
		if r.headers != nil {
			h = encodeHeaders(r.headers)
		}
		var exp int64
		if !r.prevExpiry.IsZero() {
			exp = r.prevExpiry.UnixNano()
		}
		if _, err := old.ExecContext(t.Context(), insert, r.id, r.url, h, r.secret, r.prev, exp); err != nil {
			t.Fatalf("insert a version 5 subscription: %v", err)
		}
	}
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}

	s := openTest(t, path)
	for _, r := range rows {
		got, err := s.GetSubscription(t.Context(), r.id)
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
			t.Fatalf("%s config %s: %v", r.id, got.Config, err)
		}
		if got.Channel != herald.ChannelWebhook || c.URL != r.url || !maps.Equal(c.Headers, r.headers) ||
			c.Secret != r.secret || c.PreviousSecret != r.prev || !c.PreviousExpiresAt.Equal(r.prevExpiry) {
			t.Errorf("%s after migration: channel %q config %s; want the webhook's url, headers and secrets", r.id, got.Channel, got.Config)
		}
	}
	var cols int
	if err := s.writer.QueryRowContext(t.Context(), `SELECT count(*) FROM pragma_table_info('subscriptions')
		WHERE name IN ('url', 'headers', 'secret', 'previous_secret', 'previous_expires_at')`).Scan(&cols); err != nil || cols != 0 {
		t.Fatalf("old webhook columns left after migration: %d, %v", cols, err)
	}
}
