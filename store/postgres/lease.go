package postgres

import (
	"context"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/heraldhq/herald"
)

// Dispatch leases (migration 0020, ADR 0011): a subscription's lease rests
// on the lease of the node that holds it, one row of dispatch_nodes, so a
// node keeps all of its subscriptions with one write a second.
//
// Locking: a node's own row is written in a statement of its own (an
// upsert, which also survives another node removing the row meanwhile),
// never held through a transaction. A transaction that takes subscription
// leases locks the subscriptions' rows in id order, as Settle does, and
// only then, at its end, the rows of the holders whose lapsed leases it
// ends (in node order). So nothing waits for a node row while holding
// one, and a node's renewal waits at most for the end of such a
// transaction. The holder's epoch is raised under that lock, and only if
// the holder's lease is still lapsed then: a renewal the holder sent
// before the lapse, arriving after, finds the new epoch rather than
// making the subscriptions it lost live again (see takeNodeLeaseSQL).

// deadNodeLeaseRetention is how long the row of a node whose lease lapsed
// stays before another node's renewal removes it.
const deadNodeLeaseRetention = 24 * time.Hour

const (
	// takeNodeLeaseSQL takes the node's lease ($1) until $4: extended
	// (never shortened) with the same epoch if it is live at $2, else
	// under the next epoch, or under $3 (the time, higher than any epoch
	// a removed row had) for a node with no row.
	takeNodeLeaseSQL = `INSERT INTO dispatch_nodes AS n (node, epoch, expires_at) VALUES ($1, $3, $4)
		ON CONFLICT (node) DO UPDATE SET
			epoch = CASE WHEN n.expires_at > $2 THEN n.epoch ELSE n.epoch + 1 END,
			expires_at = CASE WHEN n.expires_at > $2 THEN greatest(n.expires_at, $4) ELSE $4 END
		RETURNING epoch`

	// lockLeasesSQL locks the subscriptions in id order, as Settle does,
	// and reads their leases.
	lockLeasesSQL = `SELECT id, lease_node, lease_node_epoch, lease_expires_at, lease_epoch FROM subscriptions
		WHERE id = ANY($1::text[]) ORDER BY id FOR NO KEY UPDATE`

	// leaseFencesSQL reads which of the locked subscriptions have a topic
	// deleted under their current epoch; a statement of its own, after the
	// locks, as settleFencesSQL.
	leaseFencesSQL = `SELECT DISTINCT f.subscription_id FROM topic_fences f JOIN subscriptions s ON s.id = f.subscription_id
		WHERE f.subscription_id = ANY($1::text[]) AND f.epoch >= s.lease_epoch`

	// leaseHoldersSQL reads the node leases the locked subscriptions rest
	// on (other nodes', not an older version's), without locking them.
	leaseHoldersSQL = `SELECT node, epoch, expires_at FROM dispatch_nodes WHERE node IN (
		SELECT lease_node FROM subscriptions WHERE id = ANY($1::text[]) AND lease_node <> $2 AND lease_node_epoch <> 0)`

	// endNodeLeaseSQL ends a lapsed node lease for good: its epoch moves
	// on, if it is still the one ($2) and still lapsed at $3 once locked.
	endNodeLeaseSQL = `UPDATE dispatch_nodes SET epoch = epoch + 1 WHERE node = $1 AND epoch = $2 AND expires_at <= $3`

	// nodeLeasesSQL reads node leases again, after endNodeLeaseSQL waited
	// for them.
	nodeLeasesSQL = `SELECT node, epoch, expires_at FROM dispatch_nodes WHERE node = ANY($1::text[])`

	setLeasesSQL = `UPDATE subscriptions s SET lease_node = $3, lease_node_epoch = $4, lease_expires_at = $5, lease_epoch = v.e
		FROM unnest($1::text[], $2::bigint[]) AS v(id, e) WHERE s.id = v.id`

	endFencesSQL = `DELETE FROM topic_fences f USING unnest($1::text[], $2::bigint[]) AS v(id, e)
		WHERE f.subscription_id = v.id AND f.epoch < v.e`
)

// leaseOutcome is what acquireLeases made of one subscription.
type leaseOutcome struct {
	lease  herald.Lease
	taken  bool
	holder string // when not taken: the node whose live lease it rests on
	until  int64  // and until when
}

// nodeRow is a row of dispatch_nodes.
type nodeRow struct{ epoch, expires int64 }

