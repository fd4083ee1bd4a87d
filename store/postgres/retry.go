package postgres

import (
	"context"
	"errors"
	"time"

	"github.com/heraldhq/herald"
	"github.com/jackc/pgx/v5"
)

const retryColumns = `topic, seq, event_id, event_key, attempt, coalesce(due_at, 0), last_error`

func scanRetry(row pgx.Row, sub string) (herald.Retry, error) {
	r := herald.Retry{SubscriptionID: sub}
	var attempt, due int64
	if err := row.Scan(&r.Topic, &r.Seq, &r.EventID, &r.Key, &attempt, &due, &r.LastError); err != nil {
		return herald.Retry{}, err
	}
	r.Attempt, r.DueAt = int(attempt), fromNanos(due)
	return r, nil
}

// lockSubscription locks the subscription's row for a writer of its
// delivery state (see migrations/0002), or returns CodeNotFound.
func lockSubscription(ctx context.Context, tx pgx.Tx, id string) error {
	var one int
	err := tx.QueryRow(ctx, `SELECT 1 FROM subscriptions WHERE id = $1 FOR NO KEY UPDATE`, id).Scan(&one)
	if errors.Is(err, pgx.ErrNoRows) {
		return subNotFound(id)
	}
	return err
}

// DueRetries returns up to limit retries of the subscription with
// DueAt <= now, earliest due first (ties in topic and seq order), and the
// DueAt of the earliest due retry not returned (zero if none): one range
// scan of the retries_by_due index. Blocked retries are never returned.
// A limit below 1 returns no retries, only that time. An unknown
// subscription has none.
func (s *Store) DueRetries(ctx context.Context, id string, now time.Time, limit int) ([]herald.Retry, time.Time, error) {
	if err := s.checkOpen(); err != nil {
		return nil, time.Time{}, err
	}
	if !validText(id) {
		return nil, time.Time{}, nil
	}
	limit = max(limit, 0)
	rows, err := s.pool.Query(ctx, `SELECT `+retryColumns+` FROM retries
		WHERE subscription_id = $1 AND due_at IS NOT NULL ORDER BY due_at, topic, seq LIMIT $2`, id, limit+1)
	if err != nil {
		return nil, time.Time{}, s.fail("due retries", err)
	}
	all, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (herald.Retry, error) { return scanRetry(row, id) })
	if err != nil {
		return nil, time.Time{}, s.fail("due retries", err)
	}
	n := 0
	for n < len(all) && n < limit && !all[n].DueAt.After(now) {
		n++
	}
	var next time.Time
	if n < len(all) {
		next = all[n].DueAt
	}
	if n == 0 {
		return nil, next, nil
	}
	return all[:n], next, nil
}

