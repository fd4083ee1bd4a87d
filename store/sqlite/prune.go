package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/heraldhq/herald"
)

// pruneChunk bounds the rows one prune transaction deletes, so the writer
// is never held for long and publishes interleave with pruning.
const pruneChunk = 500

// Incremental vacuum thresholds: SQLite reuses freed pages by itself, so
// the file is only shrunk when the free list is both large and a large part
// of the file (after a big topic is deleted or retention is cut), a few MB
// per Prune call.
const (
	vacuumMinFreePages = 1024
	vacuumMaxPages     = 2048
)

// Prune deletes up to limit rows: events of deleted topics, events past
// their topic's retention (from the front of each topic's log, oldest
// first, so seqs stay gap-free and EventCount exact) and idempotency keys
// past their topic's dedup window. Each transaction deletes at most a few
// hundred rows. It returns the number of rows deleted; a limit below 1
// fails with CodeInvalid.
func (s *Store) Prune(ctx context.Context, now time.Time, limit int) (int64, error) {
	if err := s.checkOpen(); err != nil {
		return 0, err
	}
	if limit < 1 {
		return 0, herald.FieldErrorf("limit", "limit must be at least 1, got %d", limit)
	}
	p := pruner{s: s, left: int64(limit), now: clampNanos(now)}
	err := p.run(ctx)
	deleted := int64(limit) - p.left
	if err != nil {
		return deleted, s.fail("prune", err)
	}
	if deleted > 0 {
		s.log.Debug("sqlite store pruned", "events", p.events, "dedup_keys", p.keys, "dead_topic_rows", p.dead)
		if err := s.maybeVacuum(ctx); err != nil {
			return deleted, s.fail("incremental vacuum", err)
		}
	}
	return deleted, nil
}

type pruner struct {
	s                  *Store
	left               int64 // rows this call may still delete
	now                int64
	events, keys, dead int64
}

type pruneTopic struct {
	id, retention, window int64
	name                  string
}

func (p *pruner) run(ctx context.Context) error {
	dead, err := p.deadTopics(ctx)
	if err != nil {
		return err
	}
	for _, id := range dead {
		if p.left == 0 {
			return nil
		}
		if err := p.dropDead(ctx, id); err != nil {
			return err
		}
	}
	topics, err := p.liveTopics(ctx)
	if err != nil {
		return err
	}
	for _, t := range topics {
		if p.left == 0 {
			return nil
		}
		if err := p.pruneEvents(ctx, t); err != nil {
			return err
		}
		if err := p.pruneKeys(ctx, t); err != nil {
			return err
		}
	}
	return nil
}

