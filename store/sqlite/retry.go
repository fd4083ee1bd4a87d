package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"

	"github.com/heraldhq/herald"
)

const retrySelect = `SELECT topic, seq, event_id, event_key, attempt, coalesce(due_at, 0), last_error FROM retries`

// subSID is the condition that picks the rows of the subscription whose id
// is the next argument.
const subSID = `sid = (SELECT sid FROM subscriptions WHERE id = ?)`

// The read pool's statements of the retry set and dead letters.
const (
	// Blocked rows (NULL) sort first in the (sid, due_at) index; the range
	// starts after them, and the primary key in the index orders ties.
	dueRetriesSQL   = retrySelect + ` WHERE ` + subSID + ` AND due_at IS NOT NULL ORDER BY due_at, topic, seq LIMIT ?`
	retryKeysSQL    = retrySelect + ` WHERE ` + subSID + ` AND event_key <> '' ORDER BY topic, seq`
	countRetriesSQL = `SELECT count(*) FROM retries WHERE ` + subSID
	countDeadSQL    = `SELECT count(*) FROM dead_letters WHERE ` + subSID
	listDeadSQL     = `SELECT topic, seq, event_id, event_key, attempts, last_error, dead_at FROM dead_letters
		WHERE ` + subSID + ` AND (topic, seq) > (?, ?) ORDER BY topic, seq LIMIT ?`
)

func scanRetries(rows *sql.Rows, id string) ([]herald.Retry, error) {
	defer rows.Close()
	var out []herald.Retry
	for rows.Next() {
		r := herald.Retry{SubscriptionID: id}
		var due int64
		if err := rows.Scan(&r.Topic, &r.Seq, &r.EventID, &r.Key, &r.Attempt, &due, &r.LastError); err != nil {
			return nil, err
		}
		r.DueAt = fromNanos(due)
		out = append(out, r)
	}
	return out, rows.Err()
}

