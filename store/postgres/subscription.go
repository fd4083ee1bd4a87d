package postgres

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/heraldhq/herald"
	"github.com/jackc/pgx/v5"
)

var _ herald.SubscriptionStore = (*Store)(nil)

// subColumns are the stored fields of a herald.Subscription that callers
// write, in the order of subArgs. The lease columns are not among them:
// only AcquireLease and ReleaseLease write those. scanSubscription reads
// subReadColumns: these and the version, which only the store writes.
const subColumns = `id, topic, channel, config, description, filter,
	retry_max_attempts, retry_initial, retry_max, timeout, max_in_flight, rate_limit, ordered, expires_after_idle,
	state, state_reason, challenge, verify_deadline, next_challenge_at, challenge_tries,
	owner_key_id, created_at, updated_at, last_activity_at, last_success_at, failing_since, tenant`

// subReadColumns are what scanSubscription reads.
const subReadColumns = subColumns + `, version`

// subTimes lists the subscription's times with their field names, for
// range checks.
func subTimes(s *herald.Subscription) []namedTime {
	return []namedTime{
		{"verify_deadline", s.VerifyDeadline},
		{"next_challenge_at", s.NextChallengeAt}, {"created_at", s.CreatedAt}, {"updated_at", s.UpdatedAt},
		{"last_activity_at", s.LastActivityAt}, {"last_success_at", s.LastSuccessAt}, {"failing_since", s.FailingSince},
	}
}

type namedTime struct {
	field string
	t     time.Time
}

// checkTimes fails with CodeInvalid, naming the field, when a time cannot
// be stored as nanoseconds.
func checkTimes(ts ...namedTime) error {
	for _, nt := range ts {
		if !inNanosRange(nt.t) {
			return herald.FieldErrorf(nt.field, "%s must be between %s and %s", nt.field, minTime.UTC(), maxTime.UTC())
		}
	}
	return nil
}

// subArgs returns the values of subColumns for s, after checking what the
// database would otherwise refuse less clearly.
func subArgs(s *herald.Subscription) ([]any, error) {
	if err := checkTimes(subTimes(s)...); err != nil {
		return nil, err
	}
	var filter []byte
	if len(s.Filter) > 0 {
		filter = s.Filter
	}
	config := []byte(s.Config)
	if len(config) == 0 {
		config = []byte("{}")
	}
	return []any{
		s.ID, s.Topic, cmp.Or(s.Channel, herald.ChannelWebhook), config, s.Description, filter,
		int64(s.Retry.MaxAttempts), int64(s.Retry.Initial), int64(s.Retry.Max), int64(s.Timeout),
		int64(s.MaxInFlight), s.RateLimit, s.Ordered, int64(s.ExpiresAfterIdle),
		string(s.State), s.StateReason, s.Challenge, nanos(s.VerifyDeadline), nanos(s.NextChallengeAt), int64(s.ChallengeTries),
		s.OwnerKeyID, nanos(s.CreatedAt), nanos(s.UpdatedAt), nanos(s.LastActivityAt), nanos(s.LastSuccessAt), nanos(s.FailingSince),
		s.Tenant,
	}, nil
}

