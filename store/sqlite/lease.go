package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/heraldhq/herald"
)

// Dispatch leases (migration 0020, ADR 0011): a subscription's lease rests
// on the lease of the node that holds it, one row of dispatch_nodes, so a
// node keeps all of its subscriptions with one write.

// deadNodeLeaseRetention is how long the row of a node whose lease lapsed
// stays before another node's renewal removes it.
const deadNodeLeaseRetention = 24 * time.Hour

// takeNodeLease takes node's lease, or extends it if it is live at at, to
// until (never shortening it), and returns its epoch: the same while it is
// live, the next one when it lapsed or was released, and the time for a
// node with no row (higher than any epoch a removed row had).
func takeNodeLease(ctx context.Context, tx *sql.Tx, node string, at, until int64) (int64, error) {
	var epoch, expires int64
	err := tx.QueryRowContext(ctx, `SELECT epoch, expires_at FROM dispatch_nodes WHERE node = ?`, node).Scan(&epoch, &expires)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		epoch = max(at, 1)
		_, err = tx.ExecContext(ctx, `INSERT INTO dispatch_nodes (node, epoch, expires_at) VALUES (?, ?, ?)`, node, epoch, until)
		return epoch, err
	case err != nil:
		return 0, err
	}
	if expires > at {
		until = max(until, expires)
	} else {
		epoch++
	}
	_, err = tx.ExecContext(ctx, `UPDATE dispatch_nodes SET epoch = ?, expires_at = ? WHERE node = ?`, epoch, until, node)
	return epoch, err
}

// AcquireLease gives node the right to dispatch the subscription and
// returns the lease epoch (see herald.SubscriptionStore.AcquireLease).
// CodeNotFound if the subscription does not exist; CodeConflict if
// another node's lease is live; CodeInvalid for an empty node name.
func (s *Store) AcquireLease(ctx context.Context, id, node string, now time.Time, ttl time.Duration) (int64, error) {
	if err := s.checkOpen(); err != nil {
		return 0, err
	}
	if node == "" {
		return 0, herald.FieldErrorf("node", "the node name is empty")
	}
	at := clampNanos(now)
	until := clampNanos(now.Add(max(ttl, 0)))
	var epoch int64
	err := s.withTx(ctx, func(tx *sql.Tx) error {
		nodeEpoch, err := takeNodeLease(ctx, tx, node, at, until)
		if err != nil {
			return err
		}
		epoch, err = acquireLeaseTx(ctx, tx, id, node, nodeEpoch, at, until)
		return err
	})
	if err != nil {
		return 0, s.fail("acquire lease", err)
	}
	return epoch, nil
}

