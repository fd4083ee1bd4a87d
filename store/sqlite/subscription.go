package sqlite

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/heraldhq/herald"
)

var _ herald.SubscriptionStore = (*Store)(nil)

// subColumns are the stored fields of a subscription that callers write,
// in the order subArgs binds them. scanSubscription reads subReadColumns:
// these and the version, which only the store writes.
const subColumns = `id, topic, channel, config, description, filter, retry_max_attempts, retry_initial, retry_max,
	timeout, max_in_flight, rate_limit, ordered, expires_after_idle, state, state_reason, challenge, verify_deadline,
	next_challenge_at, challenge_tries, owner_key_id, created_at, updated_at, last_activity_at, last_success_at,
	failing_since, tenant`

// subReadColumns are what scanSubscription reads.
const subReadColumns = subColumns + `, version`

// The read pool's statements of subscriptions and cursors.
const (
	getSubSQL  = `SELECT ` + subReadColumns + ` FROM subscriptions WHERE id = ?`
	cursorsSQL = `SELECT topic, seq FROM cursors WHERE ` + subSID + ` ORDER BY topic`
)

// subNanos is nanos for any time: the zero time is 0, and times beyond the
// int64 nanosecond range (years before 1678 or after 2262) are clamped.
func subNanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return clampNanos(t)
}

func subArgs(s *herald.Subscription) []any {
	var filter []byte
	if len(s.Filter) > 0 {
		filter = s.Filter
	}
	config := []byte(s.Config)
	if len(config) == 0 {
		config = []byte("{}")
	}
	channel := cmp.Or(s.Channel, herald.ChannelWebhook)
	ordered := 0
	if s.Ordered {
		ordered = 1
	}
	return []any{s.ID, s.Topic, channel, config, s.Description, filter, s.Retry.MaxAttempts, int64(s.Retry.Initial),
		int64(s.Retry.Max), int64(s.Timeout), s.MaxInFlight, s.RateLimit, ordered, int64(s.ExpiresAfterIdle),
		string(s.State), s.StateReason, s.Challenge, subNanos(s.VerifyDeadline), subNanos(s.NextChallengeAt), s.ChallengeTries, s.OwnerKeyID,
		subNanos(s.CreatedAt), subNanos(s.UpdatedAt), subNanos(s.LastActivityAt), subNanos(s.LastSuccessAt),
		subNanos(s.FailingSince), s.Tenant}
}

func scanSubscription(sc interface{ Scan(...any) error }) (herald.Subscription, error) {
	var s herald.Subscription
	var filter, config []byte
	var initial, maxDelay, timeout, idle, deadline, nextChallenge int64
	var created, updated, activity, success, failing int64
	var ordered int
	var state string
	err := sc.Scan(&s.ID, &s.Topic, &s.Channel, &config, &s.Description, &filter, &s.Retry.MaxAttempts, &initial,
		&maxDelay, &timeout, &s.MaxInFlight, &s.RateLimit, &ordered, &idle, &state, &s.StateReason, &s.Challenge,
		&deadline, &nextChallenge, &s.ChallengeTries, &s.OwnerKeyID, &created, &updated, &activity, &success,
		&failing, &s.Tenant, &s.Version)
	if err != nil {
		return herald.Subscription{}, err
	}
	if len(filter) > 0 {
		s.Filter = filter
	}
	s.Config = config
	s.Retry.Initial, s.Retry.Max = time.Duration(initial), time.Duration(maxDelay)
	s.Timeout, s.ExpiresAfterIdle = time.Duration(timeout), time.Duration(idle)
	s.Ordered, s.State = ordered != 0, herald.SubscriptionState(state)
	s.VerifyDeadline, s.NextChallengeAt = fromNanos(deadline), fromNanos(nextChallenge)
	s.CreatedAt, s.UpdatedAt, s.LastActivityAt = fromNanos(created), fromNanos(updated), fromNanos(activity)
	s.LastSuccessAt, s.FailingSince = fromNanos(success), fromNanos(failing)
	return s, nil
}

func subNotFound(id string) error {
	return &herald.Error{Code: herald.CodeNotFound, Field: "id", Message: "subscription " + id + " does not exist"}
}

