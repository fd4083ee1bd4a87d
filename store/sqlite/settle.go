package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/heraldhq/herald"
)

// Columns bound per row by the Settle batch statements.
const (
	cursorColumns   = 3
	retryColumns    = 8
	retryKeyColumns = 3 // (sid, topic, seq) of a retry to remove
	deadColumns     = 8
	attemptColumns  = 11
)

// rowStmts holds a multi-row statement for 1, 2, 4, ... rows (see
// execRows). Settle's statements take up to 128 rows: a group commit of
// many workers carries hundreds of attempts.
type rowStmts [8]*sql.Stmt

// settleStmts are the writer's prepared statements of Settle.
type settleStmts struct {
	epoch      *sql.Stmt // sid and lease epoch of a subscription id
	cursors    rowStmts
	addRetries rowStmts
	delRetry   *sql.Stmt
	dead       rowStmts
	attempts   rowStmts
	unblock    *sql.Stmt
	subFields  *sql.Stmt
}

// prepare prepares the statements. The multi-row ones are INSERT OR FAIL:
// with the default (OR ABORT) SQLite keeps a statement journal to undo a
// failed statement's earlier rows, about as many bytes again as the
// statement writes, while a failure here rolls back the whole transaction
// anyway.
func (st *settleStmts) prepare(prep func(string) *sql.Stmt) {
	st.epoch = prep(settleEpochSQL)
	for i := range st.cursors {
		n := 1 << i
		// Cursors only advance; the WHERE spares a write when they don't.
		st.cursors[i] = prep(valuesSQL(`INSERT OR FAIL INTO cursors (sid, topic, seq) VALUES `, cursorColumns, n,
			` ON CONFLICT (sid, topic) DO UPDATE SET seq = excluded.seq WHERE excluded.seq > cursors.seq`))
		// A stored retry is replaced by a due one and kept when the new
		// one is blocked (due_at NULL). Rows apply in order, so a row
		// given twice ends as applying them one by one would leave it.
		st.addRetries[i] = prep(valuesSQL(`INSERT OR FAIL INTO retries (sid, topic, seq, event_id, event_key, attempt, due_at, last_error) VALUES `,
			retryColumns, n, ` ON CONFLICT (sid, topic, seq) DO UPDATE SET event_id = excluded.event_id,
			event_key = excluded.event_key, attempt = excluded.attempt, due_at = excluded.due_at, last_error = excluded.last_error
			WHERE excluded.due_at IS NOT NULL`))
		st.dead[i] = prep(valuesSQL(`INSERT OR FAIL INTO dead_letters (sid, topic, seq, event_id, event_key, attempts, last_error, dead_at) VALUES `,
			deadColumns, n, ` ON CONFLICT (sid, topic, seq) DO UPDATE SET event_id = excluded.event_id,
			event_key = excluded.event_key, attempts = excluded.attempts, last_error = excluded.last_error, dead_at = excluded.dead_at`))
		st.attempts[i] = prep(valuesSQL(`INSERT OR FAIL INTO attempts (sid, topic, seq, event_id, attempt, time, outcome, status_code,
			latency, error, response) VALUES `, attemptColumns, n, ``))
	}
	st.delRetry = prep(deleteRetrySQL)
	st.unblock = prep(unblockSQL)
	st.subFields = prep(subFieldsSQL)
}

