package postgres

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/heraldhq/herald"
)

var _ herald.SourceStore = (*Store)(nil)

const sourceColumns = `id, kind, config, topic, mapping, description, shards, state, state_reason, managed, created_at, updated_at, version, tenant`

func sourceNotFound(id string) error {
	return &herald.Error{Code: herald.CodeNotFound, Message: "source " + id + " does not exist"}
}

func scanSource(row pgx.Row) (herald.Source, error) {
	var src herald.Source
	var config, mapping []byte
	var state string
	var shards int32
	var created, updated int64
	err := row.Scan(&src.ID, &src.Kind, &config, &src.Topic, &mapping, &src.Description, &shards,
		&state, &src.StateReason, &src.Managed, &created, &updated, &src.Version, &src.Tenant)
	if err != nil {
		return herald.Source{}, err
	}
	src.Config, src.Mapping, src.Shards = config, mapping, int(shards)
	src.State = herald.SourceState(state)
	src.CreatedAt, src.UpdatedAt = fromNanos(created), fromNanos(updated)
	return src, nil
}

func orEmptyObject(b []byte) []byte {
	if len(b) == 0 {
		return []byte("{}")
	}
	return b
}

func validSource(src *herald.Source) error {
	for _, t := range []string{src.ID, src.Kind, src.Topic, src.Description, src.StateReason, src.Tenant} {
		if !validText(t) {
			return herald.Errorf(herald.CodeInvalid, "text must be valid UTF-8 without NUL bytes")
		}
	}
	return checkTimes(namedTime{"created_at", src.CreatedAt}, namedTime{"updated_at", src.UpdatedAt})
}

// CreateSource stores a new source at version 0; CodeConflict if the id
// exists.
func (s *Store) CreateSource(ctx context.Context, src herald.Source) error {
	if err := s.checkOpen(); err != nil {
		return err
	}
	if err := validSource(&src); err != nil {
		return err
	}
	_, err := s.exec(ctx, `INSERT INTO sources (`+sourceColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 0, $13)`,
		src.ID, src.Kind, orEmptyObject(src.Config), src.Topic, orEmptyObject(src.Mapping), src.Description, int32(src.Shards),
		string(src.State), src.StateReason, src.Managed, nanos(src.CreatedAt), nanos(src.UpdatedAt), src.Tenant)
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
	if !validText(id) {
		return herald.Source{}, sourceNotFound(id)
	}
	src, err := scanSource(s.pool.QueryRow(ctx, `SELECT `+sourceColumns+` FROM sources WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
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
	if !validText(after) {
		return nil, herald.FieldErrorf("after", "the page cursor is not valid text")
	}
	var lim any
	if limit > 0 {
		lim = limit
	}
	rows, err := s.pool.Query(ctx, `SELECT `+sourceColumns+` FROM sources WHERE id > $1 ORDER BY id LIMIT $2`, after, lim)
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
	if !validText(src.ID) {
		return sourceNotFound(src.ID)
	}
	if err := validSource(&src); err != nil {
		return err
	}
	n, err := s.exec(ctx, `UPDATE sources SET config = $2, topic = $3, mapping = $4, description = $5, shards = $6,
		state = $7, state_reason = $8, managed = $9, updated_at = $10, version = version + 1 WHERE id = $1 AND version = $11`,
		src.ID, orEmptyObject(src.Config), src.Topic, orEmptyObject(src.Mapping), src.Description, int32(src.Shards),
		string(src.State), src.StateReason, src.Managed, nanos(src.UpdatedAt), src.Version)
	if err != nil {
		return s.fail("update source", err)
	}
	if n == 1 {
		return nil
	}
	var v int64
	err = s.pool.QueryRow(ctx, `SELECT version FROM sources WHERE id = $1`, src.ID).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return sourceNotFound(src.ID)
	}
	if err != nil {
		return s.fail("update source", err)
	}
	return herald.Errorf(herald.CodeConflict, "source %s changed since it was read (version %d, not %d); read it again", src.ID, v, src.Version)
}

// DeleteSource removes the source and (by cascade) its shards.
func (s *Store) DeleteSource(ctx context.Context, id string) error {
	if err := s.checkOpen(); err != nil {
		return err
	}
	if !validText(id) {
		return sourceNotFound(id)
	}
	n, err := s.exec(ctx, `DELETE FROM sources WHERE id = $1`, id)
	if err != nil {
		return s.fail("delete source", err)
	}
	if n == 0 {
		return sourceNotFound(id)
	}
	return nil
}

// acquireSourceLeaseSQL takes or extends the lease in one statement: the
// shard row is created on first use; an existing one is taken when node
// holds it already or it has expired (or was released), and its epoch
// stays only when node's own lease is still live.
const acquireSourceLeaseSQL = `INSERT INTO source_shards AS s (source_id, shard, lease_node, lease_expires_at, lease_epoch)
	SELECT $1, $2, $3, $5, 1 WHERE EXISTS (SELECT 1 FROM sources WHERE id = $1)
	ON CONFLICT (source_id, shard) DO UPDATE SET
		lease_epoch = CASE WHEN s.lease_node = $3 AND s.lease_expires_at > $4 THEN s.lease_epoch ELSE s.lease_epoch + 1 END,
		lease_node = $3, lease_expires_at = $5
	WHERE s.lease_node = $3 OR s.lease_node = '' OR s.lease_expires_at <= $4
	RETURNING lease_epoch`