// takeNodeLease takes or extends node's lease (see takeNodeLeaseSQL).
func (s *Store) takeNodeLease(ctx context.Context, node string, at, until int64) (int64, error) {
	var epoch int64
	err := s.pool.QueryRow(ctx, takeNodeLeaseSQL, node, at, max(at, 1), until).Scan(&epoch)
	return epoch, err
}

// readNodes reads rows of dispatch_nodes by node.
func readNodes(rows pgx.Rows) (map[string]nodeRow, error) {
	out := make(map[string]nodeRow)
	var name string
	var r nodeRow
	_, err := pgx.ForEachRow(rows, []any{&name, &r.epoch, &r.expires}, func() error {
		out[name] = r
		return nil
	})
	return out, err
}

// acquireLeases takes the leases of ids for node, whose own lease
// takeNodeLease has just taken under nodeEpoch, in one transaction, and
// returns the outcome of each subscription found, by id (see
// herald.SubscriptionStore's AcquireLease).
func (s *Store) acquireLeases(ctx context.Context, ids []string, node string, nodeEpoch, at, until int64) (map[string]*leaseOutcome, error) {
	out := make(map[string]*leaseOutcome, len(ids))
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		clear(out)
		b := &pgx.Batch{}
		b.Queue(lockLeasesSQL, ids)
		b.Queue(leaseFencesSQL, ids)
		b.Queue(leaseHoldersSQL, ids, node)
		res := tx.SendBatch(ctx, b)
		defer res.Close()
		type subRow struct {
			id, holder                  string
			holderEpoch, expires, epoch int64
		}
		var subs []subRow
		rows, err := res.Query()
		if err != nil {
			return err
		}
		var sr subRow
		if _, err := pgx.ForEachRow(rows, []any{&sr.id, &sr.holder, &sr.holderEpoch, &sr.expires, &sr.epoch}, func() error {
			subs = append(subs, sr)
			return nil
		}); err != nil {
			return err
		}
		fenced := make(map[string]bool)
		rows, err = res.Query()
		if err != nil {
			return err
		}
		var name string
		if _, err := pgx.ForEachRow(rows, []any{&name}, func() error {
			fenced[name] = true
			return nil
		}); err != nil {
			return err
		}
		rows, err = res.Query()
		if err != nil {
			return err
		}
		holders, err := readNodes(rows)
		if err != nil {
			return err
		}
		if err := res.Close(); err != nil {
			return err
		}

		// The lapsed node leases to end (by node: the epoch they were
		// seen under), in node order.
		lapsed := make(map[string]int64)
		for _, sub := range subs {
			if h, ok := holders[sub.holder]; ok && sub.holder != node && sub.holderEpoch != 0 &&
				h.epoch == sub.holderEpoch && h.expires <= at {
				lapsed[sub.holder] = h.epoch
			}
		}
		if len(lapsed) > 0 {
			names := make([]string, 0, len(lapsed))
			for n := range lapsed {
				names = append(names, n)
			}
			slices.Sort(names)
			b := &pgx.Batch{}
			for _, n := range names {
				b.Queue(endNodeLeaseSQL, n, lapsed[n], at)
			}
			b.Queue(nodeLeasesSQL, names)
			res := tx.SendBatch(ctx, b)
			for range names {
				if _, err := res.Exec(); err != nil {
					res.Close()
					return err
				}
			}
			rows, err := res.Query()
			if err != nil {
				res.Close()
				return err
			}
			now, err := readNodes(rows)
			if err != nil {
				res.Close()
				return err
			}
			if err := res.Close(); err != nil {
				return err
			}
			for _, n := range names {
				// Ended now, by this transaction or another, or taken
				// again under a new epoch: either way the old epoch is
				// dead. Renewed meanwhile: still live.
				if r, ok := now[n]; ok {
					holders[n] = r
				} else {
					delete(holders, n)
				}
			}
		}

		var setIDs []string
		var setEpochs []int64
		for _, sub := range subs {
			o := &leaseOutcome{}
			out[sub.id] = o
			keep := false
			switch {
			case sub.holder == "":
			case sub.holder == node && sub.holderEpoch == nodeEpoch:
				keep = true
			case sub.holder == node:
			case sub.holderEpoch == 0: // an older version's lease, renewed per subscription
				if sub.expires > at {
					o.holder, o.until = sub.holder, sub.expires
					continue
				}
			default:
				if h, ok := holders[sub.holder]; ok && h.epoch == sub.holderEpoch && h.expires > at {
					o.holder, o.until = sub.holder, h.expires
					continue
				}
			}
			epoch := sub.epoch
			if !keep || fenced[sub.id] {
				epoch++
			}
			o.taken = true
			o.lease = herald.Lease{SubscriptionID: sub.id, Epoch: epoch, NodeEpoch: nodeEpoch}
			setIDs = append(setIDs, sub.id)
			setEpochs = append(setEpochs, epoch)
		}
		if len(setIDs) == 0 {
			return nil
		}
		b = &pgx.Batch{}
		b.Queue(setLeasesSQL, setIDs, setEpochs, node, nodeEpoch, until)
		b.Queue(endFencesSQL, setIDs, setEpochs)
		return tx.SendBatch(ctx, b).Close()
	})
	return out, err
}

