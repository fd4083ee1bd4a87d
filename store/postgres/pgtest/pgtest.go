// Package pgtest gives a test its own schema on the PostgreSQL server that
// HERALD_TEST_POSTGRES names, so tests of every package share one way to
// reach PostgreSQL: a missing database is created, and a server that is
// not there skips the test, naming the variable, as the README promises.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Var is the environment variable that holds the test server's DSN, such
// as postgres://postgres@127.0.0.1:5432/test (.ci/run's default).
const Var = "HERALD_TEST_POSTGRES"

// maintenanceDB is the database every PostgreSQL server has, from which a
// missing one is created.
const maintenanceDB = "postgres"

// Postgres error codes.
const (
	codeNoDatabase = "3D000" // invalid_catalog_name: the database does not exist
	codeDuplicate  = "42P04" // duplicate_database
)

// Schema returns a DSN for a fresh schema on the server of
// HERALD_TEST_POSTGRES; see SchemaOn. It skips the test when the variable
// is unset.
func Schema(t testing.TB, prefix string) (dsn, schema string) {
	t.Helper()
	base := os.Getenv(Var)
	if base == "" {
		t.Skipf("%s is not set; set it to a PostgreSQL URL such as postgres://postgres@127.0.0.1:5432/test to run this test", Var)
	}
	return SchemaOn(t, base, prefix)
}

// SchemaOn creates the schema prefix_<random> in base's database, creating
// the database first if the server has no such database, and drops the
// schema when the test ends. It returns a DSN, in base's form (URL or
// key=value), whose search_path is the schema and whose application_name
// is the schema's name, so a test can find its own sessions in
// pg_stat_activity. It skips the test, naming Var, when the server cannot
// be reached, and fails it when the server refuses (a wrong password, no
// right to create the database).
func SchemaOn(t testing.TB, base, prefix string) (dsn, schema string) {
	t.Helper()
	cfg, err := pgx.ParseConfig(base)
	if err != nil {
		t.Fatalf("%s is not a PostgreSQL DSN: %v", Var, err)
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	schema = prefix + "_" + hex.EncodeToString(b[:])
	if err := exec(cfg, "CREATE SCHEMA "+schema); err != nil {
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) {
			t.Skipf("%s: the server at %s:%d cannot be reached, so this test skips: %v", Var, cfg.Host, cfg.Port, err)
		}
		t.Fatalf("%s: create schema %s: %v", Var, schema, err)
	}
	t.Cleanup(func() {
		if err := exec(cfg, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	if !strings.Contains(base, "://") { // key=value form
		return base + " search_path=" + schema + " application_name=" + schema, schema
	}
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("%s: %v", Var, err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	q.Set("application_name", schema)
	u.RawQuery = q.Encode()
	return u.String(), schema
}

// exec runs one statement in cfg's database, creating the database if it
// is missing. It does not use the test's context: cleanups run after that
// is cancelled.
func exec(cfg *pgx.ConnConfig, sql string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok && pgErr.Code == codeNoDatabase {
		if err := createDatabase(ctx, cfg); err != nil {
			return err
		}
		conn, err = pgx.ConnectConfig(ctx, cfg)
	}
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, sql)
	return err
}

// createLock is the advisory lock, in the maintenance database, under
// which a missing database is created.
const createLock = 0x6865726c64 // "herld"

// createDatabase creates cfg's database from the server's maintenance
// database. Test binaries of several packages run at once and may all find
// it missing: they take turns under an advisory lock (two CREATE DATABASE
// of one name at once can fail on the catalog's unique index rather than
// as a duplicate), and the first creates it.
func createDatabase(ctx context.Context, cfg *pgx.ConnConfig) error {
	maint := cfg.Copy()
	maint.Database = maintenanceDB
	conn, err := pgx.ConnectConfig(ctx, maint)
	if err != nil {
		return fmt.Errorf("connect to the %q database to create %q: %w", maintenanceDB, cfg.Database, err)
	}
	defer conn.Close(ctx) // releases the lock
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", createLock); err != nil {
		return fmt.Errorf("lock to create database %q: %w", cfg.Database, err)
	}
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{cfg.Database}.Sanitize())
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok && pgErr.Code == codeDuplicate {
		return nil
	}
	if err != nil {
		return fmt.Errorf("create database %q: %w", cfg.Database, err)
	}
	return nil
}
