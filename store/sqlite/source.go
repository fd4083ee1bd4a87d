package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/heraldhq/herald"
)

var _ herald.SourceStore = (*Store)(nil)

const sourceColumns = `id, kind, config, topic, mapping, description, shards, state, state_reason, managed, created_at, updated_at, version, tenant`

func sourceNotFound(id string) error {
	return &herald.Error{Code: herald.CodeNotFound, Message: "source " + id + " does not exist"}
}

func scanSource(row interface{ Scan(...any) error }) (herald.Source, error) {
	var src herald.Source
	var config, mapping []byte
	var state string
	var managed bool
	var created, updated int64
	err := row.Scan(&src.ID, &src.Kind, &config, &src.Topic, &mapping, &src.Description, &src.Shards,
		&state, &src.StateReason, &managed, &created, &updated, &src.Version, &src.Tenant)
	if err != nil {
		return herald.Source{}, err
	}
	src.Config, src.Mapping = config, mapping
	src.State, src.Managed = herald.SourceState(state), managed
	src.CreatedAt, src.UpdatedAt = fromNanos(created), fromNanos(updated)
	return src, nil
}

func orEmptyObject(b []byte) []byte {
	if len(b) == 0 {
		return []byte("{}")
	}
	return b
}

// CreateSource stores a new source at version 0; CodeConflict if the id
// exists.
func (s *Store) CreateSource(ctx context.Context, src herald.Source) error {
	if err := s.checkOpen(); err != nil {
		return err
	}
	err := s.withTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO sources (`+sourceColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?)`,
			src.ID, src.Kind, orEmptyObject(src.Config), src.Topic, orEmptyObject(src.Mapping), src.Description, src.Shards,
			string(src.State), src.StateReason, src.Managed, nanos(src.CreatedAt), nanos(src.UpdatedAt), src.Tenant)
		return err
	})
	if herald.IsCode(s.fail("create source", err), herald.CodeConflict) {
		return herald.Errorf(herald.CodeConflict, "source %s already exists", src.ID)
	}
	return s.fail("create source", err)
}

// GetSource returns the source, or CodeNotFound.
func (s *Store) GetSource(ctx context.Context, id string) (herald.Source, error) {
	if err := s.checkOpen(); err != nil {
		return herald.Source{}, err
	}
	src, err := scanSource(s.reader.QueryRowContext(ctx, `SELECT `+sourceColumns+` FROM sources WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return herald.Source{}, sourceNotFound(id)
	}
	return src, s.fail("get source", err)
}

// ListSources returns up to limit sources after the id, in id order (a
// limit below 1 means no limit).
func (s *Store) ListSources(ctx context.Context, after string, limit int) ([]herald.Source, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	if limit < 1 {
		limit = -1
	}
	rows, err := s.reader.QueryContext(ctx, `SELECT `+sourceColumns+` FROM sources WHERE id > ? ORDER BY id LIMIT ?`, after, limit)
	if err != nil {
		return nil, s.fail("list sources", err)
	}
	defer rows.Close()
	var out []herald.Source
	for rows.Next() {
		src, err := scanSource(rows)
		if err != nil {
			return nil, s.fail("list sources", err)
		}
		out = append(out, src)
	}
	return out, s.fail("list sources", rows.Err())
}

// UpdateSource replaces the source's settings and state if src.Version is
// the stored version.
func (s *Store) UpdateSource(ctx context.Context, src herald.Source) error {
	if err := s.checkOpen(); err != nil {
		return err
	}
	err := s.withTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE sources SET config = ?, topic = ?, mapping = ?, description = ?, shards = ?,
			state = ?, state_reason = ?, managed = ?, updated_at = ?, version = version + 1 WHERE id = ? AND version = ?`,
			orEmptyObject(src.Config), src.Topic, orEmptyObject(src.Mapping), src.Description, src.Shards,
			string(src.State), src.StateReason, src.Managed, nanos(src.UpdatedAt), src.ID, src.Version)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 1 {
			return nil
		}
		var v int64
		if err := tx.QueryRowContext(ctx, `SELECT version FROM sources WHERE id = ?`, src.ID).Scan(&v); errors.Is(err, sql.ErrNoRows) {
			return sourceNotFound(src.ID)
		} else if err != nil {
			return err
		}
		return herald.Errorf(herald.CodeConflict, "source %s changed since it was read (version %d, not %d); read it again", src.ID, v, src.Version)
	})
	return s.fail("update source", err)
}

// DeleteSource removes the source and its shards.
func (s *Store) DeleteSource(ctx context.Context, id string) error {
	if err := s.checkOpen(); err != nil {
		return err
	}
	err := s.withTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM sources WHERE id = ?`, id)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return sourceNotFound(id)
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM source_shards WHERE source_id = ?`, id)
		return err
	})
	return s.fail("delete source", err)
}

