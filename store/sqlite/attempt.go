package sqlite

import (
	"context"
	"database/sql"
	"time"

	"github.com/heraldhq/herald"
)

// ListAttempts returns the subscription's attempts, newest first (by ID),
// with the event id and outcome f asks for, those with ID < f.BeforeID
// when it is set, at most f.Limit of them (a Limit below 1 means no
// limit). An unknown subscription has none.
func (s *Store) ListAttempts(ctx context.Context, id string, f herald.AttemptFilter) ([]herald.Attempt, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	q, args := attemptsQuery(id, f)
	rows, err := s.reader.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, s.fail("list attempts", err)
	}
	defer rows.Close()
	var out []herald.Attempt
	for rows.Next() {
		a := herald.Attempt{SubscriptionID: id}
		var at, latency int64
		var outcome string
		var resp []byte
		if err := rows.Scan(&a.ID, &a.Topic, &a.Seq, &a.EventID, &a.Attempt, &at, &outcome, &a.StatusCode, &latency,
			&a.Error, &resp); err != nil {
			return nil, s.fail("list attempts", err)
		}
		a.Time, a.Outcome, a.Latency, a.Response = fromNanos(at), herald.Outcome(outcome), time.Duration(latency), string(resp)
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, s.fail("list attempts", err)
	}
	return out, nil
}

// attemptsQuery returns the statement and arguments of ListAttempts. It
// names only the conditions asked for, so the planner can pick the
// (sid, event_id, id) index when an event id is given.
func attemptsQuery(id string, f herald.AttemptFilter) (string, []any) {
	q := `SELECT id, topic, seq, event_id, attempt, time, outcome, status_code, latency, error, response
		FROM attempts WHERE ` + subSID
	args := []any{id}
	if f.EventID != "" {
		q += ` AND event_id = ?`
		args = append(args, f.EventID)
	}
	if f.Outcome != "" {
		q += ` AND outcome = ?`
		args = append(args, string(f.Outcome))
	}
	if f.BeforeID > 0 {
		q += ` AND id < ?`
		args = append(args, f.BeforeID)
	}
	q += ` ORDER BY id DESC`
	if f.Limit > 0 {
		q += ` LIMIT ?`
		args = append(args, f.Limit)
	}
	return q, args
}

// pruneAttemptsSQL deletes up to ?2 attempts older than ?1, oldest first.
const pruneAttemptsSQL = `DELETE FROM attempts WHERE id IN (SELECT id FROM attempts WHERE time < ? ORDER BY time LIMIT ?)`

// PruneAttempts deletes up to limit attempts whose Time is before the
// given time, oldest first, in transactions of at most a few hundred rows
// so dispatch is not stalled, and returns how many; callers repeat while
// the result is limit. A limit below 1 fails with CodeInvalid.
func (s *Store) PruneAttempts(ctx context.Context, before time.Time, limit int) (int64, error) {
	if err := s.checkOpen(); err != nil {
		return 0, err
	}
	if limit < 1 {
		return 0, herald.FieldErrorf("limit", "limit must be at least 1, got %d", limit)
	}
	if before.IsZero() {
		return 0, nil // nothing is older than the zero time
	}
	cutoff := clampNanos(before)
	var total int64
	for total < int64(limit) {
		n := min(int64(limit)-total, pruneChunk)
		var deleted int64
		err := s.withTx(ctx, func(tx *sql.Tx) error {
			var err error
			deleted, err = execCount(ctx, tx, pruneAttemptsSQL, cutoff, n)
			return err
		})
		if err != nil {
			return total, s.fail("prune attempts", err)
		}
		total += deleted
		if deleted < n {
			break
		}
	}
	return total, nil
}
