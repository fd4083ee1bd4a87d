-- 0020: node leases (ADR 0011). A subscription's dispatch lease rests on
-- the lease of the node that holds it: a node renews one row a second,
-- whatever the number of subscriptions it dispatches, where it used to
-- rewrite every subscription row it held (32,000 rows took 0.7 s, and
-- 100,000 did not stay dispatched).
--
-- A subscription lease (lease_node, lease_node_epoch, lease_epoch) is live
-- while dispatch_nodes has the row of lease_node with that epoch and an
-- expires_at in the future. A node lease that lapsed is taken again with a
-- higher epoch, which ends every subscription lease under the old one; a
-- node that takes a subscription from a node whose lease lapsed raises
-- that node's epoch too, so a renewal sent before the lapse and arriving
-- after cannot make it live again. lease_epoch stays the per-subscription
-- fencing epoch that every Settle must match.
--
-- lease_node_epoch 0 marks a lease taken by an older version, which
-- renews lease_expires_at per subscription: it stays live while that is
-- in the future, so old and new nodes can run side by side during an
-- upgrade. New nodes still write lease_expires_at when they take a lease.
--
-- Rows of nodes whose lease lapsed a day ago are removed by renewals; an
-- epoch of a new row is the time it was made (Unix nanoseconds), higher
-- than any epoch a removed row of the same node had.

CREATE TABLE dispatch_nodes (
	node       TEXT PRIMARY KEY,
	epoch      INTEGER NOT NULL,
	expires_at INTEGER NOT NULL
) WITHOUT ROWID;

ALTER TABLE subscriptions ADD COLUMN lease_node_epoch INTEGER NOT NULL DEFAULT 0;
