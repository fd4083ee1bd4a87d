package pgtest_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/url"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/heraldhq/herald/store/postgres/pgtest"
)

// A DSN naming a database the server does not have gets it created, and
// the test gets its schema there.
func TestSchemaCreatesAMissingDatabase(t *testing.T) {
	t.Parallel()
	base := os.Getenv(pgtest.Var)
	if base == "" {
		t.Skipf("%s is not set: no PostgreSQL to test against", pgtest.Var)
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "herald_pgtest_" + hex.EncodeToString(b[:])
	missing := withDatabase(t, base, name)
	t.Cleanup(func() { dropDatabase(t, base, name) }) // after the schema's own cleanup

	dsn, schema := pgtest.SchemaOn(t, missing, "herald_pgtest")
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatalf("connect to the returned DSN: %v", err)
	}
	defer conn.Close(context.Background())
	var db, current string
	if err := conn.QueryRow(t.Context(), "SELECT current_database(), current_schema()").Scan(&db, &current); err != nil {
		t.Fatal(err)
	}
	if db != name || current != schema {
		t.Fatalf("connected to database %q schema %q, want %q and %q", db, current, name, schema)
	}
}

// A server that cannot be reached skips the test and names the variable
// to set.
func TestSchemaSkipsWhenTheServerIsUnreachable(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close() // nothing listens there now
	for _, dsn := range []string{
		"postgres://postgres@" + addr + "/test?connect_timeout=5",
		fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=test connect_timeout=5", ln.Addr().(*net.TCPAddr).Port),
	} {
		r := &recorder{TB: t}
		done := make(chan struct{})
		go func() { // Skip and Fatal end the goroutine that calls them
			defer close(done)
			pgtest.SchemaOn(r, dsn, "herald_pgtest")
		}()
		<-done
		if r.failed != "" {
			t.Errorf("%s: failed (%s), want a skip", dsn, r.failed)
		}
		if !strings.Contains(r.skipped, pgtest.Var) {
			t.Errorf("%s: skip message %q does not name %s", dsn, r.skipped, pgtest.Var)
		}
	}
}

// recorder is a testing.TB whose Skip and Fatal are recorded instead of
// ending the test.
type recorder struct {
	testing.TB
	skipped, failed string
}

func (r *recorder) Skipf(format string, args ...any) {
	r.skipped = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func (r *recorder) Fatalf(format string, args ...any) {
	r.failed = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// withDatabase returns base with its database replaced by name.
func withDatabase(t *testing.T, base, name string) string {
	t.Helper()
	if !strings.Contains(base, "://") {
		return base + " dbname=" + name
	}
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	return u.String()
}

func dropDatabase(t *testing.T, base, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, withDatabase(t, base, "postgres"))
	if err != nil {
		t.Errorf("connect to drop database %s: %v", name, err)
		return
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
		t.Errorf("drop database %s: %v", name, err)
	}
}
