package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"testing"

	"github.com/jackc/pgx/v5"
)

// pgDSN returns a DSN for a fresh schema in the test PostgreSQL, dropped when
// the test ends, or skips when HERALD_TEST_POSTGRES is unset.
func pgDSN(t *testing.T) string {
	t.Helper()
	base := os.Getenv("HERALD_TEST_POSTGRES")
	if base == "" {
		t.Skip("HERALD_TEST_POSTGRES is not set: no PostgreSQL to test against")
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	schema := "herald_e2e_" + hex.EncodeToString(b[:])
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("connect %s: %v", "HERALD_TEST_POSTGRES", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c, err := pgx.Connect(context.Background(), base)
		if err == nil {
			_, _ = c.Exec(context.Background(), "DROP SCHEMA "+schema+" CASCADE")
			c.Close(context.Background())
		}
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

func TestServeOnPostgres(t *testing.T) {
	dsn := pgDSN(t)
	m, _ := testServer(t, t.TempDir(), func(c *Config) { c.DatabaseURL = Secret(dsn) })
	c := adminClient(m)
	ctx := t.Context()
	if _, _, err := c.PutTopic(ctx, "pg.orders", clientTopicDefaults); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		res, err := c.Publish(ctx, "pg.orders", []byte(`{"n":1}`), clientJSON("k"+string(rune('0'+i))))
		if err != nil || res.Seq != int64(i) {
			t.Fatalf("publish %d = %+v, %v", i, res, err)
		}
	}
	dup, err := c.Publish(ctx, "pg.orders", []byte(`{"n":1}`), clientJSON("k1"))
	if err != nil || !dup.Duplicate || dup.Seq != 1 {
		t.Fatalf("duplicate = %+v, %v", dup, err)
	}
	page, err := c.ListEvents(ctx, "pg.orders", 0, 10)
	if err != nil || len(page.Events) != 3 {
		t.Fatalf("list = %d, %v", len(page.Events), err)
	}
}
