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
// (event_id, sid, id) index when an event id is given.
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

// The statements of PruneAttempts. Both are ranges of the table's b-tree
// (the rowid is the id): pruneAttemptsSQL reads the (id, time) of the
// first ?2 attempts after id ?1, pruneRangeSQL deletes those with ids in
// (?1, ?2] older than ?3.
const (
	pruneAttemptsSQL = `SELECT id, time FROM attempts WHERE id > ? ORDER BY id LIMIT ?`
	pruneRangeSQL    = `DELETE FROM attempts WHERE id > ? AND id <= ? AND time < ?`
)

// PruneAttempts deletes up to limit attempts whose Time is before the
// given time, in transactions of at most a few hundred rows so dispatch is
// not stalled, and returns how many; callers repeat while the result is
// limit. A limit below 1 fails with CodeInvalid.
//
// It prunes in write order (by ID), without an index on time: it walks
// the log from its first attempt, a chunk at a time, deleting those older
// than before, and stops at the end of the log or after pruneChunk
// attempts in a row that are not older. An attempt's time is when its
// result arrived and it is written within about a second, so times nearly
// increase with IDs and the walk ends about where the attempts to keep
// begin. An old attempt written after such a run of newer ones is kept a
// little longer: it goes in a later pass, once they have aged too. An
// attempt at or after before is never deleted.
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
	w := pruneWalk{cutoff: clampNanos(before)}
	var total int64
	for total < int64(limit) && !w.done {
		n := min(int64(limit)-total, pruneChunk)
		var deleted int64
		err := s.withTx(ctx, func(tx *sql.Tx) error {
			from := w.last
			old, err := w.next(ctx, tx, n)
			if err != nil || old == 0 {
				return err
			}
			deleted, err = execCount(ctx, tx, pruneRangeSQL, from, w.last, w.cutoff)
			return err
		})
		if err != nil {
			return total, s.fail("prune attempts", err)
		}
		total += deleted
	}
	return total, nil
}

// pruneWalk is where PruneAttempts is in the attempt log.
type pruneWalk struct {
	cutoff int64 // attempts with an earlier time go
	last   int64 // the id of the last attempt looked at
	run    int64 // attempts in a row up to last that stay
	done   bool
}

// next looks at the attempts after w.last in id order, at most pruneChunk
// of them, and returns how many are older than the cutoff. It stops early
// at the n-th such attempt, at the end of the log and where the run of
// attempts to keep reaches pruneChunk; the last two end the walk.
func (w *pruneWalk) next(ctx context.Context, tx *sql.Tx, n int64) (int64, error) {
	rows, err := tx.QueryContext(ctx, pruneAttemptsSQL, w.last, pruneChunk)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	var seen, old int64
	for old < n && w.run < pruneChunk && seen < pruneChunk {
		if !rows.Next() {
			w.done = true // the end of the log
			break
		}
		var at int64
		if err := rows.Scan(&w.last, &at); err != nil {
			return 0, err
		}
		seen++
		if at < w.cutoff {
			old, w.run = old+1, 0
		} else {
			w.run++
		}
	}
	if w.run >= pruneChunk {
		w.done = true
	}
	return old, rows.Err()
}