// The single-row statements of Settle.
const (
	// settleEpochSQL reads a subscription's sid and lease epoch, and
	// whether a topic was deleted under that epoch (see fencedTopicsSQL).
	settleEpochSQL = `SELECT s.sid, s.lease_epoch,
		EXISTS (SELECT 1 FROM topic_fences f WHERE f.sid = s.sid AND f.epoch >= s.lease_epoch)
		FROM subscriptions s WHERE s.id = ?`

	// fencedTopicsSQL lists the topics deleted while the subscription's
	// lease had the given epoch (or a later one): a settlement under it
	// writes nothing of them. Rare, so not prepared.
	fencedTopicsSQL = `SELECT topic FROM topic_fences WHERE sid = ? AND epoch >= ?`

	// One row at a time: some SQLite versions (3.40 among them) plan a
	// multi-row DELETE ... WHERE (sid, topic, seq) IN (VALUES ...) as a
	// scan of the retry set.
	deleteRetrySQL = `DELETE FROM retries WHERE sid = ? AND topic = ? AND seq = ?`

	// A chain with retries but none due gets its lowest seq due: all of
	// its retries are blocked, so that is the lowest blocked one. (min()
	// reads the first index entry; some SQLite versions plan ORDER BY seq
	// LIMIT 1 in this subquery with a sort.)
	unblockSQL = `UPDATE retries SET due_at = ?4
		WHERE sid = ?1 AND topic = ?2 AND seq = (
			SELECT min(seq) FROM retries WHERE sid = ?1 AND topic = ?2 AND event_key = ?3)
		AND NOT EXISTS (SELECT 1 FROM retries WHERE sid = ?1 AND topic = ?2 AND event_key = ?3 AND due_at IS NOT NULL)`

	// LastSuccess sets last_success_at and clears failing_since, then
	// FailingSince sets failing_since when it is unset, then Activity;
	// 0 is "not given". A changed failing_since increments the version
	// (SET expressions all see the row as it was before the update).
	subFieldsSQL = `UPDATE subscriptions SET
		last_success_at = CASE WHEN ?2 <> 0 THEN ?2 ELSE last_success_at END,
		failing_since = ` + settledFailingSince + `,
		version = version + (` + settledFailingSince + ` <> failing_since),
		last_activity_at = CASE WHEN ?4 <> 0 THEN ?4 ELSE last_activity_at END
		WHERE sid = ?1`

	// settledFailingSince is failing_since after subFieldsSQL.
	settledFailingSince = `CASE
			WHEN ?3 <> 0 AND (?2 <> 0 OR failing_since = 0) THEN ?3
			WHEN ?2 <> 0 THEN 0
			ELSE failing_since END`
)

// settleRound holds the rows of a set of items of distinct subscriptions,
// statement by statement, as arguments in the order the statements bind
// them.
type settleRound struct {
	cursors, addRetries, delRetries, dead, deadRetries []any
	unblock                                            [][4]any
	subFields                                          [][4]any
}

func (r *settleRound) add(sid int64, it *herald.SettleItem) {
	for _, c := range it.Cursors {
		r.cursors = append(r.cursors, sid, c.Topic, c.Seq)
	}
	for _, x := range it.AddRetries {
		var due any // NULL: blocked
		if !x.DueAt.IsZero() {
			due = clampNanos(x.DueAt)
		}
		r.addRetries = append(r.addRetries, sid, x.Topic, x.Seq, x.EventID, x.Key, x.Attempt, due, x.LastError)
	}
	for _, c := range it.DoneRetries {
		r.delRetries = append(r.delRetries, sid, c.Topic, c.Seq)
	}
	for _, d := range it.DeadLetters {
		r.dead = append(r.dead, sid, d.Topic, d.Seq, d.EventID, d.Key, d.Attempts, d.LastError, subNanos(d.DeadAt))
		r.deadRetries = append(r.deadRetries, sid, d.Topic, d.Seq)
	}
	if len(it.UnblockKeys) > 0 {
		at := clampNanos(it.UnblockAt)
		seen := make(map[herald.RetryKey]bool, len(it.UnblockKeys))
		for _, k := range it.UnblockKeys {
			if !seen[k] {
				seen[k] = true
				r.unblock = append(r.unblock, [4]any{sid, k.Topic, k.Key, at})
			}
		}
	}
	if !it.LastSuccess.IsZero() || !it.FailingSince.IsZero() || !it.Activity.IsZero() {
		r.subFields = append(r.subFields, [4]any{sid, subNanos(it.LastSuccess), subNanos(it.FailingSince), subNanos(it.Activity)})
	}
}

