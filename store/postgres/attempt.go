package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/heraldhq/herald"
	"github.com/jackc/pgx/v5"
)

// ListAttempts returns the subscription's attempts, newest first (by ID),
// with the event id and outcome f asks for, those with ID < f.BeforeID
// when it is set, at most f.Limit of them (a Limit below 1 means no
// limit). The statement names only the conditions asked for, so the
// planner can use the (subscription, event, id) index when an event id is
// given. An unknown subscription has none.
func (s *Store) ListAttempts(ctx context.Context, id string, f herald.AttemptFilter) ([]herald.Attempt, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	if !validText(id) || !validText(f.EventID) || !validText(string(f.Outcome)) {
		return nil, nil // nothing stored has it
	}
	q := `SELECT id, topic, seq, event_id, attempt, time_ns, outcome, status_code, latency, error, response
		FROM attempts WHERE subscription_id = $1`
	args := []any{id}
	if f.EventID != "" {
		args = append(args, f.EventID)
		q += fmt.Sprintf(` AND event_id = $%d`, len(args))
	}
	if f.Outcome != "" {
		args = append(args, string(f.Outcome))
		q += fmt.Sprintf(` AND outcome = $%d`, len(args))
	}
	if f.BeforeID > 0 {
		args = append(args, f.BeforeID)
		q += fmt.Sprintf(` AND id < $%d`, len(args))
	}
	q += ` ORDER BY id DESC`
	if f.Limit > 0 {
		args = append(args, f.Limit)
		q += fmt.Sprintf(` LIMIT $%d`, len(args))
	}
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, s.fail("list attempts", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (herald.Attempt, error) {
		a := herald.Attempt{SubscriptionID: id}
		var attempt, at, status, latency int64
		var outcome string
		var resp []byte
		err := row.Scan(&a.ID, &a.Topic, &a.Seq, &a.EventID, &attempt, &at, &outcome, &status, &latency, &a.Error, &resp)
		a.Attempt, a.Time, a.Outcome = int(attempt), fromNanos(at), herald.Outcome(outcome)
		a.StatusCode, a.Latency, a.Response = int(status), time.Duration(latency), string(resp)
		return a, err
	})
	if err != nil {
		return nil, s.fail("list attempts", err)
	}
	return out, nil
}

// PruneAttempts deletes up to limit attempts whose Time is before the
// given time, in one statement, and returns how many; callers repeat while
// the result is limit. The BRIN index on time finds them without a
// per-insert cost. A limit below 1 fails with CodeInvalid.
func (s *Store) PruneAttempts(ctx context.Context, before time.Time, limit int) (int64, error) {
	if err := s.checkOpen(); err != nil {
		return 0, err
	}
	if limit < 1 {
		return 0, herald.FieldErrorf("limit", "limit must be at least 1, got %d", limit)
	}
	var cutoff int64
	switch {
	case before.IsZero():
		return 0, nil // nothing is older than the zero time
	case before.Before(minTime):
		return 0, nil
	case before.After(maxTime):
		cutoff = maxTime.UnixNano()
	default:
		cutoff = before.UnixNano()
	}
	n, err := s.exec(ctx, `DELETE FROM attempts a USING (
			SELECT subscription_id, id FROM attempts WHERE time_ns < $1 LIMIT $2) old
		WHERE a.subscription_id = old.subscription_id AND a.id = old.id`, cutoff, limit)
	if err != nil {
		return 0, s.fail("prune attempts", err)
	}
	return n, nil
}
