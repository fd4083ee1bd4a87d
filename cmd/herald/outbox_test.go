package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"

	"github.com/heraldhq/herald/client"
	"github.com/heraldhq/herald/client/outbox"
	sourceoutbox "github.com/heraldhq/herald/source/outbox"
	"github.com/heraldhq/herald/store/postgres/pgtest"
)

// waitUntil polls cond until it holds or the deadline passes.
func waitUntil(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// allEvents reads every event of the topic.
func allEvents(t *testing.T, c *client.Client, topic string) []client.Event {
	t.Helper()
	var out []client.Event
	var after int64
	for {
		page, err := c.ListEvents(t.Context(), topic, after, 1000)
		if err != nil {
			return out
		}
		out = append(out, page.Events...)
		if len(page.Events) < 1000 {
			return out
		}
		after = page.Events[len(page.Events)-1].Seq
	}
}

// checkKeyOrder fails unless, within each key, events came in the order
// of their "n" (the outbox row order).
func checkKeyOrder(t *testing.T, evs []client.Event) {
	t.Helper()
	last := map[string]int{}
	for _, e := range evs {
		var p struct{ N int }
		if err := json.Unmarshal(e.Payload, &p); err != nil {
			t.Fatalf("payload %q: %v", e.Payload, err)
		}
		if prev, ok := last[e.Key]; ok && p.N <= prev {
			t.Fatalf("key %s: event n=%d after n=%d", e.Key, p.N, prev)
		}
		last[e.Key] = p.N
	}
}

// TestOutboxPostgresEndToEnd runs an outbox source through the server
// against a real PostgreSQL outbox table made from the shipped DDL: rows
// written by client/outbox in the application's transaction become events
// in row order per key, with their key, type and headers, woken by
// NOTIFY; published rows are deleted; a row delivered again is absorbed as
// a duplicate; a rolled-back row never appears; and an unreachable database
// shows up as the source's last error.
func TestOutboxPostgresEndToEnd(t *testing.T) {
	t.Parallel()
	dsn, _ := pgtest.Schema(t, "herald_outbox")
	ctx := t.Context()
	db, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(context.Background())
	if _, err := db.Exec(ctx, sourceoutbox.PostgresDDL); err != nil {
		t.Fatalf("the shipped DDL: %v", err)
	}

	m, _ := testServer(t, t.TempDir(), func(c *Config) { c.AutoCreateTopics = true })
	spec, _ := json.Marshal(map[string]any{"kind": "outbox", "topic": "payments.{topic}", "shards": 2,
		"config": map[string]any{"dsn": dsn, "poll_interval": "10s", "batch_size": 50}})
	status, src, _ := call(t, m, testAdminKey, "POST", "/v1/sources", spec)
	if status != 201 {
		t.Fatalf("create: %d %v", status, src)
	}
	id := src["id"].(string)
	if cfg := src["config"].(map[string]any); strings.Contains(fmt.Sprint(cfg["dsn"]), "@") && !strings.Contains(fmt.Sprint(cfg["dsn"]), "postgres://postgres@") {
		t.Fatalf("the DSN's password leaked: %v", cfg["dsn"])
	}

	// 300 rows over 10 keys, in 30 application transactions; one more is
	// rolled back.
	const rows = 300
	for b := range rows / 10 {
		tx, err := db.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for i := range 10 {
			n := b*10 + i
			if err := outbox.Write(ctx, tx, outbox.Event{Topic: "debited", Key: fmt.Sprintf("acct-%d", n%10), Type: "payment.debited",
				Headers: map[string]string{"tenant": "t1"}, Payload: fmt.Appendf(nil, `{"n":%d}`, n)}); err != nil {
				t.Fatal(err)
			}
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	tx, _ := db.Begin(ctx)
	_ = outbox.Write(ctx, tx, outbox.Event{Topic: "debited", Key: "acct-0", Payload: []byte(`{"n":-1}`)})
	_ = tx.Rollback(ctx)

	c := adminClient(m)
	// The poll interval is 10s: only NOTIFY wakes the shards this soon
	// for the rows written after they started.
	waitUntil(t, "every row as an event", 8*time.Second, func() bool { return len(allEvents(t, c, "payments.debited")) >= rows })
	evs := allEvents(t, c, "payments.debited")
	if len(evs) != rows {
		t.Fatalf("%d events; want %d", len(evs), rows)
	}
	checkKeyOrder(t, evs)
	if e := evs[0]; e.Type != "payment.debited" || e.Headers["tenant"] != "t1" || !strings.HasPrefix(e.Key, "acct-") || e.ContentType != "application/json" {
		t.Fatalf("event: %+v", e)
	}
	waitUntil(t, "the rows deleted", 5*time.Second, func() bool {
		var n int
		_ = db.QueryRow(ctx, `SELECT count(*) FROM herald_outbox`).Scan(&n)
		return n == 0
	})

	// Status: the shards report, lag 0, nothing failed. events_in counts
	// duplicates too (documented): a batch read again after a lease ran
	// out under load is counted twice, so it is at least the rows.
	waitUntil(t, "the status", 20*time.Second, func() bool {
		_, s, _ := call(t, m, testAdminKey, "GET", "/v1/sources/"+id, nil)
		in, _ := s["events_in"].(float64)
		shards, _ := s["shard_status"].([]any)
		return s["lag"] == float64(0) && in >= rows && len(shards) == 2
	})

	// An unreachable database is the source's last error, retried.
	bad, _ := json.Marshal(map[string]any{"kind": "outbox", "topic": "x",
		"config": map[string]any{"dsn": "postgres://herald:pw@127.0.0.1:1/none?connect_timeout=1"}})
	_, bsrc, _ := call(t, m, testAdminKey, "POST", "/v1/sources", bad)
	waitUntil(t, "the last error", 10*time.Second, func() bool {
		_, s, _ := call(t, m, testAdminKey, "GET", "/v1/sources/"+bsrc["id"].(string), nil)
		le, _ := s["last_error"].(string)
		return strings.Contains(le, "connect") && !strings.Contains(le, "pw")
	})
}

// TestOutboxRedeliveryIsDuplicate deletes nothing ("mark") and then
// clears the mark: the rows are read again and absorbed as duplicates, so
// every row is exactly one event.
func TestOutboxRedeliveryIsDuplicate(t *testing.T) {
	t.Parallel()
	dsn, _ := pgtest.Schema(t, "herald_outbox")
	ctx := t.Context()
	db, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(context.Background())
	if _, err := db.Exec(ctx, sourceoutbox.PostgresDDL); err != nil {
		t.Fatal(err)
	}
	m, _ := testServer(t, t.TempDir(), func(c *Config) { c.AutoCreateTopics = true })
	spec, _ := json.Marshal(map[string]any{"kind": "outbox", "topic": "{topic}",
		"config": map[string]any{"dsn": dsn, "on_publish": "mark", "poll_interval": "50ms"}})
	status, src, _ := call(t, m, testAdminKey, "POST", "/v1/sources", spec)
	if status != 201 {
		t.Fatalf("create: %d %v", status, src)
	}
	for i := range 20 {
		if _, err := db.Exec(ctx, `INSERT INTO herald_outbox (topic, key, payload) VALUES ('marked', $1, $2)`, fmt.Sprint(i%3), fmt.Appendf(nil, `{"n":%d}`, i)); err != nil {
			t.Fatal(err)
		}
	}
	unmarked := func() int {
		var n int
		_ = db.QueryRow(ctx, `SELECT count(*) FROM herald_outbox WHERE published_at IS NULL`).Scan(&n)
		return n
	}
	waitUntil(t, "the rows marked", 10*time.Second, func() bool { return unmarked() == 0 })
	if _, err := db.Exec(ctx, `UPDATE herald_outbox SET published_at = NULL`); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the rows marked again", 10*time.Second, func() bool { return unmarked() == 0 })
	c := adminClient(m)
	if evs := allEvents(t, c, "marked"); len(evs) != 20 {
		t.Fatalf("%d events; want 20 (the redelivered rows are duplicates)", len(evs))
	}
	metrics := scrape(t, m)
	if !strings.Contains(metrics, `herald_source_duplicates_total{kind="outbox",source="`+src["id"].(string)+`"} 20`) {
		t.Fatalf("duplicates not counted:\n%s", grepLines(metrics, "herald_source_"))
	}
}

// TestOutboxMariaDBEndToEnd runs an outbox source against a MariaDB
// (or MySQL) outbox table from the shipped DDL.
func TestOutboxMariaDBEndToEnd(t *testing.T) {
	t.Parallel()
	base := os.Getenv("HERALD_TEST_MYSQL")
	if base == "" {
		t.Skip("HERALD_TEST_MYSQL is not set; set it to a MySQL DSN such as root@tcp(127.0.0.1:3306)/ to run this test")
	}
	ctx := t.Context()
	cfg, err := mysql.ParseDSN(base)
	if err != nil {
		t.Fatal(err)
	}
	admin, err := sql.Open("mysql", cfg.FormatDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	dbName := fmt.Sprintf("herald_outbox_%d", time.Now().UnixNano())
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+dbName); err != nil {
		t.Skipf("HERALD_TEST_MYSQL: cannot create a database: %v", err)
	}
	t.Cleanup(func() { _, _ = admin.Exec("DROP DATABASE " + dbName) })
	cfg.DBName = dbName
	dsn := cfg.FormatDSN()
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, sourceoutbox.MySQLDDL); err != nil {
		t.Fatalf("the shipped DDL: %v", err)
	}
	m, _ := testServer(t, t.TempDir(), func(c *Config) { c.AutoCreateTopics = true })
	spec, _ := json.Marshal(map[string]any{"kind": "outbox", "topic": "maria.{topic}", "shards": 2,
		"config": map[string]any{"driver": "mysql", "dsn": dsn, "poll_interval": "50ms"}})
	status, src, _ := call(t, m, testAdminKey, "POST", "/v1/sources", spec)
	if status != 201 {
		t.Fatalf("create: %d %v", status, src)
	}
	const rows = 100
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	for n := range rows {
		if err := outbox.Write(ctx, tx, outbox.Event{Topic: "credited", Key: fmt.Sprintf("c%d", n%7), Type: "credit",
			Payload: fmt.Appendf(nil, `{"n":%d}`, n)}, outbox.MySQL()); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	c := adminClient(m)
	waitUntil(t, "every row as an event", 15*time.Second, func() bool { return len(allEvents(t, c, "maria.credited")) >= rows })
	evs := allEvents(t, c, "maria.credited")
	if len(evs) != rows {
		t.Fatalf("%d events; want %d", len(evs), rows)
	}
	checkKeyOrder(t, evs)
	waitUntil(t, "the rows deleted", 5*time.Second, func() bool {
		var n int
		_ = db.QueryRowContext(ctx, `SELECT count(*) FROM herald_outbox`).Scan(&n)
		return n == 0
	})
}
