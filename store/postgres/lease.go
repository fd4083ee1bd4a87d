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
// Locking: a transaction that takes subscription leases locks the rows of
// dispatch_nodes it reads (its own node's and the holders') before the
// subscriptions' rows, each set in key order. Renewals lock only their own
// node's row, and Settle and DeleteTopic only subscription rows, so
// nothing waits in the other order. A holder's row is locked, not just
// read, because a taker that finds it lapsed raises its epoch: a renewal
// the holder sent before the lapse, arriving after, then cannot make the
// subscriptions it lost live again (see takeNodeLeaseSQL).

// deadNodeLeaseRetention is how long the row of a node whose lease lapsed
// stays before another node's renewal removes it.
const deadNodeLeaseRetention = 24 * time.Hour

const (
	// leaseHoldersSQL lists the other nodes whose leases the subscriptions
	// ($1) rest on; read without locks, to lock them first.
	leaseHoldersSQL = `SELECT DISTINCT lease_node FROM subscriptions
		WHERE id = ANY($1::text[]) AND lease_node <> '' AND lease_node <> $2 AND lease_node_epoch <> 0`

	// newNodeSQL makes the node's row, lapsed, if it has none; an epoch of
	// a new row is the time, higher than any a removed row had.
	newNodeSQL = `INSERT INTO dispatch_nodes (node, epoch, expires_at) VALUES ($1, $2, 0) ON CONFLICT (node) DO NOTHING`

	// lockNodesSQL locks the node rows a lease transaction reads, in order.
	lockNodesSQL = `SELECT node, epoch, expires_at FROM dispatch_nodes WHERE node = ANY($1::text[]) ORDER BY node FOR UPDATE`

	// takeNodeLeaseSQL extends the node's lease ($1) if it is live at $2
	// (never shortening it), or takes it again under the next epoch, until
	// $3, and returns the epoch.
	takeNodeLeaseSQL = `UPDATE dispatch_nodes SET
			epoch = CASE WHEN expires_at > $2 THEN epoch ELSE epoch + 1 END,
			expires_at = CASE WHEN expires_at > $2 THEN greatest(expires_at, $3) ELSE $3 END
		WHERE node = $1 RETURNING epoch`

	// lockLeasesSQL locks the subscriptions in id order, as Settle does,
	// and reads their leases.
	lockLeasesSQL = `SELECT id, lease_node, lease_node_epoch, lease_expires_at, lease_epoch FROM subscriptions
		WHERE id = ANY($1::text[]) ORDER BY id FOR NO KEY UPDATE`

	// leaseFencesSQL reads which of the locked subscriptions have a topic
	// deleted under their current epoch; a statement of its own, after the
	// locks, as settleFencesSQL.
	leaseFencesSQL = `SELECT DISTINCT f.subscription_id FROM topic_fences f JOIN subscriptions s ON s.id = f.subscription_id
		WHERE f.subscription_id = ANY($1::text[]) AND f.epoch >= s.lease_epoch`

	setLeasesSQL = `UPDATE subscriptions s SET lease_node = $3, lease_node_epoch = $4, lease_expires_at = $5, lease_epoch = v.e
		FROM unnest($1::text[], $2::bigint[]) AS v(id, e) WHERE s.id = v.id`

	endFencesSQL = `DELETE FROM topic_fences f USING unnest($1::text[], $2::bigint[]) AS v(id, e)
		WHERE f.subscription_id = v.id AND f.epoch < v.e`

	endNodeLeasesSQL = `UPDATE dispatch_nodes SET epoch = epoch + 1 WHERE node = ANY($1::text[])`
)

// leaseOutcome is what acquireLeases made of one subscription.
type leaseOutcome struct {
	lease  herald.Lease
	taken  bool
	found  bool
	holder string // when not taken: the node whose live lease it rests on
	until  int64  // and until when
}