// AcquireLeases is AcquireLease for many subscriptions in one transaction:
// it returns the leases it took or extended and leaves out the
// subscriptions that do not exist or whose lease another node holds.
func (s *Store) AcquireLeases(ctx context.Context, ids []string, node string, now time.Time, ttl time.Duration) ([]herald.Lease, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	if node == "" {
		return nil, herald.FieldErrorf("node", "the node name is empty")
	}
	if len(ids) == 0 {
		return nil, nil
	}
	at := clampNanos(now)
	until := clampNanos(now.Add(max(ttl, 0)))
	var out []herald.Lease
	err := s.withTx(ctx, func(tx *sql.Tx) error {
		out = out[:0]
		nodeEpoch, err := takeNodeLease(ctx, tx, node, at, until)
		if err != nil {
			return err
		}
		for _, id := range ids {
			epoch, err := acquireLeaseTx(ctx, tx, id, node, nodeEpoch, at, until)
			switch {
			case err == nil:
				out = append(out, herald.Lease{SubscriptionID: id, Epoch: epoch, NodeEpoch: nodeEpoch})
			case herald.IsCode(err, herald.CodeNotFound), herald.IsCode(err, herald.CodeConflict):
			default:
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, s.fail("acquire leases", err)
	}
	return out, nil
}

// acquireLeaseTx takes the subscription's lease for node, whose own lease
// takeNodeLease has just taken at nodeEpoch, within tx.
func acquireLeaseTx(ctx context.Context, tx *sql.Tx, id, node string, nodeEpoch, at, until int64) (int64, error) {
	var sid, holderEpoch, expires, epoch int64
	var holder string
	var fenced bool
	err := tx.QueryRowContext(ctx, `SELECT s.sid, s.lease_node, s.lease_node_epoch, s.lease_expires_at, s.lease_epoch,
		EXISTS (SELECT 1 FROM topic_fences f WHERE f.sid = s.sid AND f.epoch >= s.lease_epoch)
		FROM subscriptions s WHERE s.id = ?`, id).Scan(&sid, &holder, &holderEpoch, &expires, &epoch, &fenced)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, subNotFound(id)
	}
	if err != nil {
		return 0, err
	}
	keep := false // node holds it under its live node lease: the epoch may stay
	switch {
	case holder == "":
	case holder == node && holderEpoch == nodeEpoch:
		keep = true
	case holder == node:
	case holderEpoch == 0: // an older version's lease, renewed per subscription
		if expires > at {
			return 0, leaseConflict(id, holder, expires)
		}
	default:
		var cur, end int64
		err := tx.QueryRowContext(ctx, `SELECT epoch, expires_at FROM dispatch_nodes WHERE node = ?`, holder).Scan(&cur, &end)
		switch {
		case errors.Is(err, sql.ErrNoRows): // removed long after it lapsed
		case err != nil:
			return 0, err
		case cur != holderEpoch: // ended already
		case end > at:
			return 0, leaseConflict(id, holder, end)
		default:
			// Lapsed: end it for good, so that a renewal the holder sent
			// before it lapsed cannot make it live again.
			if _, err := tx.ExecContext(ctx, `UPDATE dispatch_nodes SET epoch = epoch + 1 WHERE node = ?`, holder); err != nil {
				return 0, fmt.Errorf("end a lapsed node lease: %w", err)
			}
		}
	}
	if !keep || fenced {
		// A topic deleted under node's own live lease: its dispatcher may
		// hold state of the topic from before, which the new epoch makes
		// it drop.
		epoch++
		if _, err := tx.ExecContext(ctx, `DELETE FROM topic_fences WHERE sid = ?`, sid); err != nil {
			return 0, fmt.Errorf("end the fences of the old epoch: %w", err)
		}
	}
	_, err = tx.ExecContext(ctx, `UPDATE subscriptions SET lease_node = ?, lease_node_epoch = ?, lease_expires_at = ?, lease_epoch = ?
		WHERE sid = ?`, node, nodeEpoch, until, epoch, sid)
	return epoch, err
}

func leaseConflict(id, holder string, until int64) error {
	return herald.Errorf(herald.CodeConflict, "subscription %s is dispatched by node %s until %s",
		id, holder, fromNanos(until).Format(time.RFC3339Nano))
}

// RenewNodeLease extends node's lease, and with it every subscription
// lease it holds, in one write, and returns the fenced ones (see
// herald.SubscriptionStore.RenewNodeLease).
func (s *Store) RenewNodeLease(ctx context.Context, node string, now time.Time, ttl time.Duration) (herald.NodeLease, error) {
	if err := s.checkOpen(); err != nil {
		return herald.NodeLease{}, err
	}
	if node == "" {
		return herald.NodeLease{}, herald.FieldErrorf("node", "the node name is empty")
	}
	at := clampNanos(now)
	until := clampNanos(now.Add(max(ttl, 0)))
	var out herald.NodeLease
	err := s.withTx(ctx, func(tx *sql.Tx) error {
		var err error
		out = herald.NodeLease{}
		if out.Epoch, err = takeNodeLease(ctx, tx, node, at, until); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM dispatch_nodes WHERE expires_at < ? AND node <> ?`,
			clampNanos(now.Add(-deadNodeLeaseRetention)), node); err != nil {
			return err
		}
		rows, err := tx.QueryContext(ctx, `SELECT s.id, s.lease_epoch FROM subscriptions s
			WHERE s.sid IN (SELECT sid FROM topic_fences) AND s.lease_node = ? AND s.lease_node_epoch = ?
			AND EXISTS (SELECT 1 FROM topic_fences f WHERE f.sid = s.sid AND f.epoch >= s.lease_epoch)`, node, out.Epoch)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			l := herald.Lease{NodeEpoch: out.Epoch}
			if err := rows.Scan(&l.SubscriptionID, &l.Epoch); err != nil {
				return err
			}
			out.Fenced = append(out.Fenced, l)
		}
		return rows.Err()
	})
	if err != nil {
		return herald.NodeLease{}, s.fail("renew the node lease", err)
	}
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
	err := s.withTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE subscriptions SET lease_node = '', lease_expires_at = 0
			WHERE id = ? AND lease_node = ? AND lease_epoch = ?`, id, node, epoch)
		return err
	})
	return s.fail("release lease", err)
}

// ReleaseNodeLeases ends node's lease (every node's when node is ""), and
// with it the subscription leases under it, keeping their epochs, and
// returns how many subscription leases it ended.
func (s *Store) ReleaseNodeLeases(ctx context.Context, node string) (int64, error) {
	if err := s.checkOpen(); err != nil {
		return 0, err
	}
	var n int64
	err := s.withTx(ctx, func(tx *sql.Tx) error {
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM subscriptions s
			WHERE s.lease_node <> '' AND (?1 = '' OR s.lease_node = ?1) AND (s.lease_node_epoch = 0
				OR s.lease_node_epoch = (SELECT n.epoch FROM dispatch_nodes n WHERE n.node = s.lease_node))`, node).Scan(&n); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE dispatch_nodes SET epoch = epoch + 1, expires_at = 0
			WHERE ?1 = '' OR node = ?1`, node); err != nil {
			return err
		}
		// Leases of an older version, which rest on no node lease.
		_, err := tx.ExecContext(ctx, `UPDATE subscriptions SET lease_node = '', lease_expires_at = 0
			WHERE lease_node_epoch = 0 AND lease_node <> '' AND (?1 = '' OR lease_node = ?1)`, node)
		return err
	})
	if err != nil {
		return 0, s.fail("release the node's leases", err)
	}
	return n, nil
}
