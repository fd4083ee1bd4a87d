package postgres

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/cluster"
)

var (
	_ cluster.Store = (*Store)(nil)
	_ cluster.Bus   = (*Store)(nil)
)

// deadNodeRetention is how long a node that stopped heartbeating stays in
// the nodes table (for people looking at it) before Heartbeat removes it.
const deadNodeRetention = 24 * time.Hour

// heartbeatSQL inserts the node or refreshes its heartbeat and address;
// started_at is the first heartbeat's.
const heartbeatSQL = `INSERT INTO nodes (id, addr, started_at, heartbeat_at) VALUES ($1, $2, $3, $4)
	ON CONFLICT (id) DO UPDATE SET addr = excluded.addr, heartbeat_at = excluded.heartbeat_at`

// Heartbeat records that the node is alive at now and removes nodes silent
// for a day (see cluster.Store), in one round trip. CodeInvalid for an
// empty id or a time out of range.
func (s *Store) Heartbeat(ctx context.Context, m cluster.Member, now time.Time) error {
	if err := s.checkOpen(); err != nil {
		return err
	}
	switch {
	case m.ID == "" || !validText(m.ID):
		return herald.FieldErrorf("node", "the node id must be non-empty UTF-8 without NUL bytes")
	case !validText(m.Addr):
		return herald.FieldErrorf("addr", "the node address must be UTF-8 without NUL bytes")
	}
	if err := checkTimes(namedTime{"now", now}, namedTime{"started_at", m.StartedAt}); err != nil {
		return err
	}
	if now.IsZero() {
		return herald.FieldErrorf("now", "now must be set")
	}
	started := m.StartedAt
	if started.IsZero() {
		started = now
	}
	b := &pgx.Batch{}
	b.Queue(heartbeatSQL, m.ID, m.Addr, nanos(started), nanos(now))
	b.Queue(`DELETE FROM nodes WHERE heartbeat_at < $1`, nanos(now.Add(-deadNodeRetention)))
	return s.fail("heartbeat", s.pool.SendBatch(ctx, b).Close())
}

// LiveNodes returns the nodes whose last heartbeat is after now-ttl, in id
// order. CodeInvalid for a time out of range.
func (s *Store) LiveNodes(ctx context.Context, now time.Time, ttl time.Duration) ([]cluster.Member, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	since := now.Add(-ttl)
	if err := checkTimes(namedTime{"now", now}, namedTime{"now", since}); err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, `SELECT id, addr, started_at, heartbeat_at FROM nodes
		WHERE heartbeat_at > $1 ORDER BY id`, nanos(since))
	if err != nil {
		return nil, s.fail("live nodes", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (cluster.Member, error) {
		var m cluster.Member
		var started, beat int64
		err := row.Scan(&m.ID, &m.Addr, &started, &beat)
		m.StartedAt, m.HeartbeatAt = fromNanos(started), fromNanos(beat)
		return m, err
	})
	if err != nil {
		return nil, s.fail("live nodes", err)
	}
	return out, nil
}

// Leave removes the node from the nodes table; an absent node is no error.
func (s *Store) Leave(ctx context.Context, id string) error {
	if err := s.checkOpen(); err != nil {
		return err
	}
	if !validText(id) {
		return nil // no stored node has this id
	}
	_, err := s.pool.Exec(ctx, `DELETE FROM nodes WHERE id = $1`, id)
	return s.fail("leave", err)
}

// TopicHeads returns every topic's head seq: one scan of the topics table,
// no events read.
func (s *Store) TopicHeads(ctx context.Context) ([]cluster.Head, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, `SELECT name, head_seq FROM topics`)
	if err != nil {
		return nil, s.fail("topic heads", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (cluster.Head, error) {
		var h cluster.Head
		err := row.Scan(&h.Topic, &h.Seq)
		return h, err
	})
	if err != nil {
		return nil, s.fail("topic heads", err)
	}
	return out, nil
}