// acquireLeases takes the leases of ids for node in one transaction and
// returns the outcome of each, by id (see herald.SubscriptionStore's
// AcquireLease).
func (s *Store) acquireLeases(ctx context.Context, ids []string, node string, at, until int64) (map[string]*leaseOutcome, error) {
	out := make(map[string]*leaseOutcome, len(ids))
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		clear(out)
		rows, err := tx.Query(ctx, leaseHoldersSQL, ids, node)
		if err != nil {
			return err
		}
		holders, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		nodes := append(slices.Clone(holders), node)
		slices.Sort(nodes)
		b := &pgx.Batch{}
		b.Queue(newNodeSQL, node, max(at, 1))
		b.Queue(lockNodesSQL, nodes)
		b.Queue(takeNodeLeaseSQL, node, at, until)
		res := tx.SendBatch(ctx, b)
		if _, err := res.Exec(); err != nil {
			res.Close()
			return err
		}
		type nodeRow struct{ epoch, expires int64 }
		locked := make(map[string]nodeRow, len(nodes))
		rows, err = res.Query()
		if err != nil {
			res.Close()
			return err
		}
		var name string
		var r nodeRow
		if _, err := pgx.ForEachRow(rows, []any{&name, &r.epoch, &r.expires}, func() error {
			locked[name] = r
			return nil
		}); err != nil {
			res.Close()
			return err
		}
		var nodeEpoch int64
		if err := res.QueryRow().Scan(&nodeEpoch); err != nil {
			res.Close()
			return err
		}
		if err := res.Close(); err != nil {
			return err
		}

		b = &pgx.Batch{}
		b.Queue(lockLeasesSQL, ids)
		b.Queue(leaseFencesSQL, ids)
		res = tx.SendBatch(ctx, b)
		type subRow struct {
			id, holder                  string
			holderEpoch, expires, epoch int64
		}
		var subs []subRow
		rows, err = res.Query()
		if err != nil {
			res.Close()
			return err
		}
		var sr subRow
		if _, err := pgx.ForEachRow(rows, []any{&sr.id, &sr.holder, &sr.holderEpoch, &sr.expires, &sr.epoch}, func() error {
			subs = append(subs, sr)
			return nil
		}); err != nil {
			res.Close()
			return err
		}
		fenced := make(map[string]bool)
		rows, err = res.Query()
		if err != nil {
			res.Close()
			return err
		}
		if _, err := pgx.ForEachRow(rows, []any{&name}, func() error {
			fenced[name] = true
			return nil
		}); err != nil {
			res.Close()
			return err
		}
		if err := res.Close(); err != nil {
			return err
		}

		var setIDs []string
		var setEpochs []int64
		var ended []string
		for _, sub := range subs {
			o := &leaseOutcome{found: true}
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
				h, ok := locked[sub.holder]
				switch {
				case !ok && slices.Contains(holders, sub.holder): // removed long after it lapsed
				case !ok:
					// Its holder took it after leaseHoldersSQL read them:
					// its row is not locked here. Try again later.
					o.holder, o.until = sub.holder, sub.expires
					continue
				case h.epoch != sub.holderEpoch: // ended already, or removed
				case h.expires > at:
					o.holder, o.until = sub.holder, h.expires
					continue
				default:
					if !slices.Contains(ended, sub.holder) {
						ended = append(ended, sub.holder)
					}
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
		if len(ended) > 0 {
			b.Queue(endNodeLeasesSQL, ended)
		}
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
	out, err := s.acquireLeases(ctx, []string{id}, node, at, until)
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
	var leases []herald.Lease
	for chunk := range slices.Chunk(ids, 500) {
		out, err := s.acquireLeases(ctx, chunk, node, at, until)
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
	err = s.inTx(ctx, func(tx pgx.Tx) error {
		out = herald.NodeLease{}
		b := &pgx.Batch{}
		b.Queue(newNodeSQL, node, max(at, 1))
		b.Queue(takeNodeLeaseSQL, node, at, until)
		b.Queue(`SELECT DISTINCT s.id, s.lease_epoch FROM topic_fences f JOIN subscriptions s ON s.id = f.subscription_id
			WHERE s.lease_node = $1 AND s.lease_node_epoch = (SELECT epoch FROM dispatch_nodes WHERE node = $1)
			AND f.epoch >= s.lease_epoch`, node)
		res := tx.SendBatch(ctx, b)
		defer res.Close()
		if _, err := res.Exec(); err != nil {
			return err
		}
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
	})
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