// leaseTimes checks the node and the time of a lease call and returns the
// time and the lease's end as stored.
func leaseTimes(node string, now time.Time, ttl time.Duration) (at, end int64, err error) {
	if node == "" || !validText(node) {
		return 0, 0, herald.FieldErrorf("node", "the node name must be non-empty UTF-8 without NUL bytes")
	}
	if now.IsZero() || !inNanosRange(now) {
		return 0, 0, herald.FieldErrorf("now", "now must be between %s and %s", minTime.UTC(), maxTime.UTC())
	}
	until := now.Add(ttl)
	switch {
	case until.After(maxTime):
		until = maxTime
	case until.Before(now):
		until = now
	}
	return now.UnixNano(), until.UnixNano(), nil
}

// AcquireLease gives node the right to dispatch the subscription and
// returns the lease epoch (see herald.SubscriptionStore.AcquireLease).
// CodeNotFound if the subscription does not exist; CodeConflict if
// another node's lease is live; CodeInvalid for an empty node name.
func (s *Store) AcquireLease(ctx context.Context, id, node string, now time.Time, ttl time.Duration) (int64, error) {
	if err := s.checkOpen(); err != nil {
		return 0, err
	}
	at, until, err := leaseTimes(node, now, ttl)
	if err != nil {
		return 0, err
	}
	if !validText(id) {
		return 0, subNotFound(id)
	}
	nodeEpoch, err := s.takeNodeLease(ctx, node, at, until)
	if err != nil {
		return 0, s.fail("acquire lease", err)
	}
	out, err := s.acquireLeases(ctx, []string{id}, node, nodeEpoch, at, until)
	if err != nil {
		return 0, s.fail("acquire lease", err)
	}
	o := out[id]
	switch {
	case o == nil:
		return 0, subNotFound(id)
	case !o.taken:
		return 0, herald.Errorf(herald.CodeConflict, "subscription %s is dispatched by node %s until %s",
			id, o.holder, fromNanos(o.until).Format(time.RFC3339Nano))
	}
	return o.lease.Epoch, nil
}

// AcquireLeases is AcquireLease for many subscriptions, 500 to a
// transaction. It returns the leases taken or extended and leaves out the
// subscriptions that do not exist or whose live lease another node holds;
// on an error, with the leases of the transactions that committed.
func (s *Store) AcquireLeases(ctx context.Context, ids []string, node string, now time.Time, ttl time.Duration) ([]herald.Lease, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	at, until, err := leaseTimes(node, now, ttl)
	if err != nil {
		return nil, err
	}
	ids = slices.DeleteFunc(slices.Clone(ids), func(id string) bool { return !validText(id) })
	if len(ids) == 0 {
		return nil, nil
	}
	nodeEpoch, err := s.takeNodeLease(ctx, node, at, until)
	if err != nil {
		return nil, s.fail("acquire leases", err)
	}
	var leases []herald.Lease
	for chunk := range slices.Chunk(ids, 500) {
		out, err := s.acquireLeases(ctx, chunk, node, nodeEpoch, at, until)
		if err != nil {
			return leases, s.fail("acquire leases", err)
		}
		for _, id := range chunk {
			if o := out[id]; o != nil && o.taken {
				leases = append(leases, o.lease)
			}
		}
	}
	return leases, nil
}

