package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/heraldhq/herald"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// lockSubsSQL locks the subscriptions of a Settle in id order (every
// multi-subscription writer locks in this order, so they queue instead of
// deadlocking) and reads their lease epochs. FOR NO KEY UPDATE is the lock
// AcquireLease's UPDATE takes: a lease cannot move while a settlement under
// it is being written.
const lockSubsSQL = `SELECT id, lease_epoch FROM subscriptions WHERE id = ANY($1::text[]) ORDER BY id FOR NO KEY UPDATE`

// settleFencesSQL reads the topics deleted under the current lease epoch
// of the subscriptions a Settle locked (see DeleteTopic): their rows are
// left out of the settlements. It runs after lockSubsSQL as a statement of
// its own, so its snapshot is taken once the locks are held and shows the
// fences of every DeleteTopic that held one of them before.
const settleFencesSQL = `SELECT f.subscription_id, f.topic FROM topic_fences f
	JOIN subscriptions s ON s.id = f.subscription_id
	WHERE f.subscription_id = ANY($1::text[]) AND f.epoch >= s.lease_epoch`

// The statements of a Settle, each applied to the rows of all its items at
// once, one array per column.
const (
	// Cursors only advance; the WHERE spares a row version when they don't.
	settleCursorsSQL = `INSERT INTO cursors AS c (subscription_id, topic, seq)
		SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[])
		ON CONFLICT (subscription_id, topic) DO UPDATE SET seq = excluded.seq WHERE c.seq < excluded.seq`

	// A stored retry is replaced by a due one and kept when the new one is
	// blocked (due_at NULL).
	settleAddRetriesSQL = `INSERT INTO retries AS r (subscription_id, topic, seq, event_id, event_key, attempt, due_at, last_error)
		SELECT s, t, q, i, k, a, nullif(d, 0), e
		FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::bigint[], $7::bigint[], $8::text[])
			AS v(s, t, q, i, k, a, d, e)
		ON CONFLICT (subscription_id, topic, seq) DO UPDATE SET event_id = excluded.event_id,
			event_key = excluded.event_key, attempt = excluded.attempt, due_at = excluded.due_at,
			last_error = excluded.last_error
		WHERE excluded.due_at IS NOT NULL`

	settleDeleteRetriesSQL = `DELETE FROM retries r
		USING unnest($1::text[], $2::text[], $3::bigint[]) AS v(s, t, q)
		WHERE r.subscription_id = v.s AND r.topic = v.t AND r.seq = v.q`

	settleDeadLettersSQL = `INSERT INTO dead_letters (subscription_id, topic, seq, event_id, event_key, attempts, last_error, dead_at)
		SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::bigint[], $7::text[], $8::bigint[])
		ON CONFLICT (subscription_id, topic, seq) DO UPDATE SET event_id = excluded.event_id,
			event_key = excluded.event_key, attempts = excluded.attempts, last_error = excluded.last_error,
			dead_at = excluded.dead_at`

	// A chain with retries but none due gets its lowest seq due (all of
	// its retries are blocked, so that is the lowest blocked one).
	settleUnblockSQL = `UPDATE retries r SET due_at = x.at
		FROM (
			SELECT h.subscription_id, h.topic, h.seq, v.at
			FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[]) AS v(s, t, k, at)
			CROSS JOIN LATERAL (
				SELECT subscription_id, topic, seq FROM retries
				WHERE subscription_id = v.s AND topic = v.t AND event_key = v.k
				ORDER BY seq LIMIT 1) h
			WHERE NOT EXISTS (SELECT 1 FROM retries d
				WHERE d.subscription_id = v.s AND d.topic = v.t AND d.event_key = v.k AND d.due_at IS NOT NULL)
		) x
		WHERE r.subscription_id = x.subscription_id AND r.topic = x.topic AND r.seq = x.seq`

	// Ids are drawn in array order, which is item order.
	settleAttemptsSQL = `INSERT INTO attempts
		(subscription_id, topic, seq, event_id, attempt, time_ns, outcome, status_code, latency, error, response)
		SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::bigint[], $6::bigint[],
			$7::text[], $8::bigint[], $9::bigint[], $10::text[], $11::bytea[])`

	// LastSuccess sets last_success_at and clears failing_since, then
	// FailingSince sets failing_since when it is unset, then Activity.
	// 0 is "not given" in each column of v. A changed failing_since
	// increments the version (SET expressions all see the row as it was
	// before the update).
	settleSubsSQL = `UPDATE subscriptions s SET
			last_success_at = CASE WHEN v.ls <> 0 THEN v.ls ELSE s.last_success_at END,
			failing_since = ` + settledFailingSince + `,
			version = s.version + (` + settledFailingSince + ` <> s.failing_since)::int,
			last_activity_at = CASE WHEN v.act <> 0 THEN v.act ELSE s.last_activity_at END
		FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[]) AS v(id, ls, fs, act)
		WHERE s.id = v.id`

	// settledFailingSince is failing_since after settleSubsSQL.
	settledFailingSince = `CASE
				WHEN v.fs <> 0 AND (v.ls <> 0 OR s.failing_since = 0) THEN v.fs
				WHEN v.ls <> 0 THEN 0
				ELSE s.failing_since END`
)