func (p *pruner) deadTopics(ctx context.Context) ([]int64, error) {
	rows, err := p.s.reader.QueryContext(ctx, `SELECT id FROM dead_topics ORDER BY id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}

func (p *pruner) liveTopics(ctx context.Context) ([]pruneTopic, error) {
	rows, err := p.s.reader.QueryContext(ctx, `SELECT id, retention, dedup_window, name FROM topics ORDER BY id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var ts []pruneTopic
	for rows.Next() {
		var t pruneTopic
		if err := rows.Scan(&t.id, &t.retention, &t.window, &t.name); err != nil {
			return nil, err
		}
		ts = append(ts, t)
	}
	return ts, rows.Err()
}

// dropDead deletes the rows of a deleted topic, and forgets the topic once
// none are left.
func (p *pruner) dropDead(ctx context.Context, id int64) error {
	for p.left > 0 {
		n := min(p.left, pruneChunk)
		var gone bool
		var deleted int64
		err := p.s.withTx(ctx, func(tx *sql.Tx) error {
			deleted, gone = 0, false
			ev, err := deleteFront(ctx, tx, id, n)
			if err != nil {
				return err
			}
			keys, err := execCount(ctx, tx, `DELETE FROM dedup WHERE topic_id = ?1 AND idem_key IN
				(SELECT idem_key FROM dedup WHERE topic_id = ?1 LIMIT ?2)`, id, n-ev)
			if err != nil {
				return err
			}
			deleted = ev + keys
			if deleted < n {
				gone = true
				_, err = tx.ExecContext(ctx, `DELETE FROM dead_topics WHERE id = ?`, id)
			}
			return err
		})
		if err != nil {
			return fmt.Errorf("drop rows of deleted topic %d: %w", id, err)
		}
		p.left -= deleted
		p.dead += deleted
		if gone {
			return nil
		}
	}
	return nil
}

// deleteFront deletes the first n events of a topic by seq.
func deleteFront(ctx context.Context, tx *sql.Tx, topicID, n int64) (int64, error) {
	if n <= 0 {
		return 0, nil
	}
	var last int64
	err := tx.QueryRowContext(ctx, `SELECT seq FROM events WHERE topic_id = ? ORDER BY seq LIMIT 1 OFFSET ?`,
		topicID, n-1).Scan(&last)
	if errors.Is(err, sql.ErrNoRows) {
		return execCount(ctx, tx, `DELETE FROM events WHERE topic_id = ?`, topicID)
	}
	if err != nil {
		return 0, err
	}
	return execCount(ctx, tx, `DELETE FROM events WHERE topic_id = ? AND seq <= ?`, topicID, last)
}

func execCount(ctx context.Context, tx *sql.Tx, q string, args ...any) (int64, error) {
	res, err := tx.ExecContext(ctx, q, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// pruneEvents deletes the expired events at the front of the topic's log:
// it stops at the first event still retained, even if a later one (with an
// earlier time, from a clock step) has expired, so retention only ever
// removes a prefix of the log.
func (p *pruner) pruneEvents(ctx context.Context, t pruneTopic) error {
	cutoff := satSub(p.now, t.retention)
	var first int64
	err := p.s.reader.QueryRowContext(ctx, `SELECT time FROM events WHERE topic_id = ? ORDER BY seq LIMIT 1`, t.id).Scan(&first)
	if errors.Is(err, sql.ErrNoRows) || err == nil && first > cutoff {
		return nil // cheap check on the read pool: nothing to do
	}
	if err != nil {
		return err
	}
	for p.left > 0 {
		n := min(p.left, pruneChunk)
		var deleted int64
		var more bool
		err := p.s.withTx(ctx, func(tx *sql.Tx) error {
			holds, err := archiveHolds(ctx, tx, t.name, cutoff)
			if err != nil {
				return fmt.Errorf("archive holds: %w", err)
			}
			rows, err := tx.QueryContext(ctx, `SELECT seq, time FROM events WHERE topic_id = ? ORDER BY seq LIMIT ?`, t.id, n)
			if err != nil {
				return err
			}
			last, count := int64(-1), int64(0)
			for rows.Next() {
				var seq, at int64
				if err := rows.Scan(&seq, &at); err != nil {
					rows.Close()
					return err
				}
				if at > cutoff || herald.Held(holds, seq, at) {
					break
				}
				last, count = seq, count+1
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return err
			}
			more = count == n
			if count == 0 {
				deleted = 0
				return nil
			}
			deleted, err = execCount(ctx, tx, `DELETE FROM events WHERE topic_id = ? AND seq <= ?`, t.id, last)
			return err
		})
		if err != nil {
			return fmt.Errorf("prune events of topic %d: %w", t.id, err)
		}
		p.left -= deleted
		p.events += deleted
		if !more {
			return nil
		}
	}
	return nil
}

// archiveHolds returns what the archives whose topics match the topic
// keep back in it (see herald.Store.Prune), read in the pruning
// transaction: the cursor before the retry set, so an event a Settle moves
// from one to the other between the reads is seen in one of them.
func archiveHolds(ctx context.Context, tx *sql.Tx, topic string, cutoff int64) ([]herald.RetentionHold, error) {
	rows, err := tx.QueryContext(ctx, `SELECT a.max_hold, s.sid, s.topic, s.state FROM archives a JOIN subscriptions s ON s.id = a.subscription_id`)
	if err != nil {
		return nil, err
	}
	type holder struct {
		a              herald.Archive
		sid            int64
		pattern, state string
	}
	var hs []holder
	for rows.Next() {
		var h holder
		var hold int64
		if err := rows.Scan(&hold, &h.sid, &h.pattern, &h.state); err != nil {
			rows.Close()
			return nil, err
		}
		h.a.MaxHold = time.Duration(hold)
		if herald.MatchTopic(h.pattern, topic) {
			hs = append(hs, h)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	var holds []herald.RetentionHold
	for _, h := range hs {
		var cursor, retry sql.NullInt64
		if err := tx.QueryRowContext(ctx, `SELECT seq FROM cursors WHERE sid = ? AND topic = ?`, h.sid, topic).Scan(&cursor); err != nil && !errors.Is(err, sql.ErrNoRows) {
			return nil, err
		}
		if err := tx.QueryRowContext(ctx, `SELECT min(seq) FROM retries WHERE sid = ? AND topic = ?`, h.sid, topic).Scan(&retry); err != nil {
			return nil, err
		}
		holds = append(holds, herald.ArchiveHold(h.a, herald.SubscriptionState(h.state), cursor.Int64, retry.Int64, cutoff))
	}
	return holds, nil
}

// pruneKeys deletes the topic's idempotency keys whose window has passed:
// stored time + window <= now.
func (p *pruner) pruneKeys(ctx context.Context, t pruneTopic) error {
	cutoff := satSub(p.now, t.window)
	var one int
	err := p.s.reader.QueryRowContext(ctx, `SELECT 1 FROM dedup WHERE topic_id = ? AND time <= ? LIMIT 1`, t.id, cutoff).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	if err != nil {
		return err
	}
	for p.left > 0 {
		n := min(p.left, pruneChunk)
		var deleted int64
		err := p.s.withTx(ctx, func(tx *sql.Tx) error {
			var err error
			deleted, err = execCount(ctx, tx, `DELETE FROM dedup WHERE topic_id = ?1 AND idem_key IN
				(SELECT idem_key FROM dedup WHERE topic_id = ?1 AND time <= ?2 ORDER BY time LIMIT ?3)`, t.id, cutoff, n)
			return err
		})
		if err != nil {
			return fmt.Errorf("prune idempotency keys of topic %d: %w", t.id, err)
		}
		p.left -= deleted
		p.keys += deleted
		if deleted < n {
			return nil
		}
	}
	return nil
}

// maybeVacuum returns free pages to the file system when the free list is
// large in absolute terms and a quarter or more of the file.
func (s *Store) maybeVacuum(ctx context.Context) error {
	var free, total int64
	if err := s.writer.QueryRowContext(ctx, `PRAGMA freelist_count`).Scan(&free); err != nil {
		return err
	}
	if err := s.writer.QueryRowContext(ctx, `PRAGMA page_count`).Scan(&total); err != nil {
		return err
	}
	if free < vacuumMinFreePages || free*4 < total {
		return nil
	}
	pages := min(free/2, vacuumMaxPages)
	// incremental_vacuum frees one page per result row: read them all.
	rows, err := s.writer.QueryContext(ctx, fmt.Sprintf(`PRAGMA incremental_vacuum(%d)`, pages))
	if err != nil {
		return err
	}
	for rows.Next() {
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	s.log.Debug("sqlite store vacuumed", "pages", pages, "free_pages", free, "total_pages", total)
	return nil
}

// clampNanos is nanos for times outside the int64 nanosecond range too.
func clampNanos(t time.Time) int64 {
	switch {
	case t.Before(time.Unix(0, math.MinInt64)):
		return math.MinInt64
	case t.After(time.Unix(0, math.MaxInt64)):
		return math.MaxInt64
	}
	return t.UnixNano()
}

// satSub is a - b without wrapping around.
func satSub(a, b int64) int64 {
	if b > 0 && a < math.MinInt64+b {
		return math.MinInt64
	}
	return a - b
}