// DueRetries returns up to limit retries of the subscription with
// DueAt <= now, earliest due first (ties in topic and seq order), and the
// DueAt of the earliest due retry not returned (zero if none): one range
// scan of the (subscription, due) index. Blocked retries are never
// returned. A limit below 1 returns no retries, only that time. An unknown
// subscription has none.
func (s *Store) DueRetries(ctx context.Context, id string, now time.Time, limit int) ([]herald.Retry, time.Time, error) {
	if err := s.checkOpen(); err != nil {
		return nil, time.Time{}, err
	}
	limit = max(limit, 0)
	rows, err := s.rDueRetries.QueryContext(ctx, id, limit+1)
	if err != nil {
		return nil, time.Time{}, s.fail("due retries", err)
	}
	all, err := scanRetries(rows, id)
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
// (topic, seq) order; none for an unknown subscription.
func (s *Store) RetryKeys(ctx context.Context, id string) ([]herald.Retry, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	rows, err := s.rRetryKeys.QueryContext(ctx, id)
	if err != nil {
		return nil, s.fail("retry keys", err)
	}
	out, err := scanRetries(rows, id)
	if err != nil {
		return nil, s.fail("retry keys", err)
	}
	return out, nil
}

// CountRetries returns the size of the subscription's retry set, blocked
// retries included; 0 for an unknown subscription.
func (s *Store) CountRetries(ctx context.Context, id string) (int64, error) {
	return s.count(ctx, "count retries", s.rCountRetries, id)
}

// CountDeadLetters returns how many dead letters the subscription has; 0
// for an unknown subscription.
func (s *Store) CountDeadLetters(ctx context.Context, id string) (int64, error) {
	return s.count(ctx, "count dead letters", s.rCountDead, id)
}

// GetRetry returns the subscription's retry of one event, or CodeNotFound.
func (s *Store) GetRetry(ctx context.Context, id, topic string, seq int64) (herald.Retry, error) {
	if err := s.checkOpen(); err != nil {
		return herald.Retry{}, err
	}
	rows, err := s.reader.QueryContext(ctx, retrySelect+` WHERE `+subSID+` AND topic = ? AND seq = ?`, id, topic, seq)
	if err != nil {
		return herald.Retry{}, s.fail("get retry", err)
	}
	rs, err := scanRetries(rows, id)
	if err != nil {
		return herald.Retry{}, s.fail("get retry", err)
	}
	if len(rs) == 0 {
		return herald.Retry{}, herald.Errorf(herald.CodeNotFound, "event %d of topic %s is not in the retry set of subscription %s", seq, topic, id)
	}
	return rs[0], nil
}

// CountBacklog returns the retry-set and dead-letter sizes of the
// subscriptions node holds leases on, or of all when node is "".
func (s *Store) CountBacklog(ctx context.Context, node string) (retries, dead int64, err error) {
	if err := s.checkOpen(); err != nil {
		return 0, 0, err
	}
	q := func(table string) (int64, error) {
		var n int64
		err := s.reader.QueryRowContext(ctx, `SELECT count(*) FROM `+table+` t
			WHERE ?1 = '' OR t.sid IN (SELECT sid FROM subscriptions WHERE lease_node = ?1)`, node).Scan(&n)
		return n, err
	}
	if retries, err = q("retries"); err != nil {
		return 0, 0, s.fail("count backlog", err)
	}
	if dead, err = q("dead_letters"); err != nil {
		return 0, 0, s.fail("count backlog", err)
	}
	return retries, dead, nil
}

func (s *Store) count(ctx context.Context, op string, st *sql.Stmt, id string) (int64, error) {
	if err := s.checkOpen(); err != nil {
		return 0, err
	}
	var n int64
	if err := st.QueryRowContext(ctx, id).Scan(&n); err != nil {
		return 0, s.fail(op, err)
	}
	return n, nil
}

// ScheduleReplay puts every retained event of the topic with
// fromSeq <= seq <= toSeq in the subscription's retry set, due at now with
// Attempt 0 and the event's id and key, and returns how many it added: at
// most limit, the lowest seqs first. An event already in the retry set is
// left as it is (and does not count). CodeNotFound if the subscription
// does not exist; CodeInvalid for a limit below 1. An unknown topic adds
// nothing.
func (s *Store) ScheduleReplay(ctx context.Context, id, topic string, fromSeq, toSeq int64, now time.Time, limit int) (int64, error) {
	if err := s.checkOpen(); err != nil {
		return 0, err
	}
	if limit < 1 {
		return 0, herald.FieldErrorf("limit", "limit must be at least 1, got %d", limit)
	}
	var n int64
	err := s.withTx(ctx, func(tx *sql.Tx) error {
		sid, err := lookUpSub(ctx, tx, id)
		if err != nil || fromSeq > toSeq {
			return err
		}
		n, err = execCount(ctx, tx, replaySQL, sid, topic, clampNanos(now), fromSeq, toSeq, limit)
		return err
	})
	if err != nil {
		return 0, s.fail("schedule replay", err)
	}
	return n, nil
}

// replaySQL adds the retained events of topic ?2 with ?4 <= seq <= ?5 to
// the retry set of sid ?1, due at ?3, skipping those already there, at
// most ?6 of them.
const replaySQL = `INSERT INTO retries (sid, topic, seq, event_id, event_key, attempt, due_at, last_error)
	SELECT ?1, ?2, e.seq, e.id, e.event_key, 0, ?3, ''
	FROM events e
	WHERE e.topic_id = (SELECT id FROM topics WHERE name = ?2) AND e.seq BETWEEN ?4 AND ?5
		AND NOT EXISTS (SELECT 1 FROM retries r WHERE r.sid = ?1 AND r.topic = ?2 AND r.seq = e.seq)
	ORDER BY e.seq LIMIT ?6`

// ListDeadLetters returns up to limit of the subscription's dead letters
// in (topic, seq) byte order after the given position ("" topic: from the
// start). A limit below 1 fails with CodeInvalid; an unknown subscription
// has none.
func (s *Store) ListDeadLetters(ctx context.Context, id string, after herald.Cursor, limit int) ([]herald.DeadLetter, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	if limit < 1 {
		return nil, herald.FieldErrorf("limit", "limit must be at least 1, got %d", limit)
	}
	rows, err := s.rListDead.QueryContext(ctx, id, after.Topic, after.Seq, limit)
	if err != nil {
		return nil, s.fail("list dead letters", err)
	}
	defer rows.Close()
	var out []herald.DeadLetter
	for rows.Next() {
		d := herald.DeadLetter{SubscriptionID: id}
		var at int64
		if err := rows.Scan(&d.Topic, &d.Seq, &d.EventID, &d.Key, &d.Attempts, &d.LastError, &at); err != nil {
			return nil, s.fail("list dead letters", err)
		}
		d.DeadAt = fromNanos(at)
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, s.fail("list dead letters", err)
	}
	return out, nil
}

// deadLetterSet is the condition that picks a subscription's dead letters
// (?1 its sid) with the event ids in the JSON array ?2, or all of them when
// ?2 is NULL.
const deadLetterSet = `sid = ?1 AND (?2 IS NULL OR event_id IN (SELECT value FROM json_each(?2)))`

// redriveSQL copies the dead letters deadLetterSet picks into the retry
// set, due at ?3 with attempt 0, replacing a retry of the same event.
const redriveSQL = `INSERT INTO retries (sid, topic, seq, event_id, event_key, attempt, due_at, last_error)
	SELECT sid, topic, seq, event_id, event_key, 0, ?3, last_error FROM dead_letters WHERE ` + deadLetterSet + `
	ON CONFLICT (sid, topic, seq) DO UPDATE SET event_id = excluded.event_id, event_key = excluded.event_key,
		attempt = 0, due_at = excluded.due_at, last_error = excluded.last_error`

const deleteDeadSQL = `DELETE FROM dead_letters WHERE ` + deadLetterSet

// eventIDSet returns the argument deadLetterSet takes for eventIDs: NULL
// for nil (all), else a JSON array.
func eventIDSet(eventIDs []string) (any, error) {
	if eventIDs == nil {
		return nil, nil
	}
	b, err := json.Marshal(eventIDs)
	if err != nil {
		return nil, fmt.Errorf("encode event ids: %w", err)
	}
	return string(b), nil
}

// RedriveDeadLetters moves dead letters back into the retry set, due at now
// with Attempt 0 (replacing a retry of the same event, if any) and the dead
// letter's last error: those with the given event ids, or all when
// eventIDs is nil (an empty list moves none). It returns how many moved.
// CodeNotFound if the subscription does not exist.
func (s *Store) RedriveDeadLetters(ctx context.Context, id string, eventIDs []string, now time.Time) (int64, error) {
	if err := s.checkOpen(); err != nil {
		return 0, err
	}
	set, err := eventIDSet(eventIDs)
	if err != nil {
		return 0, s.fail("redrive dead letters", err)
	}
	var n int64
	err = s.withTx(ctx, func(tx *sql.Tx) error {
		sid, err := lookUpSub(ctx, tx, id)
		if err != nil || (eventIDs != nil && len(eventIDs) == 0) {
			return err
		}
		if _, err := tx.ExecContext(ctx, redriveSQL, sid, set, clampNanos(now)); err != nil {
			return err
		}
		n, err = execCount(ctx, tx, deleteDeadSQL, sid, set)
		return err
	})
	if err != nil {
		return 0, s.fail("redrive dead letters", err)
	}
	return n, nil
}

// DeleteDeadLetters removes the subscription's dead letters with the given
// event ids, or all when eventIDs is nil (an empty list removes none), and
// returns how many. CodeNotFound if the subscription does not exist.
func (s *Store) DeleteDeadLetters(ctx context.Context, id string, eventIDs []string) (int64, error) {
	if err := s.checkOpen(); err != nil {
		return 0, err
	}
	set, err := eventIDSet(eventIDs)
	if err != nil {
		return 0, s.fail("delete dead letters", err)
	}
	var n int64
	err = s.withTx(ctx, func(tx *sql.Tx) error {
		sid, err := lookUpSub(ctx, tx, id)
		if err != nil || (eventIDs != nil && len(eventIDs) == 0) {
			return err
		}
		n, err = execCount(ctx, tx, deleteDeadSQL, sid, set)
		return err
	})
	if err != nil {
		return 0, s.fail("delete dead letters", err)
	}
	return n, nil
}
