package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/heraldhq/herald"
	"github.com/jackc/pgx/v5"
)

// topicColumns are read by scanTopic. FirstSeq is the smallest retained
// seq: one probe at the front of the topic's range of the events primary
// key, in the same snapshot as head_seq.
const topicColumns = `t.name, t.retention, t.max_event_bytes, t.dedup_window, t.created_at, t.updated_at, t.head_seq,
	coalesce((SELECT e.seq FROM events e WHERE e.topic_id = t.id ORDER BY e.seq LIMIT 1), 0)`

// scanTopic reads the topicColumns of row, then any extra columns into
// extra.
func scanTopic(row pgx.Row, extra ...any) (herald.Topic, error) {
	var t herald.Topic
	var retention, window, created, updated int64
	var maxBytes int32
	dest := append([]any{&t.Name, &retention, &maxBytes, &window, &created, &updated, &t.HeadSeq, &t.FirstSeq}, extra...)
	err := row.Scan(dest...)
	t.Retention, t.DedupWindow = time.Duration(retention), time.Duration(window)
	t.MaxEventBytes = int(maxBytes)
	t.CreatedAt, t.UpdatedAt = fromNanos(created), fromNanos(updated)
	return t, err
}

// PutTopic creates the topic or updates its settings in one statement, so
// nodes creating the same topic at once both succeed and exactly one of
// them reports it created. A zero CreatedAt or UpdatedAt is set to the
// current time. Invalid settings fail with CodeInvalid.
func (s *Store) PutTopic(ctx context.Context, t herald.Topic) (herald.Topic, bool, error) {
	if err := s.checkOpen(); err != nil {
		return herald.Topic{}, false, err
	}
	if err := t.Validate(); err != nil {
		return herald.Topic{}, false, err
	}
	if t.UpdatedAt.IsZero() {
		t.UpdatedAt = time.Now()
	}
	if t.CreatedAt.IsZero() {
		t.CreatedAt = t.UpdatedAt
	}
	if !inNanosRange(t.CreatedAt) || !inNanosRange(t.UpdatedAt) {
		return herald.Topic{}, false, herald.FieldErrorf("updated_at", "topic times must be between %s and %s", minTime.UTC(), maxTime.UTC())
	}
	// xmax is 0 on a row version that this statement inserted, and the
	// locking transaction's id on one it updated.
	row := s.pool.QueryRow(ctx, `INSERT INTO topics AS t (name, retention, max_event_bytes, dedup_window, created_at, updated_at)
		VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (name) DO UPDATE SET retention = excluded.retention, max_event_bytes = excluded.max_event_bytes,
			dedup_window = excluded.dedup_window, updated_at = excluded.updated_at
		RETURNING `+topicColumns+`, t.xmax = 0`,
		t.Name, int64(t.Retention), int32(t.MaxEventBytes), int64(t.DedupWindow), nanos(t.CreatedAt), nanos(t.UpdatedAt))
	var created bool
	out, err := scanTopic(row, &created)
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
	if !validText(name) {
		return herald.Topic{}, topicNotFound(name)
	}
	t, err := scanTopic(s.pool.QueryRow(ctx, `SELECT `+topicColumns+` FROM topics t WHERE t.name = $1`, name))
	if errors.Is(err, pgx.ErrNoRows) {
		return herald.Topic{}, topicNotFound(name)
	}
	if err != nil {
		return herald.Topic{}, s.fail("get topic", err)
	}
	return t, nil
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
	if !validText(after) {
		return nil, herald.FieldErrorf("after", "the page cursor is not a topic name")
	}
	rows, err := s.pool.Query(ctx, `SELECT `+topicColumns+` FROM topics t WHERE t.name > $1 ORDER BY t.name LIMIT $2`, after, limit)
	if err != nil {
		return nil, s.fail("list topics", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (herald.Topic, error) { return scanTopic(row) })
	if err != nil {
		return nil, s.fail("list topics", err)
	}
	return out, nil
}

// lockTopicSubsSQL locks, in id order, the subscriptions that have
// delivery state in a topic ($1) or match it ($2, the ids DeleteTopic
// found).
const lockTopicSubsSQL = `SELECT id FROM subscriptions WHERE id = ANY($2::text[]) OR id IN (
		SELECT subscription_id FROM cursors WHERE topic = $1
		UNION SELECT subscription_id FROM retries WHERE topic = $1
		UNION SELECT subscription_id FROM dead_letters WHERE topic = $1)
	ORDER BY id FOR NO KEY UPDATE`

// fenceTopicSQL fences the topic ($1) for the matching subscriptions ($2)
// that hold a lease (live or lapsed: Settle checks only the epoch) at
// their lease epoch. A subscription whose lease was released needs none:
// the next AcquireLease, which waits for the row lock DeleteTopic holds,
// increases its epoch. Run after lockTopicSubsSQL, in a statement of its
// own, so it reads the epochs as they are under the lock.
const fenceTopicSQL = `INSERT INTO topic_fences AS f (subscription_id, topic, epoch)
	SELECT id, $1, lease_epoch FROM subscriptions WHERE id = ANY($2::text[]) AND lease_node <> ''
	ON CONFLICT (subscription_id, topic) DO UPDATE SET epoch = greatest(f.epoch, excluded.epoch)`

// DeleteTopic removes the topic at once: its events and dedup keys become
// unreachable immediately (a topic created again gets a new id and starts
// at seq 1), and Prune deletes their rows in short transactions later, so
// deleting a large topic does not hold a long transaction. It waits for
// appends to the topic in flight on any node to commit. In the same
// transaction it removes every subscription's cursor, retries and dead
// letters in the topic, so a topic created again starts clean for them,
// and fences the topic for every matching subscription that holds a
// dispatch lease (migration 0005): a Settle under that lease epoch writes
// none of those rows back. Once committed, the deletion is announced to
// the other nodes (see EnableNotify).
func (s *Store) DeleteTopic(ctx context.Context, name string) error {
	if err := s.checkOpen(); err != nil {
		return err
	}
	if !validText(name) {
		return topicNotFound(name)
	}
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var id int64
		if err := tx.QueryRow(ctx, `DELETE FROM topics WHERE name = $1 RETURNING id`, name).Scan(&id); err != nil {
			if errors.Is(err, pgx.ErrNoRows) {
				return topicNotFound(name)
			}
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO dead_topics (id) VALUES ($1)`, id); err != nil {
			return err
		}
		// The subscriptions that match the topic: those naming it and the
		// patterns (topic names hold no wildcard) that match it. A
		// subscription's topic never changes, so this needs no lock.
		rows, err := tx.Query(ctx, `SELECT id, topic FROM subscriptions
			WHERE topic = $1 OR strpos(topic, '*') > 0 OR strpos(topic, '>') > 0`, name)
		if err != nil {
			return fmt.Errorf("find the topic's subscriptions: %w", err)
		}
		var matching []string
		var sid, pattern string
		if _, err := pgx.ForEachRow(rows, []any{&sid, &pattern}, func() error {
			if herald.MatchTopic(pattern, name) {
				matching = append(matching, sid)
			}
			return nil
		}); err != nil {
			return fmt.Errorf("find the topic's subscriptions: %w", err)
		}
		// Every subscription's delivery state in the topic goes too, under
		// the subscriptions' row locks (taken in id order, as Settle takes
		// them), so a settlement in flight finishes first and none
		// interleaves with the delete; a settlement that starts later sees
		// the fence.
		b := &pgx.Batch{}
		b.Queue(lockTopicSubsSQL, name, matching)
		b.Queue(fenceTopicSQL, name, matching)
		for _, table := range []string{"cursors", "retries", "dead_letters", "schemas"} {
			b.Queue(`DELETE FROM `+table+` WHERE topic = $1`, name)
		}
		return tx.SendBatch(ctx, b).Close()
	})
	if err != nil {
		return s.fail("delete topic", err)
	}
	s.announceTopicDeletion(ctx, name)
	return nil
}