// apply runs the round's statements in the order of the contract.
func (r *settleRound) apply(ctx context.Context, tx *sql.Tx, st *settleStmts) error {
	if err := execRows(ctx, tx, st.cursors[:], r.cursors, cursorColumns); err != nil {
		return fmt.Errorf("move cursors: %w", err)
	}
	if err := execRows(ctx, tx, st.addRetries[:], r.addRetries, retryColumns); err != nil {
		return fmt.Errorf("add retries: %w", err)
	}
	if err := deleteRetries(ctx, tx, st.delRetry, r.delRetries); err != nil {
		return fmt.Errorf("remove delivered retries: %w", err)
	}
	if err := execRows(ctx, tx, st.dead[:], r.dead, deadColumns); err != nil {
		return fmt.Errorf("add dead letters: %w", err)
	}
	if err := deleteRetries(ctx, tx, st.delRetry, r.deadRetries); err != nil {
		return fmt.Errorf("remove dead retries: %w", err)
	}
	if len(r.unblock) > 0 {
		unblock := tx.StmtContext(ctx, st.unblock)
		defer unblock.Close()
		for _, a := range r.unblock {
			if _, err := unblock.ExecContext(ctx, a[:]...); err != nil {
				return fmt.Errorf("unblock retries: %w", err)
			}
		}
	}
	return nil
}

// deleteRetries removes the retries whose (sid, topic, seq) are in args.
func deleteRetries(ctx context.Context, tx *sql.Tx, st *sql.Stmt, args []any) error {
	if len(args) == 0 {
		return nil
	}
	del := tx.StmtContext(ctx, st)
	defer del.Close()
	for ; len(args) > 0; args = args[retryKeyColumns:] {
		if _, err := del.ExecContext(ctx, args[:retryKeyColumns]...); err != nil {
			return err
		}
	}
	return nil
}

// Settle applies the settlements of many subscriptions in one write
// transaction and returns one error per item; see herald.SubscriptionStore.
//
// Items are applied in order: the first item of each subscription in a
// first round of multi-row statements (one per kind of change, covering
// all those items), a second item of the same subscription in a second
// round, and so on. Attempts, which nothing in a Settle reads, are written
// after the rounds in item order, so their ids increase in item order.
//
// The rows of a topic deleted under the item's epoch (see DeleteTopic and
// migration 0005) are left out of the item: its cursor, retries, dead
// letters and unblocked keys in that topic; the rest applies. All writes go
// through the one writer connection, so a Settle runs wholly before or
// after a DeleteTopic.
//
// Per item, besides CodeConflict and CodeNotFound: CodeInvalid for
// UnblockKeys without UnblockAt.
func (s *Store) Settle(ctx context.Context, items []herald.SettleItem) ([]error, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	errs := make([]error, len(items))
	valid := 0
	for i := range items {
		if len(items[i].UnblockKeys) > 0 && items[i].UnblockAt.IsZero() {
			errs[i] = herald.FieldErrorf("unblock_at", "unblock_at must be set with unblock_keys")
			continue
		}
		valid++
	}
	if valid == 0 {
		return errs, nil
	}
	err := s.withLazyTx(ctx, func(tx *sql.Tx) error { return s.settleTx(ctx, tx, items, errs) })
	if err != nil {
		return nil, s.fail(fmt.Sprintf("settle %d items", len(items)), err)
	}
	return errs, nil
}