// subChanged is UpdateSubscription's CodeConflict: the caller's copy of
// the subscription is older than the stored one.
func subChanged(id string, have, stored int64) error {
	return &herald.Error{Code: herald.CodeConflict, Message: fmt.Sprintf(
		"subscription %s changed since it was read (read version %d, stored version %d); read it again and retry", id, have, stored)}
}

// lookUpSub returns the subscription's sid in a write transaction, or
// CodeNotFound.
func lookUpSub(ctx context.Context, tx *sql.Tx, id string) (int64, error) {
	var sid int64
	err := tx.QueryRowContext(ctx, `SELECT sid FROM subscriptions WHERE id = ?`, id).Scan(&sid)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, subNotFound(id)
	}
	return sid, err
}

// CreateSubscription stores a new subscription and sets its cursors in
// every existing topic it matches, in one transaction; see
// herald.SubscriptionStore. Of the start options, Earliest wins over Seq
// and Seq over Time; a Seq applies to every matching topic. A zero
// CreatedAt is set to the current time and a zero UpdatedAt to CreatedAt.
//
// CodeConflict if the ID exists; CodeInvalid for an empty ID or a topic
// that is neither a valid name nor a valid pattern.
func (s *Store) CreateSubscription(ctx context.Context, sub herald.Subscription, start herald.StartPosition) error {
	if err := s.checkOpen(); err != nil {
		return err
	}
	if sub.ID == "" {
		return herald.FieldErrorf("id", "the subscription id is empty")
	}
	if err := herald.ValidatePattern(sub.Topic); err != nil {
		return err
	}
	if sub.CreatedAt.IsZero() {
		sub.CreatedAt = time.Now()
	}
	if sub.UpdatedAt.IsZero() {
		sub.UpdatedAt = sub.CreatedAt
	}
	err := s.withTx(ctx, func(tx *sql.Tx) error {
		var sid int64
		err := tx.QueryRowContext(ctx, `INSERT INTO subscriptions (`+subColumns+`) VALUES
			(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING sid`,
			subArgs(&sub)...).Scan(&sid)
		if err != nil {
			return err
		}
		return startCursors(ctx, tx, sid, sub.Topic, start)
	})
	if err != nil {
		err = s.fail("create subscription", err)
		if e, ok := errors.AsType[*herald.Error](err); ok && e.Code == herald.CodeConflict {
			e.Field, e.Message = "id", "subscription "+sub.ID+" already exists"
		}
		return err
	}
	return nil
}

