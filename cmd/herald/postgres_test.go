package main

import (
	"testing"

	"github.com/heraldhq/herald/store/postgres/pgtest"
)

// pgDSN returns a DSN for a fresh schema in the test PostgreSQL, dropped when
// the test ends, or skips when HERALD_TEST_POSTGRES is unset or unreachable.
func pgDSN(t *testing.T) string {
	t.Helper()
	dsn, _ := pgtest.Schema(t, "herald_e2e")
	return dsn
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