// settleRows holds the rows of the items of one settle round, column by
// column, in the order the statements take them.
type settleRows struct {
	cur struct {
		sub, topic []string
		seq        []int64
	}
	retry struct {
		sub, topic, id, key, lastErr []string
		seq, attempt, due            []int64
	}
	done struct {
		sub, topic []string
		seq        []int64
	}
	dead struct {
		sub, topic, id, key, lastErr []string
		seq, attempts, at            []int64
	}
	unblock struct {
		sub, topic, key []string
		at              []int64
	}
	subs struct {
		id          []string
		ls, fs, act []int64
	}
}

// attemptRows holds the attempts of a Settle, column by column.
type attemptRows struct {
	sub, topic, id, outcome, err []string
	seq, attempt, time, status   []int64
	latency                      []int64
	resp                         [][]byte
}

type topicSeq struct {
	topic string
	seq   int64
}

// add appends one item's changes. Within an item, rows for the same
// cursor, retry or dead letter are folded first, as applying them one by
// one would leave them: one statement cannot change a row twice.
func (r *settleRows) addItem(it *herald.SettleItem) {
	id := it.SubscriptionID

	cursors := make(map[string]int, len(it.Cursors))
	for _, c := range it.Cursors {
		if i, ok := cursors[c.Topic]; ok {
			r.cur.seq[i] = max(r.cur.seq[i], c.Seq)
			continue
		}
		cursors[c.Topic] = len(r.cur.seq)
		r.cur.sub = append(r.cur.sub, id)
		r.cur.topic = append(r.cur.topic, c.Topic)
		r.cur.seq = append(r.cur.seq, c.Seq)
	}

	retries := make(map[topicSeq]int, len(it.AddRetries))
	for _, x := range it.AddRetries {
		due := nanos(x.DueAt)
		i, ok := retries[topicSeq{x.Topic, x.Seq}]
		if ok && due == 0 {
			continue // blocked: keeps the row added before
		}
		if !ok {
			i = len(r.retry.seq)
			retries[topicSeq{x.Topic, x.Seq}] = i
			r.retry.sub = append(r.retry.sub, id)
			r.retry.topic = append(r.retry.topic, x.Topic)
			r.retry.seq = append(r.retry.seq, x.Seq)
			r.retry.id = append(r.retry.id, "")
			r.retry.key = append(r.retry.key, "")
			r.retry.attempt = append(r.retry.attempt, 0)
			r.retry.due = append(r.retry.due, 0)
			r.retry.lastErr = append(r.retry.lastErr, "")
		}
		r.retry.id[i], r.retry.key[i], r.retry.attempt[i] = x.EventID, x.Key, int64(x.Attempt)
		r.retry.due[i], r.retry.lastErr[i] = due, storableText(x.LastError)
	}

	for _, c := range it.DoneRetries {
		r.done.sub = append(r.done.sub, id)
		r.done.topic = append(r.done.topic, c.Topic)
		r.done.seq = append(r.done.seq, c.Seq)
	}

	dead := make(map[topicSeq]int, len(it.DeadLetters))
	for _, d := range it.DeadLetters {
		i, ok := dead[topicSeq{d.Topic, d.Seq}]
		if !ok {
			i = len(r.dead.seq)
			dead[topicSeq{d.Topic, d.Seq}] = i
			r.dead.sub = append(r.dead.sub, id)
			r.dead.topic = append(r.dead.topic, d.Topic)
			r.dead.seq = append(r.dead.seq, d.Seq)
			r.dead.id = append(r.dead.id, "")
			r.dead.key = append(r.dead.key, "")
			r.dead.attempts = append(r.dead.attempts, 0)
			r.dead.lastErr = append(r.dead.lastErr, "")
			r.dead.at = append(r.dead.at, 0)
		}
		r.dead.id[i], r.dead.key[i], r.dead.attempts[i] = d.EventID, d.Key, int64(d.Attempts)
		r.dead.lastErr[i], r.dead.at[i] = storableText(d.LastError), nanos(d.DeadAt)
	}

	if len(it.UnblockKeys) > 0 {
		at := nanos(it.UnblockAt)
		seen := make(map[herald.RetryKey]bool, len(it.UnblockKeys))
		for _, k := range it.UnblockKeys {
			if seen[k] {
				continue
			}
			seen[k] = true
			r.unblock.sub = append(r.unblock.sub, id)
			r.unblock.topic = append(r.unblock.topic, k.Topic)
			r.unblock.key = append(r.unblock.key, k.Key)
			r.unblock.at = append(r.unblock.at, at)
		}
	}

	if !it.LastSuccess.IsZero() || !it.FailingSince.IsZero() || !it.Activity.IsZero() {
		r.subs.id = append(r.subs.id, id)
		r.subs.ls = append(r.subs.ls, nanos(it.LastSuccess))
		r.subs.fs = append(r.subs.fs, nanos(it.FailingSince))
		r.subs.act = append(r.subs.act, nanos(it.Activity))
	}
}