// RetryKeys returns every retry of the subscription that has a key, in
// (topic, seq) order.
func (s *Store) RetryKeys(ctx context.Context, id string) ([]herald.Retry, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	if !validText(id) {
		return nil, nil
	}
	rows, err := s.pool.Query(ctx, `SELECT `+retryColumns+` FROM retries
		WHERE subscription_id = $1 AND event_key <> '' ORDER BY topic, seq`, id)
	if err != nil {
		return nil, s.fail("retry keys", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (herald.Retry, error) { return scanRetry(row, id) })
	if err != nil {
		return nil, s.fail("retry keys", err)
	}
	return out, nil
}

// CountRetries returns the size of the subscription's retry set.
func (s *Store) CountRetries(ctx context.Context, id string) (int64, error) {
	return s.count(ctx, "count retries", `SELECT count(*) FROM retries WHERE subscription_id = $1`, id)
}

// CountDeadLetters returns how many dead letters the subscription has.
func (s *Store) CountDeadLetters(ctx context.Context, id string) (int64, error) {
	return s.count(ctx, "count dead letters", `SELECT count(*) FROM dead_letters WHERE subscription_id = $1`, id)
}

// GetRetry returns the subscription's retry of one event, or CodeNotFound.
func (s *Store) GetRetry(ctx context.Context, id, topic string, seq int64) (herald.Retry, error) {
	if err := s.checkOpen(); err != nil {
		return herald.Retry{}, err
	}
	notFound := herald.Errorf(herald.CodeNotFound, "event %d of topic %s is not in the retry set of subscription %s", seq, topic, id)
	if !validText(id) || !validText(topic) {
		return herald.Retry{}, notFound
	}
	r, err := scanRetry(s.pool.QueryRow(ctx, `SELECT `+retryColumns+` FROM retries
		WHERE subscription_id = $1 AND topic = $2 AND seq = $3`, id, topic, seq), id)
	if errors.Is(err, pgx.ErrNoRows) {
		return herald.Retry{}, notFound
	}
	if err != nil {
		return herald.Retry{}, s.fail("get retry", err)
	}
	return r, nil
}

// CountBacklog returns the retry-set and dead-letter sizes of the
// subscriptions node holds leases on, or of all when node is "".
func (s *Store) CountBacklog(ctx context.Context, node string) (retries, dead int64, err error) {
	if err := s.checkOpen(); err != nil {
		return 0, 0, err
	}
	if !validText(node) {
		return 0, 0, nil
	}
	err = s.pool.QueryRow(ctx, `SELECT
		(SELECT count(*) FROM retries t WHERE $1 = '' OR t.subscription_id IN (SELECT id FROM subscriptions WHERE lease_node = $1)),
		(SELECT count(*) FROM dead_letters t WHERE $1 = '' OR t.subscription_id IN (SELECT id FROM subscriptions WHERE lease_node = $1))`,
		node).Scan(&retries, &dead)
	if err != nil {
		return 0, 0, s.fail("count backlog", err)
	}
	return retries, dead, nil
}

func (s *Store) count(ctx context.Context, op, sql, id string) (int64, error) {
	if err := s.checkOpen(); err != nil {
		return 0, err
	}
	if !validText(id) {
		return 0, nil
	}
	var n int64
	if err := s.pool.QueryRow(ctx, sql, id).Scan(&n); err != nil {
		return 0, s.fail(op, err)
	}
	return n, nil
}

// scheduleReplaySQL adds the retained events of a topic in a seq range to
// the retry set, skipping those already there, at most $5 of them. The
// topic id is a scalar subquery so that the range is one ordered scan of
// the events primary key (see readEventsSQL).
const scheduleReplaySQL = `INSERT INTO retries (subscription_id, topic, seq, event_id, event_key, attempt, due_at, last_error)
	SELECT $1, $2, e.seq, e.id, e.event_key, 0, $6, ''
	FROM events e
	WHERE e.topic_id = (SELECT id FROM topics WHERE name = $2) AND e.seq >= $3 AND e.seq <= $4
	  AND NOT EXISTS (SELECT 1 FROM retries r WHERE r.subscription_id = $1 AND r.topic = $2 AND r.seq = e.seq)
	ORDER BY e.seq
	LIMIT $5
	ON CONFLICT (subscription_id, topic, seq) DO NOTHING`

// ScheduleReplay puts every retained event of the topic with
// fromSeq <= seq <= toSeq in the subscription's retry set, due at now with
// Attempt 0, and returns how many it added: at most limit, the lowest seqs
// first. An event already in the retry set is left as it is. CodeNotFound
// if the subscription does not exist; CodeInvalid for a limit below 1 or
// now out of range. An unknown topic adds nothing.
func (s *Store) ScheduleReplay(ctx context.Context, id, topic string, fromSeq, toSeq int64, now time.Time, limit int) (int64, error) {
	if err := s.checkOpen(); err != nil {
		return 0, err
	}
	if limit < 1 {
		return 0, herald.FieldErrorf("limit", "limit must be at least 1, got %d", limit)
	}
	if now.IsZero() || !inNanosRange(now) {
		return 0, herald.FieldErrorf("now", "now must be between %s and %s", minTime.UTC(), maxTime.UTC())
	}
	if !validText(id) {
		return 0, subNotFound(id)
	}
	var n int64
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		if err := lockSubscription(ctx, tx, id); err != nil {
			return err
		}
		if !validText(topic) || fromSeq > toSeq {
			return nil
		}
		tag, err := tx.Exec(ctx, scheduleReplaySQL, id, topic, fromSeq, toSeq, limit, now.UnixNano())
		n = tag.RowsAffected()
		return err
	})
	if err != nil {
		return 0, s.fail("schedule replay", err)
	}
	return n, nil
}

