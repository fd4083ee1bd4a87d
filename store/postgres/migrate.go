package postgres

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"slices"
	"strconv"
	"strings"

	"github.com/heraldhq/herald"
	"github.com/jackc/pgx/v5"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// migration is one embedded schema step, named NNNN_what.sql. A new table
// or column is a new file with the next number; applied files never change.
type migration struct {
	version int
	name    string
	sql     string
}

// loadMigrations returns the embedded migrations in version order.
func loadMigrations() ([]migration, error) {
	names, err := fs.Glob(migrationFiles, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	slices.Sort(names)
	out := make([]migration, 0, len(names))
	for i, name := range names {
		base := strings.TrimPrefix(name, "migrations/")
		num, _, _ := strings.Cut(base, "_")
		v, err := strconv.Atoi(num)
		if err != nil || v != i+1 {
			return nil, fmt.Errorf("migration %s: want version %d first in its name", base, i+1)
		}
		b, err := migrationFiles.ReadFile(name)
		if err != nil {
			return nil, err
		}
		out = append(out, migration{version: v, name: base, sql: string(b)})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no migrations embedded")
	}
	return out, nil
}

// SchemaVersion is the schema version this build migrates a store to.
func SchemaVersion() int {
	ms, err := loadMigrations()
	if err != nil {
		return 0
	}
	return ms[len(ms)-1].version
}

// migrationLockClass is the first key of the advisory lock that serialises
// migrations; the second is a hash of the schema, so installations in
// different schemas of one database do not wait for each other.
const migrationLockClass = 0x4865726c // "Herl"

// migrate applies the pending migrations in one transaction, so a crash
// leaves the schema at the old version or the new one. The transaction
// first takes an advisory lock: nodes starting at once queue on it, and
// each one after the first finds nothing left to do.
func (s *Store) migrate(ctx context.Context) error {
	ms, err := loadMigrations()
	if err != nil {
		return &herald.Error{Code: herald.CodeInternal, Message: "load migrations", Err: err}
	}
	latest := ms[len(ms)-1].version
	var from int
	var schema string
	err = s.inTx(ctx, func(tx pgx.Tx) error {
		// current_schema() is NULL when no schema of the search_path
		// exists; CREATE TABLE would then fail with a vaguer message.
		var cur *string
		if err := tx.QueryRow(ctx, `SELECT current_schema()`).Scan(&cur); err != nil {
			return err
		}
		if cur == nil {
			return herald.Errorf(herald.CodeInvalid, "no schema of the search_path exists; create it or fix search_path")
		}
		schema = *cur
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1, hashtext(current_schema()))`, int32(migrationLockClass)); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_version (
			version    integer PRIMARY KEY,
			name       text    NOT NULL,
			applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
			return err
		}
		if err := tx.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM schema_version`).Scan(&from); err != nil {
			return err
		}
		if from > latest {
			return herald.Errorf(herald.CodeConflict,
				"the store's schema version %d is newer than this build knows (%d); run a newer herald", from, latest)
		}
		for _, m := range ms[from:] {
			if _, err := tx.Exec(ctx, m.sql); err != nil {
				return fmt.Errorf("migration %s: %w", m.name, err)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO schema_version (version, name) VALUES ($1, $2)`, m.version, m.name); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return s.fail("migrate", err)
	}
	if from < latest {
		s.log.Info("postgres store migrated", "schema", schema, "from_version", from, "to_version", latest)
	}
	return nil
}
