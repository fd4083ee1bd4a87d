package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/heraldhq/herald"
	"github.com/jackc/pgx/v5"
)

// pruneCandidatesSQL finds the topics that have something to prune at $1:
// an expired event at the front of the log, or an expired dedup key. Each
// test is one index probe per topic.
const pruneCandidatesSQL = `SELECT t.id, t.name, $1 - t.retention, $1 - t.dedup_window FROM topics t
	WHERE (SELECT e.time_ns FROM events e WHERE e.topic_id = t.id ORDER BY e.seq LIMIT 1) <= $1 - t.retention
	   OR EXISTS (SELECT 1 FROM dedup d WHERE d.topic_id = t.id AND d.time_ns <= $1 - t.dedup_window)
	ORDER BY t.id`

// pruneEventsSQL deletes up to $3 events from the front of topic $1's log,
// stopping at the first event after the cutoff $2 (an event's retention
// has passed when its time + retention <= now): retention removes
// a prefix, so the retained seqs stay one gap-free range (Topic.FirstSeq
// and EventCount rely on it). An event whose time is behind an older seq's
// (clock skew between nodes) goes when the events before it have gone.
const pruneEventsSQL = `WITH front AS MATERIALIZED (
		SELECT seq, time_ns FROM events WHERE topic_id = $1 ORDER BY seq LIMIT $3
	)
	DELETE FROM events e USING front f
	WHERE e.topic_id = $1 AND e.seq = f.seq
	  AND f.seq < coalesce((SELECT min(seq) FROM front WHERE time_ns > $2), 9223372036854775807)`

// pruneDedupSQL deletes up to $3 keys of topic $1 stored at or before the
// cutoff $2, oldest first. It locks the keys first and skips those an
// Append is rewriting: Prune never waits for an Append, so the two cannot
// deadlock (an Append may hold one key and wait for another). A locked row
// that an Append rewrote meanwhile is tested against the cutoff again, so
// a key just reused is kept.
const pruneDedupSQL = `DELETE FROM dedup d WHERE d.topic_id = $1 AND d.idem_key IN (
		SELECT idem_key FROM dedup WHERE topic_id = $1 AND time_ns <= $2 ORDER BY time_ns LIMIT $3
		FOR UPDATE SKIP LOCKED)`

// Prune deletes up to limit rows in all: first the events and dedup keys
// of deleted topics, then events whose topic's retention has passed at now
// (from the front of each log) and dedup keys whose window has passed,
// oldest first. Each statement is its own short transaction (the expired
// events of a topic one transaction with the archive holds read for them,
// see pruneEvents) and deletes from the cold end of a log, so appends,
// which lock the topic row and write at the head, are not held up. It returns how many rows it deleted;
// callers repeat while the result is limit. A limit below 1 fails with
// CodeInvalid.
func (s *Store) Prune(ctx context.Context, now time.Time, limit int) (int64, error) {
	if err := s.checkOpen(); err != nil {
		return 0, err
	}
	if limit < 1 {
		return 0, herald.FieldErrorf("limit", "limit must be at least 1, got %d", limit)
	}
	if !inNanosRange(now) || now.IsZero() {
		return 0, herald.FieldErrorf("now", "now must be between %s and %s", minTime.UTC(), maxTime.UTC())
	}
	var total int64
	left := func() int64 { return int64(limit) - total }

	// Deleted topics first: their rows are unreachable already.
	rows, err := s.pool.Query(ctx, `SELECT id FROM dead_topics ORDER BY id`)
	if err != nil {
		return total, s.fail("prune: list deleted topics", err)
	}
	dead, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return total, s.fail("prune: list deleted topics", err)
	}
	for _, id := range dead {
		if left() == 0 {
			return total, nil
		}
		n, err := s.exec(ctx, `DELETE FROM events WHERE topic_id = $1 AND seq IN (
			SELECT seq FROM events WHERE topic_id = $1 ORDER BY seq LIMIT $2)`, id, left())
		total += n
		if err != nil {
			return total, s.fail("prune: events of a deleted topic", err)
		}
		if left() == 0 {
			return total, nil
		}
		n, err = s.exec(ctx, `DELETE FROM dedup WHERE topic_id = $1 AND idem_key IN (
			SELECT idem_key FROM dedup WHERE topic_id = $1 LIMIT $2)`, id, left())
		total += n
		if err != nil {
			return total, s.fail("prune: dedup keys of a deleted topic", err)
		}
		if left() == 0 {
			return total, nil
		}
		// Both were below their limit, so nothing of the topic is left:
		// forget it (bookkeeping, not counted).
		if _, err := s.exec(ctx, `DELETE FROM dead_topics WHERE id = $1`, id); err != nil {
			return total, s.fail("prune: forget a deleted topic", err)
		}
	}

	type candidate struct {
		id, eventCutoff, dedupCutoff int64
		name                         string
	}
	rows, err = s.pool.Query(ctx, pruneCandidatesSQL, now.UnixNano())
	if err != nil {
		return total, s.fail("prune: find expired rows", err)
	}
	cands, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (candidate, error) {
		var c candidate
		err := row.Scan(&c.id, &c.name, &c.eventCutoff, &c.dedupCutoff)
		return c, err
	})
	if err != nil {
		return total, s.fail("prune: find expired rows", err)
	}
	for _, c := range cands {
		if left() == 0 {
			return total, nil
		}
		n, err := s.pruneEvents(ctx, c.id, c.name, c.eventCutoff, left())
		total += n
		if err != nil {
			return total, s.fail("prune: expired events", err)
		}
		if left() == 0 {
			return total, nil
		}
		n, err = s.exec(ctx, pruneDedupSQL, c.id, c.dedupCutoff, left())
		total += n
		if err != nil {
			return total, s.fail("prune: expired dedup keys", err)
		}
	}
	return total, nil
}