// queue adds the round's statements to b, in the order of the contract.
func (r *settleRows) queue(b *pgx.Batch) {
	if len(r.cur.seq) > 0 {
		b.Queue(settleCursorsSQL, r.cur.sub, r.cur.topic, r.cur.seq)
	}
	if len(r.retry.seq) > 0 {
		b.Queue(settleAddRetriesSQL, r.retry.sub, r.retry.topic, r.retry.seq, r.retry.id, r.retry.key, r.retry.attempt, r.retry.due, r.retry.lastErr)
	}
	if len(r.done.seq) > 0 {
		b.Queue(settleDeleteRetriesSQL, r.done.sub, r.done.topic, r.done.seq)
	}
	if len(r.dead.seq) > 0 {
		b.Queue(settleDeadLettersSQL, r.dead.sub, r.dead.topic, r.dead.seq, r.dead.id, r.dead.key, r.dead.attempts, r.dead.lastErr, r.dead.at)
		b.Queue(settleDeleteRetriesSQL, r.dead.sub, r.dead.topic, r.dead.seq)
	}
	if len(r.unblock.at) > 0 {
		b.Queue(settleUnblockSQL, r.unblock.sub, r.unblock.topic, r.unblock.key, r.unblock.at)
	}
	if len(r.subs.id) > 0 {
		b.Queue(settleSubsSQL, r.subs.id, r.subs.ls, r.subs.fs, r.subs.act)
	}
}

func (a *attemptRows) add(id string, x *herald.Attempt) {
	a.sub = append(a.sub, id)
	a.topic = append(a.topic, x.Topic)
	a.seq = append(a.seq, x.Seq)
	a.id = append(a.id, x.EventID)
	a.attempt = append(a.attempt, int64(x.Attempt))
	a.time = append(a.time, nanos(x.Time))
	a.outcome = append(a.outcome, string(x.Outcome))
	a.status = append(a.status, int64(x.StatusCode))
	a.latency = append(a.latency, int64(x.Latency))
	a.err = append(a.err, storableText(x.Error))
	a.resp = append(a.resp, []byte(x.Response)) // never nil: the column is NOT NULL
}

// storableText returns s as PostgreSQL can store it in a text column:
// invalid UTF-8 replaced, NUL bytes dropped. Error texts can carry what
// an endpoint answered, and one such text must not fail a whole Settle.
func storableText(s string) string {
	if validText(s) {
		return s
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "")
}