func (s *Store) settleTx(ctx context.Context, tx *sql.Tx, items []herald.SettleItem, errs []error) error {
	type subState struct {
		sid, epoch int64
		found      bool
		rounds     int             // items of the subscription placed so far
		fenced     map[string]bool // topics deleted under the epoch
	}
	subs := make(map[string]*subState, len(items))
	epochStmt := tx.StmtContext(ctx, s.settle.epoch)
	defer epochStmt.Close()

	var rounds []*settleRound
	var attempts []any
	nAttempts := 0
	for i := range items {
		it := &items[i]
		if errs[i] != nil {
			continue
		}
		sub := subs[it.SubscriptionID]
		if sub == nil {
			sub = &subState{}
			var fenced bool
			err := epochStmt.QueryRowContext(ctx, it.SubscriptionID).Scan(&sub.sid, &sub.epoch, &fenced)
			switch {
			case err == nil:
				sub.found = true
			case !errors.Is(err, sql.ErrNoRows):
				return fmt.Errorf("look up subscription: %w", err)
			}
			if fenced {
				if sub.fenced, err = fencedTopics(ctx, tx, sub.sid, sub.epoch); err != nil {
					return err
				}
			}
			subs[it.SubscriptionID] = sub
		}
		switch {
		case !sub.found:
			errs[i] = subNotFound(it.SubscriptionID)
			continue
		case sub.epoch != it.Epoch:
			errs[i] = &herald.Error{Code: herald.CodeConflict, Field: "epoch", Message: fmt.Sprintf(
				"the dispatch lease on subscription %s has epoch %d, not %d: another node holds it now", it.SubscriptionID, sub.epoch, it.Epoch)}
			continue
		}
		if sub.rounds == len(rounds) {
			rounds = append(rounds, &settleRound{})
		}
		if len(sub.fenced) > 0 {
			it = &herald.SettleItem{SubscriptionID: it.SubscriptionID, Epoch: it.Epoch,
				Settlement: it.Settlement.WithoutTopics(sub.fenced)}
		}
		rounds[sub.rounds].add(sub.sid, it)
		sub.rounds++
		nAttempts += len(it.Attempts)
	}

	for _, r := range rounds {
		if err := r.apply(ctx, tx, &s.settle); err != nil {
			return err
		}
	}

	if nAttempts > 0 {
		attempts = make([]any, 0, nAttempts*attemptColumns)
		for i := range items {
			it := &items[i]
			if errs[i] != nil {
				continue
			}
			sid := subs[it.SubscriptionID].sid
			for j := range it.Attempts {
				a := &it.Attempts[j]
				attempts = append(attempts, sid, a.Topic, a.Seq, a.EventID, a.Attempt, subNanos(a.Time), string(a.Outcome),
					a.StatusCode, int64(a.Latency), a.Error, []byte(a.Response))
			}
		}
		if err := execRows(ctx, tx, s.settle.attempts[:], attempts, attemptColumns); err != nil {
			return fmt.Errorf("append attempts: %w", err)
		}
	}

	for i := range items {
		it := &items[i]
		if errs[i] != nil || it.Stats == nil {
			continue
		}
		if err := addStats(ctx, tx, subs[it.SubscriptionID].sid, it.SubscriptionID, it.Stats); err != nil {
			return fmt.Errorf("add delivery stats: %w", err)
		}
	}

	var fields *sql.Stmt
	for _, r := range rounds {
		for _, a := range r.subFields {
			if fields == nil {
				fields = tx.StmtContext(ctx, s.settle.subFields)
				defer fields.Close()
			}
			if _, err := fields.ExecContext(ctx, a[:]...); err != nil {
				return fmt.Errorf("record success and failure times: %w", err)
			}
		}
	}
	return nil
}

// fencedTopics returns the topics deleted while the subscription's lease
// had the epoch.
func fencedTopics(ctx context.Context, tx *sql.Tx, sid, epoch int64) (map[string]bool, error) {
	rows, err := tx.QueryContext(ctx, fencedTopicsSQL, sid, epoch)
	if err != nil {
		return nil, fmt.Errorf("read topic fences: %w", err)
	}
	defer rows.Close()
	out := make(map[string]bool)
	for rows.Next() {
		var topic string
		if err := rows.Scan(&topic); err != nil {
			return nil, fmt.Errorf("read topic fences: %w", err)
		}
		out[topic] = true
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read topic fences: %w", err)
	}
	return out, nil
}