// AcquireSourceLease takes or extends node's lease on the shard.
func (s *Store) AcquireSourceLease(ctx context.Context, id string, shard int, node string, now time.Time, ttl time.Duration) (int64, error) {
	if err := s.checkOpen(); err != nil {
		return 0, err
	}
	if node == "" {
		return 0, herald.FieldErrorf("node", "the node name is empty")
	}
	at := clampNanos(now)
	until := clampNanos(now.Add(max(ttl, 0)))
	var epoch int64
	err := s.withTx(ctx, func(tx *sql.Tx) error {
		var exists int
		if err := tx.QueryRowContext(ctx, `SELECT 1 FROM sources WHERE id = ?`, id).Scan(&exists); errors.Is(err, sql.ErrNoRows) {
			return sourceNotFound(id)
		} else if err != nil {
			return err
		}
		var holder string
		var expires int64
		err := tx.QueryRowContext(ctx, `SELECT lease_node, lease_expires_at, lease_epoch FROM source_shards WHERE source_id = ? AND shard = ?`,
			id, shard).Scan(&holder, &expires, &epoch)
		if errors.Is(err, sql.ErrNoRows) {
			epoch = 1
			_, err = tx.ExecContext(ctx, `INSERT INTO source_shards (source_id, shard, lease_node, lease_expires_at, lease_epoch) VALUES (?, ?, ?, ?, ?)`,
				id, shard, node, until, epoch)
			return err
		}
		if err != nil {
			return err
		}
		live := holder != "" && expires > at
		switch {
		case live && holder != node:
			return herald.Errorf(herald.CodeConflict, "shard %d of source %s is run by node %s until %s",
				shard, id, holder, fromNanos(expires).Format(time.RFC3339Nano))
		case !live:
			epoch++
		}
		_, err = tx.ExecContext(ctx, `UPDATE source_shards SET lease_node = ?, lease_expires_at = ?, lease_epoch = ? WHERE source_id = ? AND shard = ?`,
			node, until, epoch, id, shard)
		return err
	})
	if err != nil {
		return 0, s.fail("acquire source lease", err)
	}
	return epoch, nil
}

// ReleaseSourceLease ends node's lease if it still holds it with epoch.
func (s *Store) ReleaseSourceLease(ctx context.Context, id string, shard int, node string, epoch int64) error {
	if err := s.checkOpen(); err != nil {
		return err
	}
	err := s.withTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE source_shards SET lease_node = '', lease_expires_at = 0
			WHERE source_id = ? AND shard = ? AND lease_node = ? AND lease_epoch = ?`, id, shard, node, epoch)
		return err
	})
	return s.fail("release source lease", err)
}

// ReportSource records the shard's status under its lease epoch.
func (s *Store) ReportSource(ctx context.Context, id string, shard int, epoch int64, st herald.SourceShardStatus) error {
	if err := s.checkOpen(); err != nil {
		return err
	}
	err := s.withTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE source_shards SET lag = ?, events_in = ?, duplicates = ?, errors = ?, last_error = ?, last_error_at = ?, reported_at = ?, state = ?
			WHERE source_id = ? AND shard = ? AND lease_epoch = ?`,
			st.Lag, st.EventsIn, st.Duplicates, st.Errors, st.LastError, nanos(st.LastErrorAt), nanos(st.ReportedAt), string(st.State), id, shard, epoch)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 1 {
			return nil
		}
		var exists int
		if err := tx.QueryRowContext(ctx, `SELECT 1 FROM sources WHERE id = ?`, id).Scan(&exists); errors.Is(err, sql.ErrNoRows) {
			return sourceNotFound(id)
		} else if err != nil {
			return err
		}
		return herald.Errorf(herald.CodeConflict, "shard %d of source %s is no longer leased under epoch %d", shard, id, epoch)
	})
	return s.fail("report source", err)
}

// SourceShards returns the source's shards in shard order.
func (s *Store) SourceShards(ctx context.Context, id string) ([]herald.SourceShard, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	rows, err := s.reader.QueryContext(ctx, `SELECT shard, lease_node, lease_expires_at, lease_epoch, lag, events_in, duplicates, errors, last_error, last_error_at, reported_at, state
		FROM source_shards WHERE source_id = ? ORDER BY shard`, id)
	if err != nil {
		return nil, s.fail("list source shards", err)
	}
	defer rows.Close()
	var out []herald.SourceShard
	for rows.Next() {
		sh := herald.SourceShard{SourceID: id}
		var expires, errAt, reported int64
		if err := rows.Scan(&sh.Shard, &sh.Node, &expires, &sh.Epoch, &sh.Lag, &sh.EventsIn, &sh.Duplicates, &sh.Errors, &sh.LastError, &errAt, &reported, &sh.State); err != nil {
			return nil, s.fail("list source shards", err)
		}
		sh.LeaseExpiresAt, sh.LastErrorAt, sh.ReportedAt = fromNanos(expires), fromNanos(errAt), fromNanos(reported)
		out = append(out, sh)
	}
	return out, s.fail("list source shards", rows.Err())
}