// checkSettleItem reports why the store cannot apply the item as given:
// names that cannot exist in the store (not valid UTF-8, or holding NUL
// bytes) and times out of range fail with CodeInvalid. Error texts are
// made storable instead (storableText).
func checkSettleItem(it *herald.SettleItem) error {
	text := func(field, s string) error {
		if !validText(s) {
			return herald.FieldErrorf(field, "%s must be valid UTF-8 without NUL bytes", field)
		}
		return nil
	}
	times := []namedTime{
		{"unblock_at", it.UnblockAt}, {"last_success", it.LastSuccess},
		{"failing_since", it.FailingSince}, {"activity", it.Activity},
	}
	var errs []error
	for _, c := range it.Cursors {
		errs = append(errs, text("cursors.topic", c.Topic))
	}
	for _, r := range it.AddRetries {
		errs = append(errs, text("add_retries.topic", r.Topic), text("add_retries.event_id", r.EventID), text("add_retries.key", r.Key))
		times = append(times, namedTime{"add_retries.due_at", r.DueAt})
	}
	for _, c := range it.DoneRetries {
		errs = append(errs, text("done_retries.topic", c.Topic))
	}
	for _, d := range it.DeadLetters {
		errs = append(errs, text("dead_letters.topic", d.Topic), text("dead_letters.event_id", d.EventID), text("dead_letters.key", d.Key))
		times = append(times, namedTime{"dead_letters.dead_at", d.DeadAt})
	}
	for _, k := range it.UnblockKeys {
		errs = append(errs, text("unblock_keys.topic", k.Topic), text("unblock_keys.key", k.Key))
	}
	if len(it.UnblockKeys) > 0 && it.UnblockAt.IsZero() {
		errs = append(errs, herald.FieldErrorf("unblock_at", "unblock_at must be set with unblock_keys"))
	}
	for _, a := range it.Attempts {
		errs = append(errs, text("attempts.topic", a.Topic), text("attempts.event_id", a.EventID), text("attempts.outcome", string(a.Outcome)))
		times = append(times, namedTime{"attempts.time", a.Time})
	}
	errs = append(errs, checkTimes(times...))
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// Settle applies the settlements of many subscriptions in one transaction
// and returns one error per item. See herald.SubscriptionStore.
//
// It takes two round trips to the server whatever the number of items:
// the first begins the transaction, locks the items' subscription rows in
// id order and reads their lease epochs; the second writes every applied
// item's changes, a handful of statements each covering all items, and
// commits. Items are applied in order: the first item of each subscription
// goes in a first round of statements, a second item of the same
// subscription in a second round after it, and so on. Attempts, which
// nothing else reads during a Settle, are written by one statement after
// the rounds, in item order, so their ids increase in item order.
//
// The rows of a topic deleted under the item's epoch (see DeleteTopic and
// migration 0005) are left out of the item: its cursor, retries, dead
// letters and unblocked keys in that topic; the rest applies. DeleteTopic
// holds the row locks of the subscriptions it fences while it deletes their
// rows, so a Settle either commits before it (and its rows are deleted) or
// reads the fences after it.
//
// Per item, besides CodeConflict and CodeNotFound: CodeInvalid for names
// that are not valid UTF-8 or hold NUL bytes, times out of range, or
// UnblockKeys without UnblockAt. Error texts and response excerpts are
// stored whatever they hold (invalid UTF-8 is replaced, NUL bytes dropped,
// in error texts).
//
// As with Append, the caller's context can cancel the first round trip but
// not the second, which carries the COMMIT; when the connection fails
// during it, the error says the outcome is unknown.
func (s *Store) Settle(ctx context.Context, items []herald.SettleItem) ([]error, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	errs := make([]error, len(items))
	var ids []string
	seen := make(map[string]bool, len(items))
	for i := range items {
		it := &items[i]
		if !validText(it.SubscriptionID) {
			errs[i] = subNotFound(it.SubscriptionID)
			continue
		}
		if err := checkSettleItem(it); err != nil {
			errs[i] = err
			continue
		}
		if !seen[it.SubscriptionID] {
			seen[it.SubscriptionID] = true
			ids = append(ids, it.SubscriptionID)
		}
	}
	if len(ids) == 0 {
		return errs, nil
	}

	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, s.fail("settle: acquire a connection", err)
	}
	defer conn.Release()
	committed := false
	defer func() {
		if !committed {
			rollback(conn)
		}
	}()

	// Round trip 1: begin, lock the subscriptions, read their epochs and
	// fences.
	epochs := make(map[string]int64, len(ids))
	var fenced map[string]map[string]bool // subscription -> topics
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	// A settlement lost in a crash of the database server only repeats
	// deliveries, which at-least-once allows, so its commit does not wait
	// for the WAL flush. For this transaction alone: a later synchronous
	// commit (a publish) flushes the WAL up to itself, this one included.
	// See docs/adr/0006-settlements-skip-the-sync.md.
	b.Queue(`SET LOCAL synchronous_commit = off`)
	b.Queue(lockSubsSQL, ids).Query(func(rows pgx.Rows) error {
		var id string
		var epoch int64
		_, err := pgx.ForEachRow(rows, []any{&id, &epoch}, func() error {
			epochs[id] = epoch
			return nil
		})
		return err
	})
	b.Queue(settleFencesSQL, ids).Query(func(rows pgx.Rows) error {
		var id, topic string
		_, err := pgx.ForEachRow(rows, []any{&id, &topic}, func() error {
			if fenced == nil {
				fenced = make(map[string]map[string]bool)
			}
			if fenced[id] == nil {
				fenced[id] = make(map[string]bool)
			}
			fenced[id][topic] = true
			return nil
		})
		return err
	})
	if err := conn.SendBatch(ctx, b).Close(); err != nil {
		return nil, s.fail("settle: lock subscriptions", err)
	}

	// Decide each item; spread the applied ones over rounds.
	var rounds []*settleRows
	var attempts attemptRows
	var withStats []*herald.SettleItem
	round := make(map[string]int, len(ids)) // subscription -> its next round
	for i := range items {
		if errs[i] != nil {
			continue
		}
		it := &items[i]
		epoch, ok := epochs[it.SubscriptionID]
		switch {
		case !ok:
			errs[i] = subNotFound(it.SubscriptionID)
			continue
		case epoch != it.Epoch:
			errs[i] = &herald.Error{Code: herald.CodeConflict, Field: "epoch", Message: fmt.Sprintf(
				"the dispatch lease on subscription %s has epoch %d, not %d: another node holds it now", it.SubscriptionID, epoch, it.Epoch)}
			continue
		}
		n := round[it.SubscriptionID]
		round[it.SubscriptionID] = n + 1
		if n == len(rounds) {
			rounds = append(rounds, &settleRows{})
		}
		if topics := fenced[it.SubscriptionID]; len(topics) > 0 {
			it = &herald.SettleItem{SubscriptionID: it.SubscriptionID, Epoch: it.Epoch,
				Settlement: it.Settlement.WithoutTopics(topics)}
		}
		rounds[n].addItem(it)
		for j := range it.Attempts {
			attempts.add(it.SubscriptionID, &it.Attempts[j])
		}
		if it.Stats != nil {
			withStats = append(withStats, it)
		}
	}

	// Round trip 2: write and commit (see Append on why the caller's
	// cancellation is ignored from here on).
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), writeTimeout)
	defer cancel()
	w := &pgx.Batch{}
	for _, r := range rounds {
		r.queue(w)
	}
	if len(attempts.seq) > 0 {
		a := &attempts
		w.Queue(settleAttemptsSQL, a.sub, a.topic, a.seq, a.id, a.attempt, a.time, a.outcome, a.status, a.latency, a.err, a.resp)
	}
	for _, it := range withStats {
		if err := queueStats(w, it.SubscriptionID, it.Stats); err != nil {
			return nil, s.fail("settle: encode delivery stats", err)
		}
	}
	w.Queue("COMMIT").Exec(func(tag pgconn.CommandTag) error {
		if tag.String() != "COMMIT" {
			return fmt.Errorf("commit ended in %q", tag)
		}
		committed = true
		return nil
	})
	if err := conn.SendBatch(wctx, w).Close(); err != nil {
		return nil, s.settleFailed(err)
	}
	return errs, nil
}

// settleFailed reports a failed write-and-commit round trip of a Settle,
// as commitFailed does for an Append.
func (s *Store) settleFailed(err error) error {
	err = s.fail("settle: commit", err)
	if _, answered := errors.AsType[*pgconn.PgError](err); !answered {
		if e, ok := errors.AsType[*herald.Error](err); ok {
			e.Message = "the store did not confirm the commit; the settlements may or may not have been applied"
		}
	}
	return err
}