// RenewNodeLease extends node's lease, and with it every subscription
// lease it holds, with one row's write, and returns the fenced ones (see
// herald.SubscriptionStore.RenewNodeLease), found from topic_fences, which
// holds a row per topic deleted under a lease not yet taken again.
func (s *Store) RenewNodeLease(ctx context.Context, node string, now time.Time, ttl time.Duration) (herald.NodeLease, error) {
	if err := s.checkOpen(); err != nil {
		return herald.NodeLease{}, err
	}
	at, until, err := leaseTimes(node, now, ttl)
	if err != nil {
		return herald.NodeLease{}, err
	}
	var out herald.NodeLease
	b := &pgx.Batch{}
	b.Queue(takeNodeLeaseSQL, node, at, max(at, 1), until)
	b.Queue(`SELECT DISTINCT s.id, s.lease_epoch FROM topic_fences f JOIN subscriptions s ON s.id = f.subscription_id
		WHERE s.lease_node = $1 AND s.lease_node_epoch = (SELECT epoch FROM dispatch_nodes WHERE node = $1)
		AND f.epoch >= s.lease_epoch`, node)
	err = func() error {
		res := s.pool.SendBatch(ctx, b)
		defer res.Close()
		if err := res.QueryRow().Scan(&out.Epoch); err != nil {
			return err
		}
		rows, err := res.Query()
		if err != nil {
			return err
		}
		l := herald.Lease{NodeEpoch: out.Epoch}
		if _, err := pgx.ForEachRow(rows, []any{&l.SubscriptionID, &l.Epoch}, func() error {
			out.Fenced = append(out.Fenced, l)
			return nil
		}); err != nil {
			return err
		}
		return res.Close()
	}()
	if err != nil {
		return herald.NodeLease{}, s.fail("renew the node lease", err)
	}
	// Rows of nodes gone for a day, in a statement of its own, not after
	// the node's own row in its transaction (see the locking order above).
	// A failure changes nothing: the next renewal tries again.
	_, _ = s.exec(ctx, `DELETE FROM dispatch_nodes WHERE expires_at < $1 AND node <> $2`,
		now.Add(-deadNodeLeaseRetention).UnixNano(), node)
	return out, nil
}

// ReleaseLease ends node's lease if it still holds it with this epoch, so
// another node may take the subscription at once; the epoch stays, and the
// next AcquireLease increases it. Anything else is left as it is, without
// an error.
func (s *Store) ReleaseLease(ctx context.Context, id, node string, epoch int64) error {
	if err := s.checkOpen(); err != nil {
		return err
	}
	if !validText(id) || !validText(node) {
		return nil
	}
	_, err := s.exec(ctx, `UPDATE subscriptions SET lease_node = '', lease_expires_at = 0
		WHERE id = $1 AND lease_node = $2 AND lease_epoch = $3`, id, node, epoch)
	return s.fail("release lease", err)
}

// ReleaseNodeLeases ends node's lease (every node's when node is ""), and
// with it the subscription leases under it, keeping their epochs, and
// returns how many subscription leases it ended: a count over the
// subscriptions, and one row's write for a node's lease.
func (s *Store) ReleaseNodeLeases(ctx context.Context, node string) (int64, error) {
	if err := s.checkOpen(); err != nil {
		return 0, err
	}
	if !validText(node) {
		return 0, nil // no lease is held under a name that cannot be stored
	}
	var n int64
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		b := &pgx.Batch{}
		b.Queue(`SELECT node FROM dispatch_nodes WHERE $1::text = '' OR node = $1 ORDER BY node FOR UPDATE`, node)
		b.Queue(`SELECT count(*) FROM subscriptions s
			LEFT JOIN dispatch_nodes n ON n.node = s.lease_node
			WHERE s.lease_node <> '' AND ($1::text = '' OR s.lease_node = $1)
			AND (s.lease_node_epoch = 0 OR s.lease_node_epoch = n.epoch)`, node)
		b.Queue(`UPDATE dispatch_nodes SET epoch = epoch + 1, expires_at = 0 WHERE $1::text = '' OR node = $1`, node)
		// Leases of an older version, which rest on no node lease.
		b.Queue(`UPDATE subscriptions SET lease_node = '', lease_expires_at = 0
			WHERE lease_node_epoch = 0 AND lease_node <> '' AND ($1::text = '' OR lease_node = $1)`, node)
		res := tx.SendBatch(ctx, b)
		defer res.Close()
		if _, err := res.Exec(); err != nil {
			return err
		}
		if err := res.QueryRow().Scan(&n); err != nil {
			return err
		}
		return res.Close()
	})
	if err != nil {
		return 0, s.fail("release the node's leases", err)
	}
	return n, nil
}
