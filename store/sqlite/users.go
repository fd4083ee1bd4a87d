package sqlite

import (
	"context"
	"database/sql"
	"time"

	"github.com/heraldhq/herald"
)

var _ herald.UserStore = (*Store)(nil)

// PutUserSubscription subscribes the user to the topic; see herald.UserStore.
func (s *Store) PutUserSubscription(ctx context.Context, user, topic string, now time.Time) (herald.UserSubscription, bool, error) {
	if err := s.checkOpen(); err != nil {
		return herald.UserSubscription{}, false, err
	}
	var created bool
	var at int64
	err := s.withTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO user_subscriptions (user_id, topic, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING`, user, topic, nanos(now))
		if err != nil {
			return err
		}
		n, _ := res.RowsAffected()
		created = n == 1
		return tx.QueryRowContext(ctx, `SELECT created_at FROM user_subscriptions WHERE user_id = ? AND topic = ?`, user, topic).Scan(&at)
	})
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
	var n int64
	err := s.withTx(ctx, func(tx *sql.Tx) error {
		var err error
		n, err = execCount(ctx, tx, `DELETE FROM user_subscriptions WHERE user_id = ? AND topic = ?`, user, topic)
		return err
	})
	if err != nil {
		return s.fail("delete user subscription", err)
	}
	if n == 0 {
		return &herald.Error{Code: herald.CodeNotFound, Field: "topic", Message: "user " + user + " has no subscription to " + topic}
	}
	return nil
}

// ListUserSubscriptions returns the user's subscriptions in topic order.
func (s *Store) ListUserSubscriptions(ctx context.Context, user string) ([]herald.UserSubscription, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	rows, err := s.reader.QueryContext(ctx, `SELECT topic, created_at FROM user_subscriptions WHERE user_id = ? ORDER BY topic`, user)
	if err != nil {
		return nil, s.fail("list user subscriptions", err)
	}
	defer rows.Close()
	var out []herald.UserSubscription
	for rows.Next() {
		us := herald.UserSubscription{User: user}
		var at int64
		if err := rows.Scan(&us.Topic, &at); err != nil {
			return nil, s.fail("list user subscriptions", err)
		}
		us.CreatedAt = fromNanos(at)
		out = append(out, us)
	}
	if err := rows.Err(); err != nil {
		return nil, s.fail("list user subscriptions", err)
	}
	return out, nil
}

// SetPresence replaces node's presence rows with counts.
func (s *Store) SetPresence(ctx context.Context, node string, counts map[string]int, now time.Time) error {
	if err := s.checkOpen(); err != nil {
		return err
	}
	err := s.withLazyTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM user_presence WHERE node = ?`, node); err != nil {
			return err
		}
		for user, n := range counts {
			if n <= 0 {
				continue
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO user_presence (user_id, node, conns, updated_at) VALUES (?, ?, ?, ?)`, user, node, n, nanos(now)); err != nil {
				return err
			}
		}
		return nil
	})
	return s.fail("set presence", err)
}

// ListPresence returns the user's connection counts recorded after since.
func (s *Store) ListPresence(ctx context.Context, user string, since time.Time) ([]herald.Presence, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	rows, err := s.reader.QueryContext(ctx, `SELECT node, conns, updated_at FROM user_presence WHERE user_id = ? AND updated_at > ? ORDER BY node`, user, nanos(since))
	if err != nil {
		return nil, s.fail("list presence", err)
	}
	defer rows.Close()
	var out []herald.Presence
	for rows.Next() {
		var p herald.Presence
		var at int64
		if err := rows.Scan(&p.Node, &p.Conns, &at); err != nil {
			return nil, s.fail("list presence", err)
		}
		p.UpdatedAt = fromNanos(at)
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
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
	rows, err := s.reader.QueryContext(ctx, `SELECT user_id, sum(conns) FROM user_presence WHERE updated_at > ? GROUP BY user_id`, nanos(since))
	if err != nil {
		return nil, s.fail("count presence", err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var u string
		var n int
		if err := rows.Scan(&u, &n); err != nil {
			return nil, s.fail("count presence", err)
		}
		if n > 0 {
			out[u] = n
		}
	}
	if err := rows.Err(); err != nil {
		return nil, s.fail("count presence", err)
	}
	return out, nil
}
