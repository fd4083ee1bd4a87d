package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/heraldhq/herald"
)

// topicColumns are read by scanTopic; FirstSeq is the smallest retained seq
// (a lookup at the front of the topic's range in the events primary key).
const topicColumns = `t.name, t.retention, t.max_event_bytes, t.dedup_window, t.created_at, t.updated_at, t.head_seq,
	coalesce((SELECT min(e.seq) FROM events e WHERE e.topic_id = t.id), 0)`

func scanTopic(sc interface{ Scan(...any) error }) (herald.Topic, error) {
	var t herald.Topic
	var retention, window, created, updated int64
	err := sc.Scan(&t.Name, &retention, &t.MaxEventBytes, &window, &created, &updated, &t.HeadSeq, &t.FirstSeq)
	t.Retention, t.DedupWindow = time.Duration(retention), time.Duration(window)
	t.CreatedAt, t.UpdatedAt = fromNanos(created), fromNanos(updated)
	return t, err
}

// PutTopic creates the topic or updates its settings. A zero CreatedAt or
// UpdatedAt is set to the current time. Invalid settings fail with
// CodeInvalid.
func (s *Store) PutTopic(ctx context.Context, t herald.Topic) (herald.Topic, bool, error) {
	if err := s.checkOpen(); err != nil {
		return herald.Topic{}, false, err
	}
	if err := t.Validate(); err != nil {
		return herald.Topic{}, false, err
	}
	now := time.Now()
	if t.UpdatedAt.IsZero() {
		t.UpdatedAt = now
	}
	if t.CreatedAt.IsZero() {
		t.CreatedAt = t.UpdatedAt
	}
	var out herald.Topic
	var created bool
	err := s.withTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE topics SET retention = ?, max_event_bytes = ?, dedup_window = ?, updated_at = ?
			WHERE name = ?`, int64(t.Retention), t.MaxEventBytes, int64(t.DedupWindow), nanos(t.UpdatedAt), t.Name)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			created = true
			if _, err := tx.ExecContext(ctx, `INSERT INTO topics (name, retention, max_event_bytes, dedup_window, created_at, updated_at)
				VALUES (?, ?, ?, ?, ?, ?)`, t.Name, int64(t.Retention), t.MaxEventBytes, int64(t.DedupWindow),
				nanos(t.CreatedAt), nanos(t.UpdatedAt)); err != nil {
				return err
			}
		}
		out, err = scanTopic(tx.QueryRowContext(ctx, `SELECT `+topicColumns+` FROM topics t WHERE t.name = ?`, t.Name))
		return err
	})
	if err != nil {
		return herald.Topic{}, false, s.fail("put topic", err)
	}
	return out, created, nil
}

// GetTopic returns the topic with its statistics, or CodeNotFound.
func (s *Store) GetTopic(ctx context.Context, name string) (herald.Topic, error) {
	if err := s.checkOpen(); err != nil {
		return herald.Topic{}, err
	}
	t, err := scanTopic(s.rGetTopic.QueryRowContext(ctx, name))
	if errors.Is(err, sql.ErrNoRows) {
		return herald.Topic{}, topicNotFound(name)
	}
	if err != nil {
		return herald.Topic{}, s.fail("get topic", err)
	}
	return t, nil
}

func topicNotFound(name string) error {
	return &herald.Error{Code: herald.CodeNotFound, Field: "topic", Message: "topic " + name + " does not exist"}
}

// ListTopics returns up to limit topics whose names sort after the given
// name in byte order, with statistics. A limit below 1 fails with
// CodeInvalid.
func (s *Store) ListTopics(ctx context.Context, after string, limit int) ([]herald.Topic, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	if limit < 1 {
		return nil, herald.FieldErrorf("limit", "limit must be at least 1, got %d", limit)
	}
	rows, err := s.reader.QueryContext(ctx, `SELECT `+topicColumns+` FROM topics t WHERE t.name > ? ORDER BY t.name LIMIT ?`, after, limit)
	if err != nil {
		return nil, s.fail("list topics", err)
	}
	defer rows.Close()
	var out []herald.Topic
	for rows.Next() {
		t, err := scanTopic(rows)
		if err != nil {
			return nil, s.fail("list topics", err)
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, s.fail("list topics", err)
	}
	return out, nil
}

// DeleteTopic removes the topic at once; its events and dedup keys become
// unreachable immediately (a topic created again gets a new id) and Prune
// deletes their rows in short transactions later, so deleting a large
// topic does not stall publishing. Every subscription's cursor, retries
// and dead letters in the topic are deleted in the same transaction, and
// every subscription that matches the topic and holds a dispatch lease
// gets a fence at its lease epoch (migration 0005): a Settle under that
// epoch writes none of those rows back.
func (s *Store) DeleteTopic(ctx context.Context, name string) error {
	if err := s.checkOpen(); err != nil {
		return err
	}
	err := s.withTx(ctx, func(tx *sql.Tx) error {
		var id int64
		if err := tx.QueryRowContext(ctx, `DELETE FROM topics WHERE name = ? RETURNING id`, name).Scan(&id); err != nil {
			if errors.Is(err, sql.ErrNoRows) {
				return topicNotFound(name)
			}
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO dead_topics (id) VALUES (?)`, id); err != nil {
			return err
		}
		// Every subscription's delivery state in the topic goes with it,
		// so a topic created again starts clean.
		for _, table := range []string{"cursors", "retries", "dead_letters", "schemas"} {
			if _, err := tx.ExecContext(ctx, `DELETE FROM `+table+` WHERE topic = ?`, name); err != nil {
				return fmt.Errorf("delete %s of the topic: %w", table, err)
			}
		}
		return fenceTopic(ctx, tx, name)
	})
	return s.fail("delete topic", err)
}

// fenceTopic records, for every subscription that matches the deleted
// topic and holds a lease (live or lapsed: Settle checks only the epoch),
// that the topic was deleted under the lease's epoch. A subscription whose
// lease was released needs none: the next AcquireLease increases its epoch.
func fenceTopic(ctx context.Context, tx *sql.Tx, name string) error {
	type fence struct{ sid, epoch int64 }
	// Topic names hold no wildcard: the exact name, or a pattern.
	rows, err := tx.QueryContext(ctx, `SELECT sid, topic, lease_epoch FROM subscriptions
		WHERE lease_node <> '' AND (topic = ? OR instr(topic, '*') > 0 OR instr(topic, '>') > 0)`, name)
	if err != nil {
		return fmt.Errorf("find the topic's subscriptions: %w", err)
	}
	var fences []fence
	for rows.Next() {
		var f fence
		var pattern string
		if err := rows.Scan(&f.sid, &pattern, &f.epoch); err != nil {
			rows.Close()
			return fmt.Errorf("find the topic's subscriptions: %w", err)
		}
		if herald.MatchTopic(pattern, name) {
			fences = append(fences, f)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("find the topic's subscriptions: %w", err)
	}
	for _, f := range fences {
		if _, err := tx.ExecContext(ctx, `INSERT INTO topic_fences (sid, topic, epoch) VALUES (?, ?, ?)
			ON CONFLICT (sid, topic) DO UPDATE SET epoch = max(epoch, excluded.epoch)`, f.sid, name, f.epoch); err != nil {
			return fmt.Errorf("fence the topic: %w", err)
		}
	}
	return nil
}
