package engine_test

import (
	"context"
	"testing"

	"github.com/heraldhq/herald/store/postgres/pgtest"

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
	dsn, _ := pgtest.Schema(t, "herald_engine")
	return dsn
}
