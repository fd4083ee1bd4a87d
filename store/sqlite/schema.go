package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/heraldhq/herald"
)

// AddSchema stores the topic's next schema version.
func (s *Store) AddSchema(ctx context.Context, sc herald.Schema) (herald.Schema, error) {
	if err := s.checkOpen(); err != nil {
		return herald.Schema{}, err
	}
	if sc.CreatedAt.IsZero() {
		sc.CreatedAt = time.Now().UTC()
	}
	err := s.withTx(ctx, func(tx *sql.Tx) error {
		var one int
		if err := tx.QueryRowContext(ctx, `SELECT 1 FROM topics WHERE name = ?`, sc.Topic).Scan(&one); err != nil {
			if errors.Is(err, sql.ErrNoRows) {
				return topicNotFound(sc.Topic)
			}
			return err
		}
		if err := tx.QueryRowContext(ctx, `SELECT coalesce(max(version), 0) + 1 FROM schemas WHERE topic = ?`, sc.Topic).Scan(&sc.Version); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO schemas (topic, version, kind, format, message, created_at, definition)
			VALUES (?, ?, ?, ?, ?, ?, ?)`, sc.Topic, sc.Version, sc.Kind, sc.Format, sc.Message, nanos(sc.CreatedAt), sc.Definition); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `DELETE FROM schemas WHERE topic = ? AND version <= ?`, sc.Topic, sc.Version-herald.MaxSchemaVersions)
		return err
	})
	if err != nil {
		return herald.Schema{}, s.fail("add schema", err)
	}
	return sc, nil
}

const schemaColumns = `topic, version, kind, format, message, created_at, definition`

func scanSchema(sc interface{ Scan(...any) error }) (herald.Schema, error) {
	var out herald.Schema
	var created int64
	err := sc.Scan(&out.Topic, &out.Version, &out.Kind, &out.Format, &out.Message, &created, &out.Definition)
	out.CreatedAt = fromNanos(created)
	return out, err
}

// GetSchema returns a version of the topic's schema (0: the newest).
func (s *Store) GetSchema(ctx context.Context, topic string, version int) (herald.Schema, error) {
	if err := s.checkOpen(); err != nil {
		return herald.Schema{}, err
	}
	var row *sql.Row
	if version == 0 {
		row = s.reader.QueryRowContext(ctx, `SELECT `+schemaColumns+` FROM schemas WHERE topic = ? ORDER BY version DESC LIMIT 1`, topic)
	} else {
		row = s.reader.QueryRowContext(ctx, `SELECT `+schemaColumns+` FROM schemas WHERE topic = ? AND version = ?`, topic, version)
	}
	out, err := scanSchema(row)
	if errors.Is(err, sql.ErrNoRows) {
		return herald.Schema{}, schemaNotFound(topic, version)
	}
	return out, s.fail("get schema", err)
}

func schemaNotFound(topic string, version int) error {
	if version == 0 {
		return herald.Errorf(herald.CodeNotFound, "topic %q has no schema", topic)
	}
	return herald.Errorf(herald.CodeNotFound, "topic %q has no schema version %d", topic, version)
}

// ListSchemas returns the topic's schema versions, oldest first.
func (s *Store) ListSchemas(ctx context.Context, topic string) ([]herald.Schema, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	rows, err := s.reader.QueryContext(ctx, `SELECT `+schemaColumns+` FROM schemas WHERE topic = ? ORDER BY version`, topic)
	if err != nil {
		return nil, s.fail("list schemas", err)
	}
	defer rows.Close()
	var out []herald.Schema
	for rows.Next() {
		sc, err := scanSchema(rows)
		if err != nil {
			return nil, s.fail("list schemas", err)
		}
		out = append(out, sc)
	}
	return out, s.fail("list schemas", rows.Err())
}

// DeleteSchemas removes the topic's schema.
func (s *Store) DeleteSchemas(ctx context.Context, topic string) error {
	if err := s.checkOpen(); err != nil {
		return err
	}
	res, err := s.writer.ExecContext(ctx, `DELETE FROM schemas WHERE topic = ?`, topic)
	if err != nil {
		return s.fail("delete schemas", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return s.fail("delete schemas", err)
	} else if n == 0 {
		return schemaNotFound(topic, 0)
	}
	return nil
}

// CommitState writes an owner's entries and position in one transaction.
func (s *Store) CommitState(ctx context.Context, owner string, entries []herald.StateEntry, position int64) error {
	if err := s.checkOpen(); err != nil {
		return err
	}
	err := s.withTx(ctx, func(tx *sql.Tx) error { return commitStateTx(ctx, tx, owner, entries, position) })
	return s.fail("commit state", err)
}

// commitStateTx writes an owner's entries and position in tx.
func commitStateTx(ctx context.Context, tx *sql.Tx, owner string, entries []herald.StateEntry, position int64) error {
	now := nanos(time.Now())
	// Puts go in statements of many rows: one call into SQLite per
	// chunk, not per key.
	var puts []herald.StateEntry
	for _, e := range entries {
		if e.Value == nil {
			if _, err := tx.ExecContext(ctx, `DELETE FROM state WHERE owner = ? AND key = ?`, owner, e.Key); err != nil {
				return err
			}
			continue
		}
		puts = append(puts, e)
	}
	var q strings.Builder
	args := make([]any, 0, 5*commitStateChunk)
	for chunk := range slices.Chunk(puts, commitStateChunk) {
		q.Reset()
		q.WriteString(`INSERT INTO state (owner, key, seq, updated_at, value) VALUES (?, ?, ?, ?, ?)`)
		q.WriteString(strings.Repeat(", (?, ?, ?, ?, ?)", len(chunk)-1))
		q.WriteString(` ON CONFLICT (owner, key) DO UPDATE SET seq = excluded.seq, updated_at = excluded.updated_at, value = excluded.value`)
		args = args[:0]
		for _, e := range chunk {
			at := nanos(e.UpdatedAt)
			if at == 0 {
				at = now
			}
			args = append(args, owner, e.Key, e.Seq, at, e.Value)
		}
		if _, err := tx.ExecContext(ctx, q.String(), args...); err != nil {
			return fmt.Errorf("put the state of %d keys: %w", len(chunk), err)
		}
	}
	if position > 0 {
		_, err := tx.ExecContext(ctx, `INSERT INTO state_positions (owner, seq) VALUES (?, ?)
			ON CONFLICT (owner) DO UPDATE SET seq = excluded.seq`, owner, position)
		return err
	}
	return nil
}

// CommitStateBatch commits a batch's state, emitted events and cursors in
// one transaction; see herald.StateStore.
func (s *Store) CommitStateBatch(ctx context.Context, b herald.StateBatch) ([]herald.AppendResult, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	for i, e := range b.Emits {
		switch {
		case e == nil:
			return nil, herald.FieldErrorf("events", "event %d is nil", i)
		case e.Topic == "":
			return nil, herald.FieldErrorf("topic", "event %d has no topic", i)
		case e.Time.IsZero():
			return nil, herald.FieldErrorf("time", "event %d has no time", i)
		}
	}
	results := make([]herald.AppendResult, len(b.Emits))
	err := s.withTx(ctx, func(tx *sql.Tx) error {
		if b.SubscriptionID != "" {
			// The lease first: a node that lost it writes nothing.
			errs := make([]error, 1)
			item := herald.SettleItem{SubscriptionID: b.SubscriptionID, Epoch: b.Epoch,
				Settlement: herald.Settlement{Cursors: b.Cursors}}
			if err := s.settleTx(ctx, tx, []herald.SettleItem{item}, errs); err != nil {
				return err
			}
			if errs[0] != nil {
				return errs[0]
			}
		}
		if len(b.Emits) > 0 {
			err := s.appendTx(ctx, tx, b.Emits, results)
			if err != nil && !errors.Is(err, herald.ErrAppendConflict) {
				return err
			}
			for _, r := range results {
				if r.Err != nil {
					return r.Err
				}
			}
			if err != nil {
				return err
			}
		}
		return commitStateTx(ctx, tx, b.Owner, b.Entries, b.Position)
	})
	if err != nil {
		return nil, s.fail("commit state batch", err)
	}
	for i, r := range results {
		if !r.Duplicate {
			b.Emits[i].ID, b.Emits[i].Seq = r.ID, r.Seq
		}
	}
	return results, nil
}

// GetState returns one key's state, or CodeNotFound.
func (s *Store) GetState(ctx context.Context, owner, key string) (herald.StateEntry, error) {
	if err := s.checkOpen(); err != nil {
		return herald.StateEntry{}, err
	}
	e := herald.StateEntry{Key: key}
	var at int64
	err := s.rGetState.QueryRowContext(ctx, owner, key).Scan(&e.Seq, &at, &e.Value)
	if errors.Is(err, sql.ErrNoRows) {
		return herald.StateEntry{}, herald.Errorf(herald.CodeNotFound, "no state for key %q", key)
	}
	e.UpdatedAt = fromNanos(at)
	return e, s.fail("get state", err)
}

// commitStateChunk is how many keys one INSERT of CommitState writes.
const commitStateChunk = 200

// getStatesChunk bounds the keys of one IN list (SQLite's limit on
// variables is far above it).
const getStatesChunk = 500

// GetStates returns the state of those keys that have one.
func (s *Store) GetStates(ctx context.Context, owner string, keys []string) ([]herald.StateEntry, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	out := make([]herald.StateEntry, 0, len(keys))
	args := make([]any, 0, getStatesChunk+1)
	var q strings.Builder
	for chunk := range slices.Chunk(keys, getStatesChunk) {
		q.Reset()
		q.WriteString(`SELECT key, seq, updated_at, value FROM state WHERE owner = ? AND key IN (?`)
		q.WriteString(strings.Repeat(",?", len(chunk)-1))
		q.WriteString(")")
		args = append(args[:0], owner)
		for _, k := range chunk {
			args = append(args, k)
		}
		rows, err := s.reader.QueryContext(ctx, q.String(), args...)
		if err != nil {
			return nil, s.fail("get states", err)
		}
		if out, err = appendStateRows(out, rows); err != nil {
			return nil, s.fail("get states", err)
		}
	}
	return out, nil
}

// CountState returns how many keys owner holds.
func (s *Store) CountState(ctx context.Context, owner string) (int64, error) {
	if err := s.checkOpen(); err != nil {
		return 0, err
	}
	var n int64
	err := s.reader.QueryRowContext(ctx, `SELECT count(*) FROM state WHERE owner = ?`, owner).Scan(&n)
	return n, s.fail("count state", err)
}

// ListState returns an owner's entries in key order after the given key.
func (s *Store) ListState(ctx context.Context, owner, after string, limit int) ([]herald.StateEntry, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	rows, err := s.reader.QueryContext(ctx, `SELECT key, seq, updated_at, value FROM state WHERE owner = ? AND key > ? ORDER BY key LIMIT ?`,
		owner, after, limit)
	if err != nil {
		return nil, s.fail("list state", err)
	}
	out, err := appendStateRows(nil, rows)
	return out, s.fail("list state", err)
}

// appendStateRows appends rows of key, seq, updated_at, value to out and
// closes them.
func appendStateRows(out []herald.StateEntry, rows *sql.Rows) ([]herald.StateEntry, error) {
	defer rows.Close()
	for rows.Next() {
		var e herald.StateEntry
		var at int64
		if err := rows.Scan(&e.Key, &e.Seq, &at, &e.Value); err != nil {
			return nil, err
		}
		e.UpdatedAt = fromNanos(at)
		out = append(out, e)
	}
	return out, rows.Err()
}

// StatePosition returns the owner's position, 0 when none.
func (s *Store) StatePosition(ctx context.Context, owner string) (int64, error) {
	if err := s.checkOpen(); err != nil {
		return 0, err
	}
	var seq int64
	err := s.rStatePos.QueryRowContext(ctx, owner).Scan(&seq)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	return seq, s.fail("state position", err)
}

// DeleteState removes an owner's keys and position.
func (s *Store) DeleteState(ctx context.Context, owner string) error {
	if err := s.checkOpen(); err != nil {
		return err
	}
	err := s.withTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM state WHERE owner = ?`, owner); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `DELETE FROM state_positions WHERE owner = ?`, owner)
		return err
	})
	return s.fail("delete state", err)
}