// ListDeadLetters returns up to limit of the subscription's dead letters
// in (topic, seq) order after the given position ("" topic: from the
// start). A limit below 1 fails with CodeInvalid; an unknown subscription
// has none.
func (s *Store) ListDeadLetters(ctx context.Context, id string, after herald.Cursor, limit int) ([]herald.DeadLetter, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	if limit < 1 {
		return nil, herald.FieldErrorf("limit", "limit must be at least 1, got %d", limit)
	}
	if !validText(after.Topic) {
		return nil, herald.FieldErrorf("after", "the page cursor is not a topic name")
	}
	if !validText(id) {
		return nil, nil
	}
	rows, err := s.pool.Query(ctx, `SELECT topic, seq, event_id, event_key, attempts, last_error, dead_at
		FROM dead_letters WHERE subscription_id = $1 AND (topic, seq) > ($2, $3)
		ORDER BY topic, seq LIMIT $4`, id, after.Topic, after.Seq, limit)
	if err != nil {
		return nil, s.fail("list dead letters", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (herald.DeadLetter, error) {
		d := herald.DeadLetter{SubscriptionID: id}
		var attempts, at int64
		err := row.Scan(&d.Topic, &d.Seq, &d.EventID, &d.Key, &attempts, &d.LastError, &at)
		d.Attempts, d.DeadAt = int(attempts), fromNanos(at)
		return d, err
	})
	if err != nil {
		return nil, s.fail("list dead letters", err)
	}
	return out, nil
}

// redriveSQL moves dead letters ($2: event ids, NULL for all) into the
// retry set, due at $3 with attempt 0, replacing a retry row of the same
// event; the dead letter's last error stays with it.
const redriveSQL = `WITH moved AS (
		DELETE FROM dead_letters WHERE subscription_id = $1 AND ($2::text[] IS NULL OR event_id = ANY($2::text[]))
		RETURNING topic, seq, event_id, event_key, last_error
	)
	INSERT INTO retries AS r (subscription_id, topic, seq, event_id, event_key, attempt, due_at, last_error)
	SELECT $1, topic, seq, event_id, event_key, 0, $3, last_error FROM moved
	ON CONFLICT (subscription_id, topic, seq) DO UPDATE SET event_id = excluded.event_id,
		event_key = excluded.event_key, attempt = 0, due_at = excluded.due_at, last_error = excluded.last_error`

// RedriveDeadLetters moves dead letters back into the retry set, due at now
// with Attempt 0 (replacing a retry of the same event, if any): those with
// the given event ids, or all when eventIDs is nil. It returns how many
// moved. CodeNotFound if the subscription does not exist; CodeInvalid for
// now out of range.
func (s *Store) RedriveDeadLetters(ctx context.Context, id string, eventIDs []string, now time.Time) (int64, error) {
	if err := s.checkOpen(); err != nil {
		return 0, err
	}
	if now.IsZero() || !inNanosRange(now) {
		return 0, herald.FieldErrorf("now", "now must be between %s and %s", minTime.UTC(), maxTime.UTC())
	}
	if !validText(id) {
		return 0, subNotFound(id)
	}
	ids, all := storableIDs(eventIDs)
	var n int64
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		if err := lockSubscription(ctx, tx, id); err != nil {
			return err
		}
		if !all && len(ids) == 0 {
			return nil
		}
		tag, err := tx.Exec(ctx, redriveSQL, id, ids, now.UnixNano())
		n = tag.RowsAffected()
		return err
	})
	if err != nil {
		return 0, s.fail("redrive dead letters", err)
	}
	return n, nil
}

// DeleteDeadLetters removes the subscription's dead letters with the given
// event ids, or all when eventIDs is nil, and returns how many.
// CodeNotFound if the subscription does not exist.
func (s *Store) DeleteDeadLetters(ctx context.Context, id string, eventIDs []string) (int64, error) {
	if err := s.checkOpen(); err != nil {
		return 0, err
	}
	if !validText(id) {
		return 0, subNotFound(id)
	}
	ids, all := storableIDs(eventIDs)
	var n int64
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		if err := lockSubscription(ctx, tx, id); err != nil {
			return err
		}
		if !all && len(ids) == 0 {
			return nil
		}
		tag, err := tx.Exec(ctx, `DELETE FROM dead_letters
			WHERE subscription_id = $1 AND ($2::text[] IS NULL OR event_id = ANY($2::text[]))`, id, ids)
		n = tag.RowsAffected()
		return err
	})
	if err != nil {
		return 0, s.fail("delete dead letters", err)
	}
	return n, nil
}

// storableIDs returns the event ids a dead letter can have (the others
// match none) as an array parameter, or all = true and a nil slice (sent
// as NULL) when eventIDs is nil.
func storableIDs(eventIDs []string) (ids []string, all bool) {
	if eventIDs == nil {
		return nil, true
	}
	ids = make([]string, 0, len(eventIDs))
	for _, e := range eventIDs {
		if validText(e) {
			ids = append(ids, e)
		}
	}
	return ids, false
}
