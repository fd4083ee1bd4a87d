package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/heraldhq/herald"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// migration is one embedded schema step, named NNNN_what.sql.
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
	return out, nil
}

// goSteps are the parts of migrations that SQL cannot do, by version: each
// runs right after that version's SQL, in the same transaction.
var goSteps = map[int]func(context.Context, *sql.Tx) error{
	6: webhookConfigs,
}

// webhookConfigs writes the config of every subscription from the webhook
// columns migration 6 replaces, then drops them. The JSON is the webhook
// channel's stored config (webhook.Config) as it was when the migration
// was written; migrations never change afterwards, so neither does this.
func webhookConfigs(ctx context.Context, tx *sql.Tx) error {
	type config struct {
		URL               string            `json:"url"`
		Headers           map[string]string `json:"headers,omitempty"`
		Secret            string            `json:"secret,omitempty"`
		PreviousSecret    string            `json:"previous_secret,omitempty"`
		PreviousExpiresAt time.Time         `json:"previous_expires_at,omitzero"`
	}
	rows, err := tx.QueryContext(ctx, `SELECT sid, url, headers, secret, previous_secret, previous_expires_at FROM subscriptions`)
	if err != nil {
		return err
	}
	configs := map[int64][]byte{}
	for rows.Next() {
		var sid, prevExp int64
		var headers []byte
		var c config
		if err := rows.Scan(&sid, &c.URL, &headers, &c.Secret, &c.PreviousSecret, &prevExp); err != nil {
			rows.Close()
			return err
		}
		if c.Headers, err = decodeHeaders(headers); err != nil {
			rows.Close()
			return fmt.Errorf("subscription %d: %w", sid, err)
		}
		c.PreviousExpiresAt = fromNanos(prevExp)
		if configs[sid], err = json.Marshal(c); err != nil {
			rows.Close()
			return err
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for sid, c := range configs {
		if _, err := tx.ExecContext(ctx, `UPDATE subscriptions SET config = ? WHERE sid = ?`, c, sid); err != nil {
			return err
		}
	}
	for _, col := range []string{"url", "headers", "secret", "previous_secret", "previous_expires_at"} {
		if _, err := tx.ExecContext(ctx, `ALTER TABLE subscriptions DROP COLUMN `+col); err != nil {
			return err
		}
	}
	return nil
}

// SchemaVersion is the schema version this build migrates a store to.
func SchemaVersion() int {
	ms, err := loadMigrations()
	if err != nil || len(ms) == 0 {
		return 0
	}
	return ms[len(ms)-1].version
}

// migrate applies the pending migrations in one write transaction, so a
// crash leaves the schema at the old version or the new one, and two
// processes migrating at once serialise on the write lock.
func (s *Store) migrate(ctx context.Context) error {
	ms, err := loadMigrations()
	if err != nil {
		return &herald.Error{Code: herald.CodeInternal, Message: "load migrations", Err: err}
	}
	latest := ms[len(ms)-1].version
	var from int
	err = s.withTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)`); err != nil {
			return err
		}
		if err := tx.QueryRowContext(ctx, `SELECT coalesce(max(version), 0) FROM schema_version`).Scan(&from); err != nil {
			return err
		}
		if from > latest {
			return herald.Errorf(herald.CodeConflict,
				"the store's schema version %d is newer than this build knows (%d); run a newer herald", from, latest)
		}
		for _, m := range ms[from:] {
			if _, err := tx.ExecContext(ctx, m.sql); err != nil {
				return fmt.Errorf("migration %s: %w", m.name, err)
			}
			if step := goSteps[m.version]; step != nil {
				if err := step(ctx, tx); err != nil {
					return fmt.Errorf("migration %s: %w", m.name, err)
				}
			}
		}
		if from < latest {
			if _, err := tx.ExecContext(ctx, `DELETE FROM schema_version`); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO schema_version (version) VALUES (?)`, latest); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return s.fail("migrate", err)
	}
	if from < latest {
		s.log.Info("sqlite store migrated", "path", s.path, "from_version", from, "to_version", latest)
	}
	return nil
}