// startCursors sets a new subscription's cursor in each existing topic its
// topic or pattern matches.
func startCursors(ctx context.Context, tx *sql.Tx, sid int64, pattern string, start herald.StartPosition) error {
	type target struct {
		name     string
		id, head int64
	}
	var targets []target
	if !herald.IsPattern(pattern) {
		var t target
		err := tx.QueryRowContext(ctx, `SELECT name, id, head_seq FROM topics WHERE name = ?`, pattern).Scan(&t.name, &t.id, &t.head)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("look up topic: %w", err)
		}
		targets = append(targets, t)
	} else {
		// The literal prefix (segments before the first wildcard) narrows
		// the scan of the name index; MatchTopic decides.
		lo, hi := patternRange(pattern)
		q, args := `SELECT name, id, head_seq FROM topics WHERE name >= ?`, []any{lo}
		if hi != "" {
			q += ` AND name < ?`
			args = append(args, hi)
		}
		rows, err := tx.QueryContext(ctx, q+` ORDER BY name`, args...)
		if err != nil {
			return fmt.Errorf("list topics: %w", err)
		}
		for rows.Next() {
			var t target
			if err := rows.Scan(&t.name, &t.id, &t.head); err != nil {
				rows.Close()
				return err
			}
			if herald.MatchTopic(pattern, t.name) {
				targets = append(targets, t)
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("list topics: %w", err)
		}
	}
	for _, t := range targets {
		seq := t.head
		var first sql.NullInt64
		switch {
		case start.Earliest:
			if err := tx.QueryRowContext(ctx, `SELECT min(seq) FROM events WHERE topic_id = ?`, t.id).Scan(&first); err != nil {
				return fmt.Errorf("first seq of %s: %w", t.name, err)
			}
		case start.Seq > 0:
			seq = start.Seq
		case !start.Time.IsZero():
			if err := tx.QueryRowContext(ctx, `SELECT min(seq) FROM events WHERE topic_id = ? AND time >= ?`,
				t.id, clampNanos(start.Time)).Scan(&first); err != nil {
				return fmt.Errorf("seq at time in %s: %w", t.name, err)
			}
		}
		if first.Valid {
			seq = first.Int64 - 1
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO cursors (sid, topic, seq) VALUES (?, ?, ?)`, sid, t.name, seq); err != nil {
			return fmt.Errorf("set cursor in %s: %w", t.name, err)
		}
	}
	return nil
}

// patternRange returns the range of names [lo, hi) that can match the
// pattern: names starting with its literal prefix. hi is "" for no bound.
func patternRange(pattern string) (lo, hi string) {
	var b strings.Builder
	for seg := range strings.SplitSeq(pattern, ".") {
		if seg == "*" || seg == ">" {
			break
		}
		b.WriteString(seg)
		b.WriteByte('.')
	}
	lo = b.String()
	if lo == "" {
		return "", ""
	}
	// The prefix ends in '.', so the next byte value bounds it.
	return lo, lo[:len(lo)-1] + string(rune('.'+1))
}

// GetSubscription returns the subscription, or CodeNotFound.
func (s *Store) GetSubscription(ctx context.Context, id string) (herald.Subscription, error) {
	if err := s.checkOpen(); err != nil {
		return herald.Subscription{}, err
	}
	sub, err := scanSubscription(s.rGetSub.QueryRowContext(ctx, id))
	if errors.Is(err, sql.ErrNoRows) {
		return herald.Subscription{}, subNotFound(id)
	}
	if err != nil {
		return herald.Subscription{}, s.fail("get subscription", err)
	}
	return sub, nil
}

// ListSubscriptions returns the subscriptions whose IDs sort after f.After
// in byte order, in that order, with the state and owner f asks for, at
// most f.Limit of them (a Limit below 1 means no limit).
func (s *Store) ListSubscriptions(ctx context.Context, f herald.SubscriptionFilter) ([]herald.Subscription, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	q := `SELECT ` + subReadColumns + ` FROM subscriptions WHERE id > ?`
	args := []any{f.After}
	if f.State != "" {
		q += ` AND state = ?`
		args = append(args, string(f.State))
	}
	if f.Owner != "" {
		q += ` AND owner_key_id = ?`
		args = append(args, f.Owner)
	}
	if f.Tenant != "" {
		q += ` AND tenant = ?`
		args = append(args, f.Tenant)
	}
	q += ` ORDER BY id`
	if f.Limit > 0 {
		q += ` LIMIT ?`
		args = append(args, f.Limit)
	}
	rows, err := s.reader.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, s.fail("list subscriptions", err)
	}
	defer rows.Close()
	var out []herald.Subscription
	for rows.Next() {
		sub, err := scanSubscription(rows)
		if err != nil {
			return nil, s.fail("list subscriptions", err)
		}
		out = append(out, sub)
	}
	if err := rows.Err(); err != nil {
		return nil, s.fail("list subscriptions", err)
	}
	return out, nil
}

// UpdateSubscription replaces the stored subscription's fields except ID,
// Topic, Channel, CreatedAt, OwnerKeyID, Tenant and Version (and the lease, which only
// AcquireLease and ReleaseLease change) if sub.Version is the stored
// version, and increments it. CodeNotFound if missing; CodeConflict if
// the version differs.
func (s *Store) UpdateSubscription(ctx context.Context, sub herald.Subscription) error {
	if err := s.checkOpen(); err != nil {
		return err
	}
	a := subArgs(&sub)
	// a: id, topic, channel, config .. challenge_tries (index 19),
	// owner_key_id (20), created_at (21), updated_at .. failing_since,
	// tenant (last).
	args := append(append(append([]any{}, a[3:20]...), a[22:len(a)-1]...), a[0], sub.Version)
	err := s.withTx(ctx, func(tx *sql.Tx) error {
		n, err := execCount(ctx, tx, `UPDATE subscriptions SET config = ?, description = ?, filter = ?,
			retry_max_attempts = ?, retry_initial = ?, retry_max = ?, timeout = ?, max_in_flight = ?, rate_limit = ?,
			ordered = ?, expires_after_idle = ?, state = ?, state_reason = ?, challenge = ?, verify_deadline = ?,
			next_challenge_at = ?, challenge_tries = ?,
			updated_at = ?, last_activity_at = MAX(last_activity_at, ?), last_success_at = MAX(last_success_at, ?),
			failing_since = ?, version = version + 1
			WHERE id = ? AND version = ?`, args...)
		if err != nil || n > 0 {
			return err
		}
		var version int64
		err = tx.QueryRowContext(ctx, `SELECT version FROM subscriptions WHERE id = ?`, sub.ID).Scan(&version)
		if errors.Is(err, sql.ErrNoRows) {
			return subNotFound(sub.ID)
		}
		if err != nil {
			return err
		}
		return subChanged(sub.ID, sub.Version, version)
	})
	return s.fail("update subscription", err)
}

// DeleteSubscription removes the subscription with its cursors, retries,
// dead letters, attempts and lease in one transaction, or returns
// CodeNotFound.
func (s *Store) DeleteSubscription(ctx context.Context, id string) error {
	if err := s.checkOpen(); err != nil {
		return err
	}
	err := s.withTx(ctx, func(tx *sql.Tx) error {
		var sid int64
		err := tx.QueryRowContext(ctx, `DELETE FROM subscriptions WHERE id = ? RETURNING sid`, id).Scan(&sid)
		if errors.Is(err, sql.ErrNoRows) {
			return subNotFound(id)
		}
		if err != nil {
			return err
		}
		for _, table := range []string{"cursors", "retries", "dead_letters", "attempts", "topic_fences", "delivery_stats"} {
			if _, err := tx.ExecContext(ctx, `DELETE FROM `+table+` WHERE sid = ?`, sid); err != nil {
				return fmt.Errorf("delete %s: %w", table, err)
			}
		}
		return nil
	})
	return s.fail("delete subscription", err)
}

// Cursors returns the subscription's cursors in topic order; none for an
// unknown subscription.
func (s *Store) Cursors(ctx context.Context, id string) ([]herald.Cursor, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	rows, err := s.rCursors.QueryContext(ctx, id)
	if err != nil {
		return nil, s.fail("read cursors", err)
	}
	defer rows.Close()
	var out []herald.Cursor
	for rows.Next() {
		var c herald.Cursor
		if err := rows.Scan(&c.Topic, &c.Seq); err != nil {
			return nil, s.fail("read cursors", err)
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, s.fail("read cursors", err)
	}
	return out, nil
}

// DispatchStates returns the cursors of each of the subscriptions that
// exists, and whether its retry set has rows, in two queries.
func (s *Store) DispatchStates(ctx context.Context, ids []string) (map[string]herald.DispatchState, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	out := make(map[string]herald.DispatchState, len(ids))
	for chunk := range slices.Chunk(ids, 500) {
		args := make([]any, len(chunk))
		for i, id := range chunk {
			args[i] = id
		}
		in := strings.Repeat("?,", len(chunk))
		in = in[:len(in)-1]
		rows, err := s.reader.QueryContext(ctx, `SELECT s.id, c.topic, c.seq FROM subscriptions s JOIN cursors c ON c.sid = s.sid WHERE s.id IN (`+in+`)`, args...)
		if err != nil {
			return nil, s.fail("read dispatch states", err)
		}
		for rows.Next() {
			var id string
			var c herald.Cursor
			if err := rows.Scan(&id, &c.Topic, &c.Seq); err != nil {
				rows.Close()
				return nil, s.fail("read dispatch states", err)
			}
			st := out[id]
			st.Cursors = append(st.Cursors, c)
			out[id] = st
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, s.fail("read dispatch states", err)
		}
		rows, err = s.reader.QueryContext(ctx, `SELECT s.id FROM subscriptions s WHERE s.id IN (`+in+`)
			AND EXISTS (SELECT 1 FROM retries r WHERE r.sid = s.sid)`, args...)
		if err != nil {
			return nil, s.fail("read dispatch states", err)
		}
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return nil, s.fail("read dispatch states", err)
			}
			st := out[id]
			st.Retries = true
			out[id] = st
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, s.fail("read dispatch states", err)
		}
	}
	return out, nil
}