// AcquireSourceLease takes or extends node's lease on the shard.
func (s *Store) AcquireSourceLease(ctx context.Context, id string, shard int, node string, now time.Time, ttl time.Duration) (int64, error) {
	if err := s.checkOpen(); err != nil {
		return 0, err
	}
	if node == "" || !validText(node) {
		return 0, herald.FieldErrorf("node", "the node name must be non-empty UTF-8 without NUL bytes")
	}
	if !validText(id) {
		return 0, sourceNotFound(id)
	}
	until := now.Add(max(ttl, 0))
	if until.After(maxTime) {
		until = maxTime
	}
	var epoch int64
	err := s.pool.QueryRow(ctx, acquireSourceLeaseSQL, id, int32(shard), node, now.UnixNano(), until.UnixNano()).Scan(&epoch)
	if err == nil {
		return epoch, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return 0, s.fail("acquire source lease", err)
	}
	var holder string
	var expires int64
	err = s.pool.QueryRow(ctx, `SELECT lease_node, lease_expires_at FROM source_shards WHERE source_id = $1 AND shard = $2`, id, int32(shard)).Scan(&holder, &expires)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, sourceNotFound(id)
	}
	if err != nil {
		return 0, s.fail("acquire source lease", err)
	}
	return 0, herald.Errorf(herald.CodeConflict, "shard %d of source %s is run by node %s until %s",
		shard, id, holder, fromNanos(expires).Format(time.RFC3339Nano))
}

// ReleaseSourceLease ends node's lease if it still holds it with epoch.
func (s *Store) ReleaseSourceLease(ctx context.Context, id string, shard int, node string, epoch int64) error {
	if err := s.checkOpen(); err != nil {
		return err
	}
	if !validText(id) || !validText(node) {
		return nil
	}
	_, err := s.exec(ctx, `UPDATE source_shards SET lease_node = '', lease_expires_at = 0
		WHERE source_id = $1 AND shard = $2 AND lease_node = $3 AND lease_epoch = $4`, id, int32(shard), node, epoch)
	return s.fail("release source lease", err)
}

// ReportSource records the shard's status under its lease epoch.
func (s *Store) ReportSource(ctx context.Context, id string, shard int, epoch int64, st herald.SourceShardStatus) error {
	if err := s.checkOpen(); err != nil {
		return err
	}
	if !validText(id) {
		return sourceNotFound(id)
	}
	if !validText(st.LastError) {
		st.LastError = "(an error whose text cannot be stored)"
	}
	n, err := s.exec(ctx, `UPDATE source_shards SET lag = $4, events_in = $5, errors = $6, last_error = $7, last_error_at = $8, reported_at = $9, state = $10,
		duplicates = $11
		WHERE source_id = $1 AND shard = $2 AND lease_epoch = $3`,
		id, int32(shard), epoch, st.Lag, st.EventsIn, st.Errors, st.LastError, nanos(st.LastErrorAt), nanos(st.ReportedAt), string(st.State), st.Duplicates)
	if err != nil {
		return s.fail("report source", err)
	}
	if n == 1 {
		return nil
	}
	var one int
	err = s.pool.QueryRow(ctx, `SELECT 1 FROM sources WHERE id = $1`, id).Scan(&one)
	if errors.Is(err, pgx.ErrNoRows) {
		return sourceNotFound(id)
	}
	if err != nil {
		return s.fail("report source", err)
	}
	return herald.Errorf(herald.CodeConflict, "shard %d of source %s is no longer leased under epoch %d", shard, id, epoch)
}

// SourceShards returns the source's shards in shard order.
func (s *Store) SourceShards(ctx context.Context, id string) ([]herald.SourceShard, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	if !validText(id) {
		return nil, nil
	}
	rows, err := s.pool.Query(ctx, `SELECT shard, lease_node, lease_expires_at, lease_epoch, lag, events_in, duplicates, errors, last_error, last_error_at, reported_at, state
		FROM source_shards WHERE source_id = $1 ORDER BY shard`, id)
	if err != nil {
		return nil, s.fail("list source shards", err)
	}
	defer rows.Close()
	var out []herald.SourceShard
	for rows.Next() {
		sh := herald.SourceShard{SourceID: id}
		var shard int32
		var expires, errAt, reported int64
		if err := rows.Scan(&shard, &sh.Node, &expires, &sh.Epoch, &sh.Lag, &sh.EventsIn, &sh.Duplicates, &sh.Errors, &sh.LastError, &errAt, &reported, &sh.State); err != nil {
			return nil, s.fail("list source shards", err)
		}
		sh.Shard = int(shard)
		sh.LeaseExpiresAt, sh.LastErrorAt, sh.ReportedAt = fromNanos(expires), fromNanos(errAt), fromNanos(reported)
		out = append(out, sh)
	}
	return out, s.fail("list source shards", rows.Err())
}
