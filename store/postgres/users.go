package postgres

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/heraldhq/herald"
)

var _ herald.UserStore = (*Store)(nil)

// PutUserSubscription subscribes the user to the topic; see herald.UserStore.
func (s *Store) PutUserSubscription(ctx context.Context, user, topic string, now time.Time) (herald.UserSubscription, bool, error) {
	if err := s.checkOpen(); err != nil {
		return herald.UserSubscription{}, false, err
	}
	if !validText(user) || !validText(topic) {
		return herald.UserSubscription{}, false, herald.FieldErrorf("user", "the user and topic must be UTF-8 without NUL bytes")
	}
	var at int64
	var created bool
	err := s.pool.QueryRow(ctx, `WITH ins AS (
			INSERT INTO user_subscriptions (user_id, topic, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING created_at)
		SELECT created_at, true FROM ins
		UNION ALL SELECT created_at, false FROM user_subscriptions WHERE user_id = $1 AND topic = $2
		LIMIT 1`, user, topic, nanos(now)).Scan(&at, &created)
	if err != nil {
		return herald.UserSubscription{}, false, s.fail("put user subscription", err)
	}
	return herald.UserSubscription{User: user, Topic: topic, CreatedAt: fromNanos(at)}, created, nil
}

// DeleteUserSubscription removes it, or returns CodeNotFound.
func (s *Store) DeleteUserSubscription(ctx context.Context, user, topic string) error {
	if err := s.checkOpen(); err != nil {
		return err
	}
	notFound := &herald.Error{Code: herald.CodeNotFound, Field: "topic", Message: "user " + user + " has no subscription to " + topic}
	if !validText(user) || !validText(topic) {
		return notFound
	}
	n, err := s.exec(ctx, `DELETE FROM user_subscriptions WHERE user_id = $1 AND topic = $2`, user, topic)
	if err != nil {
		return s.fail("delete user subscription", err)
	}
	if n == 0 {
		return notFound
	}
	return nil
}

// ListUserSubscriptions returns the user's subscriptions in topic order.
func (s *Store) ListUserSubscriptions(ctx context.Context, user string) ([]herald.UserSubscription, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	if !validText(user) {
		return nil, nil
	}
	rows, err := s.pool.Query(ctx, `SELECT topic, created_at FROM user_subscriptions WHERE user_id = $1 ORDER BY topic`, user)
	if err != nil {
		return nil, s.fail("list user subscriptions", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (herald.UserSubscription, error) {
		us := herald.UserSubscription{User: user}
		var at int64
		err := row.Scan(&us.Topic, &at)
		us.CreatedAt = fromNanos(at)
		return us, err
	})
	if err != nil {
		return nil, s.fail("list user subscriptions", err)
	}
	return out, nil
}

// SetPresence replaces node's presence rows with counts.
func (s *Store) SetPresence(ctx context.Context, node string, counts map[string]int, now time.Time) error {
	if err := s.checkOpen(); err != nil {
		return err
	}
	users, ns := make([]string, 0, len(counts)), make([]int64, 0, len(counts))
	for u, n := range counts {
		if n > 0 && validText(u) {
			users, ns = append(users, u), append(ns, int64(n))
		}
	}
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM user_presence WHERE node = $1`, node); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO user_presence (user_id, node, conns, updated_at)
			SELECT u, $1, n, $2 FROM unnest($3::text[], $4::bigint[]) AS t(u, n)`, node, nanos(now), users, ns)
		return err
	})
	return s.fail("set presence", err)
}

// ListPresence returns the user's connection counts recorded after since.
func (s *Store) ListPresence(ctx context.Context, user string, since time.Time) ([]herald.Presence, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	if !validText(user) {
		return nil, nil
	}
	rows, err := s.pool.Query(ctx, `SELECT node, conns, updated_at FROM user_presence WHERE user_id = $1 AND updated_at > $2 ORDER BY node`, user, nanos(since))
	if err != nil {
		return nil, s.fail("list presence", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (herald.Presence, error) {
		var p herald.Presence
		var at int64
		err := row.Scan(&p.Node, &p.Conns, &at)
		p.UpdatedAt = fromNanos(at)
		return p, err
	})
	if err != nil {
		return nil, s.fail("list presence", err)
	}
	return out, nil
}

// CountPresence returns every user's connections recorded after since,
// summed over the nodes.
func (s *Store) CountPresence(ctx context.Context, since time.Time) (map[string]int, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, `SELECT user_id, sum(conns)::bigint FROM user_presence WHERE updated_at > $1 GROUP BY user_id`, nanos(since))
	if err != nil {
		return nil, s.fail("count presence", err)
	}
	out := map[string]int{}
	var u string
	var n int64
	_, err = pgx.ForEachRow(rows, []any{&u, &n}, func() error {
		if n > 0 {
			out[u] = int(n)
		}
		return nil
	})
	if err != nil {
		return nil, s.fail("count presence", err)
	}
	return out, nil
}