func scanSubscription(row pgx.Row) (herald.Subscription, error) {
	var s herald.Subscription
	var filter, config []byte
	var maxAttempts, initial, maxDelay, timeout, maxInFlight, idle, tries int64
	var state string
	var deadline, nextChallenge, created, updated, activity, success, failing int64
	err := row.Scan(&s.ID, &s.Topic, &s.Channel, &config, &s.Description, &filter,
		&maxAttempts, &initial, &maxDelay, &timeout, &maxInFlight, &s.RateLimit, &s.Ordered, &idle,
		&state, &s.StateReason, &s.Challenge, &deadline, &nextChallenge, &tries,
		&s.OwnerKeyID, &created, &updated, &activity, &success, &failing, &s.Tenant, &s.Version)
	if err != nil {
		return herald.Subscription{}, err
	}
	if filter != nil {
		s.Filter = json.RawMessage(filter)
	}
	s.Config = config
	s.Retry = herald.RetryPolicy{MaxAttempts: int(maxAttempts), Initial: time.Duration(initial), Max: time.Duration(maxDelay)}
	s.Timeout, s.MaxInFlight, s.ExpiresAfterIdle = time.Duration(timeout), int(maxInFlight), time.Duration(idle)
	s.State, s.ChallengeTries = herald.SubscriptionState(state), int(tries)
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

// startCursorsSQL sets a new subscription's cursors in the topics named by
// $2, per the StartPosition: $3 earliest, $4 a seq, $5 a time (0 = none).
// "Before the first event at or after the time" is that event's seq - 1,
// or the head when no event is that late.
const startCursorsSQL = `INSERT INTO cursors (subscription_id, topic, seq)
	SELECT $1, t.name, CASE
		WHEN $3::boolean THEN coalesce((SELECT e.seq FROM events e WHERE e.topic_id = t.id ORDER BY e.seq LIMIT 1) - 1, t.head_seq)
		WHEN $4::bigint > 0 THEN $4::bigint
		WHEN $5::bigint <> 0 THEN coalesce((SELECT min(e.seq) FROM events e WHERE e.topic_id = t.id AND e.time_ns >= $5::bigint) - 1, t.head_seq)
		ELSE t.head_seq END
	FROM topics t WHERE t.name = ANY($2::text[])`

// CreateSubscription stores a new subscription and sets its cursors in
// every existing topic it matches, all in one transaction. See
// herald.SubscriptionStore. Of the start options, Earliest wins over Seq,
// and Seq over Time; a Seq applies to every matching topic. A zero
// CreatedAt is set to the current time and a zero UpdatedAt to CreatedAt.
//
// CodeConflict if the ID exists; CodeInvalid for an empty ID, a topic that
// is not a valid name or pattern, times out of range, or text that is not
// valid UTF-8 or holds NUL bytes.
//
// Once EnableNotify has been called, CreateSubscription,
// UpdateSubscription and DeleteSubscription each also announce a change
// they committed to the other nodes (notify.go).
func (s *Store) CreateSubscription(ctx context.Context, sub herald.Subscription, start herald.StartPosition) error {
	if err := s.checkOpen(); err != nil {
		return err
	}
	if sub.ID == "" || !validText(sub.ID) {
		return herald.FieldErrorf("id", "the subscription id must be non-empty UTF-8 without NUL bytes")
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
	args, err := subArgs(&sub)
	if err != nil {
		return err
	}
	var at int64 // a time outside the stored range is before or after every event
	switch {
	case start.Time.IsZero():
	case start.Time.Before(minTime):
		at = minTime.UnixNano()
	case start.Time.After(maxTime):
		at = maxTime.UnixNano()
	default:
		at = start.Time.UnixNano()
	}
	err = s.inTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO subscriptions (`+subColumns+`) VALUES
			($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20,
			 $21, $22, $23, $24, $25, $26, $27)`, args...); err != nil {
			return err
		}
		names := []string{sub.Topic}
		if herald.IsPattern(sub.Topic) {
			var err error
			if names, err = matchingTopics(ctx, tx, sub.Topic); err != nil {
				return err
			}
		}
		if len(names) == 0 {
			return nil
		}
		_, err := tx.Exec(ctx, startCursorsSQL, sub.ID, names, start.Earliest, start.Seq, at)
		return err
	})
	if err != nil {
		err = s.fail("create subscription", err)
		if e, ok := errors.AsType[*herald.Error](err); ok && e.Code == herald.CodeConflict {
			e.Field, e.Message = "id", "subscription "+sub.ID+" already exists"
		}
		return err
	}
	s.announceSubscriptionChange(ctx, sub.ID)
	return nil
}

// matchingTopics returns the names of the topics that match the pattern.
// The index on names narrows them to the pattern's literal prefix (the
// segments before the first wildcard); herald.MatchTopic decides.
func matchingTopics(ctx context.Context, tx pgx.Tx, pattern string) ([]string, error) {
	prefix := ""
	for seg := range strings.SplitSeq(pattern, ".") {
		if seg == "*" || seg == ">" {
			break
		}
		prefix += seg + "."
	}
	// Names hold [A-Za-z0-9_-.]: only '_' is special to LIKE.
	like := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(prefix) + "%"
	rows, err := tx.Query(ctx, `SELECT name FROM topics WHERE name LIKE $1 ORDER BY name`, like)
	if err != nil {
		return nil, err
	}
	all, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, err
	}
	out := all[:0]
	for _, name := range all {
		if herald.MatchTopic(pattern, name) {
			out = append(out, name)
		}
	}
	return out, nil
}

// GetSubscription returns the subscription, or CodeNotFound.
func (s *Store) GetSubscription(ctx context.Context, id string) (herald.Subscription, error) {
	if err := s.checkOpen(); err != nil {
		return herald.Subscription{}, err
	}
	if !validText(id) {
		return herald.Subscription{}, subNotFound(id)
	}
	sub, err := scanSubscription(s.pool.QueryRow(ctx, `SELECT `+subReadColumns+` FROM subscriptions WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
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
	if !validText(f.After) {
		return nil, herald.FieldErrorf("after", "the page cursor is not a subscription id")
	}
	if !validText(string(f.State)) || !validText(f.Owner) || !validText(f.Tenant) {
		return nil, nil // no stored subscription has it
	}
	q := `SELECT ` + subReadColumns + ` FROM subscriptions WHERE id > $1`
	args := []any{f.After}
	if f.State != "" {
		args = append(args, string(f.State))
		q += fmt.Sprintf(` AND state = $%d`, len(args))
	}
	if f.Owner != "" {
		args = append(args, f.Owner)
		q += fmt.Sprintf(` AND owner_key_id = $%d`, len(args))
	}
	if f.Tenant != "" {
		args = append(args, f.Tenant)
		q += fmt.Sprintf(` AND tenant = $%d`, len(args))
	}
	q += ` ORDER BY id`
	if f.Limit > 0 {
		args = append(args, f.Limit)
		q += fmt.Sprintf(` LIMIT $%d`, len(args))
	}
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, s.fail("list subscriptions", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (herald.Subscription, error) { return scanSubscription(row) })
	if err != nil {
		return nil, s.fail("list subscriptions", err)
	}
	return out, nil
}

// UpdateSubscription replaces the stored subscription's fields except ID,
// Topic, Channel, CreatedAt, OwnerKeyID, Tenant and Version (and the lease, which only
// AcquireLease and ReleaseLease change) if sub.Version is the stored
// version, and increments it. CodeNotFound if missing; CodeConflict if the
// version differs; CodeInvalid as for CreateSubscription.
//
// The version check is in the UPDATE's WHERE: a concurrent writer of the
// row makes it wait for that writer's commit and check the new version.
func (s *Store) UpdateSubscription(ctx context.Context, sub herald.Subscription) error {
	if err := s.checkOpen(); err != nil {
		return err
	}
	if !validText(sub.ID) {
		return subNotFound(sub.ID)
	}
	args, err := subArgs(&sub)
	if err != nil {
		return err
	}
	// $1 the id, then subColumns from config to challenge_tries, then
	// updated_at to the end.
	upd := append(append(append([]any{args[0]}, args[3:20]...), args[22:len(args)-1]...), sub.Version)
	n, err := s.exec(ctx, `UPDATE subscriptions SET config = $2, description = $3, filter = $4,
		retry_max_attempts = $5, retry_initial = $6, retry_max = $7, timeout = $8, max_in_flight = $9,
		rate_limit = $10, ordered = $11, expires_after_idle = $12, state = $13, state_reason = $14,
		challenge = $15, verify_deadline = $16, next_challenge_at = $17, challenge_tries = $18, updated_at = $19,
		last_activity_at = GREATEST(last_activity_at, $20), last_success_at = GREATEST(last_success_at, $21),
		failing_since = $22, version = version + 1
		WHERE id = $1 AND version = $23`, upd...)
	if err != nil {
		return s.fail("update subscription", err)
	}
	if n > 0 {
		s.announceSubscriptionChange(ctx, sub.ID)
		return nil
	}
	var version int64
	err = s.pool.QueryRow(ctx, `SELECT version FROM subscriptions WHERE id = $1`, sub.ID).Scan(&version)
	if errors.Is(err, pgx.ErrNoRows) {
		return subNotFound(sub.ID)
	}
	if err != nil {
		return s.fail("update subscription", err)
	}
	return subChanged(sub.ID, sub.Version, version)
}

// DeleteSubscription removes the subscription with its cursors, retries,
// dead letters, attempts and lease in one transaction, or returns
// CodeNotFound. Deleting the row first takes its lock, so a Settle or a
// replay of the subscription in flight finishes before the rest goes, and
// none can start after.
func (s *Store) DeleteSubscription(ctx context.Context, id string) error {
	if err := s.checkOpen(); err != nil {
		return err
	}
	if !validText(id) {
		return subNotFound(id)
	}
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM subscriptions WHERE id = $1`, id)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return subNotFound(id)
		}
		b := &pgx.Batch{}
		for _, table := range []string{"cursors", "retries", "dead_letters", "attempts", "topic_fences", "delivery_stats"} {
			b.Queue(`DELETE FROM `+table+` WHERE subscription_id = $1`, id)
		}
		return tx.SendBatch(ctx, b).Close()
	})
	if err != nil {
		return s.fail("delete subscription", err)
	}
	s.announceSubscriptionChange(ctx, id)
	return nil
}

// Cursors returns the subscription's cursors in topic order; none for an
// unknown subscription.
func (s *Store) Cursors(ctx context.Context, id string) ([]herald.Cursor, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	if !validText(id) {
		return nil, nil
	}
	rows, err := s.pool.Query(ctx, `SELECT topic, seq FROM cursors WHERE subscription_id = $1 ORDER BY topic`, id)
	if err != nil {
		return nil, s.fail("read cursors", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (herald.Cursor, error) {
		var c herald.Cursor
		err := row.Scan(&c.Topic, &c.Seq)
		return c, err
	})
	if err != nil {
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
	ids = slices.DeleteFunc(slices.Clone(ids), func(id string) bool { return !validText(id) })
	out := make(map[string]herald.DispatchState, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	rows, err := s.pool.Query(ctx, `SELECT subscription_id, topic, seq FROM cursors WHERE subscription_id = ANY($1)`, ids)
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
	rows, err = s.pool.Query(ctx, `SELECT DISTINCT subscription_id FROM retries WHERE subscription_id = ANY($1)`, ids)
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
	return out, nil
}
