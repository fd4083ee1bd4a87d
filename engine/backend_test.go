package engine_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/heraldhq/herald/engine"
	"github.com/heraldhq/herald/store/sqlite"
)

func openSQLite(ctx context.Context, path string) (engine.DispatchStore, error) {
	return sqlite.Open(ctx, path, sqlite.Options{})
}

// pgSchemaDSN makes a fresh schema in HERALD_TEST_POSTGRES for the test and
// returns a DSN that uses it; the schema is dropped at the end.
func pgSchemaDSN(t *testing.T) string {
	t.Helper()
	base := os.Getenv("HERALD_TEST_POSTGRES")
	var b [6]byte
	_, _ = rand.Read(b[:])
	schema := "herald_engine_" + hex.EncodeToString(b[:])
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("connect HERALD_TEST_POSTGRES: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if c, err := pgx.Connect(context.Background(), base); err == nil {
			_, _ = c.Exec(context.Background(), "DROP SCHEMA "+schema+" CASCADE")
			c.Close(context.Background())
		}
	})
	u, _ := url.Parse(base)
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}
