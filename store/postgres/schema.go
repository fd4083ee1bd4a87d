package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/heraldhq/herald"
)

// AddSchema stores the topic's next schema version. The topic's row is
// locked, so two writers get consecutive versions.
func (s *Store) AddSchema(ctx context.Context, sc herald.Schema) (herald.Schema, error) {
	if err := s.checkOpen(); err != nil {
		return herald.Schema{}, err
	}
	if !validText(sc.Topic) {
		return herald.Schema{}, topicNotFound(sc.Topic)
	}
	if sc.CreatedAt.IsZero() {
		sc.CreatedAt = time.Now().UTC()
	}
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var one int
		if err := tx.QueryRow(ctx, `SELECT 1 FROM topics WHERE name = $1 FOR UPDATE`, sc.Topic).Scan(&one); err != nil {
			if errors.Is(err, pgx.ErrNoRows) {
				return topicNotFound(sc.Topic)
			}
			return err
		}
		if err := tx.QueryRow(ctx, `SELECT coalesce(max(version), 0) + 1 FROM schemas WHERE topic = $1`, sc.Topic).Scan(&sc.Version); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO schemas (topic, version, kind, format, message, created_at, definition)
			VALUES ($1, $2, $3, $4, $5, $6, $7)`, sc.Topic, sc.Version, sc.Kind, sc.Format, sc.Message, nanos(sc.CreatedAt), sc.Definition); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `DELETE FROM schemas WHERE topic = $1 AND version <= $2`, sc.Topic, sc.Version-herald.MaxSchemaVersions)
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

func schemaNotFound(topic string, version int) error {
	if version == 0 {
		return herald.Errorf(herald.CodeNotFound, "topic %q has no schema", topic)
	}
	return herald.Errorf(herald.CodeNotFound, "topic %q has no schema version %d", topic, version)
}

// GetSchema returns a version of the topic's schema (0: the newest).
func (s *Store) GetSchema(ctx context.Context, topic string, version int) (herald.Schema, error) {
	if err := s.checkOpen(); err != nil {
		return herald.Schema{}, err
	}
	if !validText(topic) {
		return herald.Schema{}, schemaNotFound(topic, version)
	}
	var row pgx.Row
	if version == 0 {
		row = s.pool.QueryRow(ctx, `SELECT `+schemaColumns+` FROM schemas WHERE topic = $1 ORDER BY version DESC LIMIT 1`, topic)
	} else {
		row = s.pool.QueryRow(ctx, `SELECT `+schemaColumns+` FROM schemas WHERE topic = $1 AND version = $2`, topic, version)
	}
	out, err := scanSchema(row)
	if errors.Is(err, pgx.ErrNoRows) {
		return herald.Schema{}, schemaNotFound(topic, version)
	}
	return out, s.fail("get schema", err)
}

// ListSchemas returns the topic's schema versions, oldest first.
func (s *Store) ListSchemas(ctx context.Context, topic string) ([]herald.Schema, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	if !validText(topic) {
		return nil, nil
	}
	rows, err := s.pool.Query(ctx, `SELECT `+schemaColumns+` FROM schemas WHERE topic = $1 ORDER BY version`, topic)
	if err != nil {
		return nil, s.fail("list schemas", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (herald.Schema, error) { return scanSchema(r) })
	return out, s.fail("list schemas", err)
}

// DeleteSchemas removes the topic's schema.
func (s *Store) DeleteSchemas(ctx context.Context, topic string) error {
	if err := s.checkOpen(); err != nil {
		return err
	}
	if !validText(topic) {
		return schemaNotFound(topic, 0)
	}
	tag, err := s.pool.Exec(ctx, `DELETE FROM schemas WHERE topic = $1`, topic)
	if err != nil {
		return s.fail("delete schemas", err)
	}
	if tag.RowsAffected() == 0 {
		return schemaNotFound(topic, 0)
	}
	return nil
}

// CommitState writes an owner's entries and position in one transaction.
func (s *Store) CommitState(ctx context.Context, owner string, entries []herald.StateEntry, position int64) error {
	if err := s.checkOpen(); err != nil {
		return err
	}
	b := &pgx.Batch{}
	if err := queueState(b, owner, entries, position); err != nil {
		return err
	}
	if b.Len() == 0 {
		return nil
	}
	err := s.inTx(ctx, func(tx pgx.Tx) error { return tx.SendBatch(ctx, b).Close() })
	return s.fail("commit state", err)
}

// queueState queues the writes of an owner's entries and position.
func queueState(b *pgx.Batch, owner string, entries []herald.StateEntry, position int64) error {
	if !validText(owner) {
		return herald.FieldErrorf("owner", "the state owner is not valid text")
	}
	now := nanos(time.Now())
	for _, e := range entries {
		if !validText(e.Key) {
			return herald.FieldErrorf("key", "the key is not valid text")
		}
		if e.Value == nil {
			b.Queue(`DELETE FROM state WHERE owner = $1 AND key = $2`, owner, e.Key)
			continue
		}
		at := nanos(e.UpdatedAt)
		if at == 0 {
			at = now
		}
		b.Queue(`INSERT INTO state (owner, key, seq, updated_at, value) VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (owner, key) DO UPDATE SET seq = excluded.seq, updated_at = excluded.updated_at, value = excluded.value`,
			owner, e.Key, e.Seq, at, e.Value)
	}
	if position > 0 {
		b.Queue(`INSERT INTO state_positions (owner, seq) VALUES ($1, $2) ON CONFLICT (owner) DO UPDATE SET seq = excluded.seq`, owner, position)
	}
	return nil
}

// CommitStateBatch commits a batch's state, emitted events and cursors in
// one transaction of two round trips, as Append's: the first begins, locks
// the subscription's row (as Settle does: its lease cannot move meanwhile)
// and reads its epoch and fences, then locks the emits' topics and reads
// what dedup needs; the second writes the cursors, the events, the state,
// and commits. See herald.StateStore.
func (s *Store) CommitStateBatch(ctx context.Context, sb herald.StateBatch) ([]herald.AppendResult, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	var item *herald.SettleItem
	if sb.SubscriptionID != "" {
		if !validText(sb.SubscriptionID) {
			return nil, subNotFound(sb.SubscriptionID)
		}
		item = &herald.SettleItem{SubscriptionID: sb.SubscriptionID, Epoch: sb.Epoch, Settlement: herald.Settlement{Cursors: sb.Cursors}}
		if err := checkSettleItem(item); err != nil {
			return nil, err
		}
	}
	p := planAppend(sb.Emits)
	for _, r := range p.results {
		if r.Err != nil {
			return nil, r.Err
		}
	}
	state := &pgx.Batch{}
	if err := queueState(state, sb.Owner, sb.Entries, sb.Position); err != nil {
		return nil, err
	}

	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, s.fail("commit state batch: acquire a connection", err)
	}
	defer conn.Release()
	committed := false
	defer func() {
		if !committed {
			rollback(conn)
		}
	}()

	// Round trip 1: begin, lock the subscription, then the topics.
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	epoch, found := int64(0), false
	var fenced map[string]bool
	if item != nil {
		b.Queue(lockSubsSQL, []string{item.SubscriptionID}).Query(func(rows pgx.Rows) error {
			var id string
			_, err := pgx.ForEachRow(rows, []any{&id, &epoch}, func() error {
				found = true
				return nil
			})
			return err
		})
		b.Queue(settleFencesSQL, []string{item.SubscriptionID}).Query(func(rows pgx.Rows) error {
			var id, topic string
			_, err := pgx.ForEachRow(rows, []any{&id, &topic}, func() error {
				if fenced == nil {
					fenced = make(map[string]bool)
				}
				fenced[topic] = true
				return nil
			})
			return err
		})
	}
	if len(p.names) > 0 {
		p.queueLookups(b)
	}
	if err := conn.SendBatch(ctx, b).Close(); err != nil {
		return nil, s.fail("commit state batch: lock", err)
	}
	switch {
	case item == nil:
	case !found:
		return nil, subNotFound(item.SubscriptionID)
	case epoch != item.Epoch:
		return nil, &herald.Error{Code: herald.CodeConflict, Field: "epoch", Message: fmt.Sprintf(
			"the dispatch lease on subscription %s has epoch %d, not %d: another node holds it now", item.SubscriptionID, epoch, item.Epoch)}
	}
	if len(p.names) > 0 {
		p.decide() // a conflict sets the Err of the event at fault
		for _, r := range p.results {
			if r.Err != nil {
				return nil, r.Err
			}
		}
	}

	// Round trip 2: write and commit (see Append on why the caller's
	// cancellation is ignored from here on).
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), writeTimeout)
	defer cancel()
	w := &pgx.Batch{}
	if item != nil && len(item.Cursors) > 0 {
		if len(fenced) > 0 {
			item = &herald.SettleItem{SubscriptionID: item.SubscriptionID, Epoch: item.Epoch,
				Settlement: item.Settlement.WithoutTopics(fenced)}
		}
		var r settleRows
		r.addItem(item)
		r.queue(w)
	}
	p.queueWrites(w, false)
	for _, qq := range state.QueuedQueries {
		w.Queue(qq.SQL, qq.Arguments...)
	}
	queueCommit(w, &committed)
	if p.rows.len() > 0 {
		s.queueNotify(w, p.topics)
	}
	if err := conn.SendBatch(wctx, w).Close(); err != nil {
		if !committed {
			err = s.fail("commit state batch: commit", err)
			if _, answered := errors.AsType[*pgconn.PgError](err); !answered {
				if e, ok := errors.AsType[*herald.Error](err); ok {
					e.Message = "the store did not confirm the commit; the state and events may or may not have been stored"
				}
			}
			return nil, err
		}
		s.notifyFailed(err)
	}
	p.stamp()
	return p.results, nil
}

// GetState returns one key's state, or CodeNotFound.
func (s *Store) GetState(ctx context.Context, owner, key string) (herald.StateEntry, error) {
	if err := s.checkOpen(); err != nil {
		return herald.StateEntry{}, err
	}
	notFound := herald.Errorf(herald.CodeNotFound, "no state for key %q", key)
	if !validText(owner) || !validText(key) {
		return herald.StateEntry{}, notFound
	}
	e := herald.StateEntry{Key: key}
	var at int64
	err := s.pool.QueryRow(ctx, `SELECT seq, updated_at, value FROM state WHERE owner = $1 AND key = $2`, owner, key).
		Scan(&e.Seq, &at, &e.Value)
	if errors.Is(err, pgx.ErrNoRows) {
		return herald.StateEntry{}, notFound
	}
	e.UpdatedAt = fromNanos(at)
	return e, s.fail("get state", err)
}

// GetStates returns the state of those keys that have one.
func (s *Store) GetStates(ctx context.Context, owner string, keys []string) ([]herald.StateEntry, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	if !validText(owner) {
		return nil, nil
	}
	valid := make([]string, 0, len(keys))
	for _, k := range keys {
		if validText(k) { // a key PostgreSQL cannot hold has no state
			valid = append(valid, k)
		}
	}
	rows, err := s.pool.Query(ctx, `SELECT key, seq, updated_at, value FROM state WHERE owner = $1 AND key = ANY($2)`, owner, valid)
	if err != nil {
		return nil, s.fail("get states", err)
	}
	out, err := pgx.CollectRows(rows, scanStateEntry)
	return out, s.fail("get states", err)
}

// scanStateEntry reads a row of key, seq, updated_at, value.
func scanStateEntry(r pgx.CollectableRow) (herald.StateEntry, error) {
	var e herald.StateEntry
	var at int64
	err := r.Scan(&e.Key, &e.Seq, &at, &e.Value)
	e.UpdatedAt = fromNanos(at)
	return e, err
}

// CountState returns how many keys owner holds.
func (s *Store) CountState(ctx context.Context, owner string) (int64, error) {
	if err := s.checkOpen(); err != nil {
		return 0, err
	}
	if !validText(owner) {
		return 0, nil
	}
	var n int64
	err := s.pool.QueryRow(ctx, `SELECT count(*) FROM state WHERE owner = $1`, owner).Scan(&n)
	return n, s.fail("count state", err)
}

// ListState returns an owner's entries in key order after the given key.
func (s *Store) ListState(ctx context.Context, owner, after string, limit int) ([]herald.StateEntry, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	if !validText(owner) || !validText(after) {
		return nil, nil
	}
	rows, err := s.pool.Query(ctx, `SELECT key, seq, updated_at, value FROM state WHERE owner = $1 AND key > $2 ORDER BY key LIMIT $3`,
		owner, after, limit)
	if err != nil {
		return nil, s.fail("list state", err)
	}
	out, err := pgx.CollectRows(rows, scanStateEntry)
	return out, s.fail("list state", err)
}

// StatePosition returns the owner's position, 0 when none.
func (s *Store) StatePosition(ctx context.Context, owner string) (int64, error) {
	if err := s.checkOpen(); err != nil {
		return 0, err
	}
	if !validText(owner) {
		return 0, nil
	}
	var seq int64
	err := s.pool.QueryRow(ctx, `SELECT seq FROM state_positions WHERE owner = $1`, owner).Scan(&seq)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	return seq, s.fail("state position", err)
}

// DeleteState removes an owner's keys and position.
func (s *Store) DeleteState(ctx context.Context, owner string) error {
	if err := s.checkOpen(); err != nil {
		return err
	}
	if !validText(owner) {
		return nil
	}
	b := &pgx.Batch{}
	b.Queue(`DELETE FROM state WHERE owner = $1`, owner)
	b.Queue(`DELETE FROM state_positions WHERE owner = $1`, owner)
	err := s.inTx(ctx, func(tx pgx.Tx) error { return tx.SendBatch(ctx, b).Close() })
	return s.fail("delete state", err)
}