// exec runs one statement in its own transaction and returns the rows it
// affected.
func (s *Store) exec(ctx context.Context, sql string, args ...any) (int64, error) {
	tag, err := s.pool.Exec(ctx, sql, args...)
	if err != nil {
		return 0, err
	}
	return tag.RowsAffected(), nil
}

// pruneEvents deletes up to limit expired events from the front of the
// topic's log, stopping at the first one an archive holds, in one
// transaction with the reading of the holds, which it keeps from changing
// until it commits: a change that would hold more (an archive created or
// resumed, its max_hold raised, events replayed or redriven into its retry
// set, its cursor set back) waits for the delete, or the delete sees it.
//
//   - LOCK TABLE archives IN SHARE MODE makes archives created, updated or
//     deleted meanwhile wait (their INSERT, UPDATE or DELETE takes ROW
//     EXCLUSIVE, which SHARE excludes; prunes share it).
//   - FOR SHARE on the archives' subscriptions makes their updates (pause,
//     resume) and every writer of their delivery state, which locks the row
//     FOR NO KEY UPDATE first (Settle, ScheduleReplay, RedriveDeadLetters;
//     migrations/0002), wait; so their cursors and retry sets stay as read.
//
// Without archives it is one DELETE, as before. Reading the holds outside
// the delete's transaction let a hold that changed in between be ignored
// (TestPruneHoldRace).
func (s *Store) pruneEvents(ctx context.Context, topicID int64, topic string, cutoff, limit int64) (int64, error) {
	var n int64
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `LOCK TABLE archives IN SHARE MODE`); err != nil {
			return err
		}
		holds, err := archiveHolds(ctx, tx, topic, cutoff)
		if err != nil {
			return fmt.Errorf("archive holds: %w", err)
		}
		if len(holds) == 0 {
			tag, err := tx.Exec(ctx, pruneEventsSQL, topicID, cutoff, limit)
			n = tag.RowsAffected()
			return err
		}
		n, err = pruneHeld(ctx, tx, topicID, cutoff, holds, limit)
		return err
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}

// archiveHoldersSQL lists the archives with their subscriptions, locking
// the subscriptions FOR SHARE in id order (as Settle locks them) until
// the pruning transaction ends.
const archiveHoldersSQL = `SELECT a.max_hold, s.id, s.topic, s.state
	FROM archives a JOIN subscriptions s ON s.id = a.subscription_id
	ORDER BY s.id FOR SHARE OF s`

// archiveHolds returns what the archives whose topics match the topic
// keep back in it (see herald.Store.Prune), read in the pruning
// transaction tx (see pruneEvents).
func archiveHolds(ctx context.Context, tx pgx.Tx, topic string, cutoff int64) ([]herald.RetentionHold, error) {
	type holder struct {
		a                  herald.Archive
		id, pattern, state string
	}
	rows, err := tx.Query(ctx, archiveHoldersSQL)
	if err != nil {
		return nil, err
	}
	all, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (holder, error) {
		var h holder
		var hold int64
		err := row.Scan(&hold, &h.id, &h.pattern, &h.state)
		h.a.MaxHold = time.Duration(hold)
		return h, err
	})
	if err != nil {
		return nil, err
	}
	var holds []herald.RetentionHold
	for _, h := range all {
		if !herald.MatchTopic(h.pattern, topic) {
			continue
		}
		var cursor, retry *int64
		err := tx.QueryRow(ctx, `SELECT seq FROM cursors WHERE subscription_id = $1 AND topic = $2`, h.id, topic).Scan(&cursor)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return nil, err
		}
		if err := tx.QueryRow(ctx, `SELECT min(seq) FROM retries WHERE subscription_id = $1 AND topic = $2`, h.id, topic).Scan(&retry); err != nil {
			return nil, err
		}
		holds = append(holds, herald.ArchiveHold(h.a, herald.SubscriptionState(h.state), deref(cursor), deref(retry), cutoff))
	}
	return holds, nil
}

func deref(p *int64) int64 {
	if p == nil {
		return 0
	}
	return *p
}

// pruneHeld deletes up to limit events from the front of the topic's log,
// stopping at the first one still retained or held by an archive.
func pruneHeld(ctx context.Context, tx pgx.Tx, topicID, cutoff int64, holds []herald.RetentionHold, limit int64) (int64, error) {
	rows, err := tx.Query(ctx, `SELECT seq, time_ns FROM events WHERE topic_id = $1 ORDER BY seq LIMIT $2`, topicID, limit)
	if err != nil {
		return 0, err
	}
	last := int64(-1)
	var seq, at int64
	_, err = pgx.ForEachRow(rows, []any{&seq, &at}, func() error {
		if at > cutoff || herald.Held(holds, seq, at) {
			return errStop
		}
		last = seq
		return nil
	})
	if err != nil && !errors.Is(err, errStop) {
		return 0, err
	}
	if last < 0 {
		return 0, nil
	}
	tag, err := tx.Exec(ctx, `DELETE FROM events WHERE topic_id = $1 AND seq <= $2`, topicID, last)
	return tag.RowsAffected(), err
}

// errStop ends a ForEachRow early.
var errStop = errors.New("stop")
