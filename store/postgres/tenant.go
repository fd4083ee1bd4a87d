package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/heraldhq/herald"
	"github.com/jackc/pgx/v5"
)

const tenantColumns = `id, name, metadata, topic_pattern, max_subscriptions, deliveries_per_second, max_in_flight,
	created_at, updated_at, publish_rate, max_sources`

func scanTenant(row pgx.Row) (herald.Tenant, error) {
	var t herald.Tenant
	var meta []byte
	var maxSubs, maxInFlight, created, updated, maxSources int64
	if err := row.Scan(&t.ID, &t.Name, &meta, &t.TopicPattern, &maxSubs,
		&t.Limits.DeliveriesPerSecond, &maxInFlight, &created, &updated, &t.Limits.PublishRate, &maxSources); err != nil {
		return herald.Tenant{}, err
	}
	if err := json.Unmarshal(meta, &t.Metadata); err != nil {
		return herald.Tenant{}, fmt.Errorf("tenant %s: stored metadata: %w", t.ID, err)
	}
	t.Limits.MaxSubscriptions, t.Limits.MaxInFlight, t.Limits.MaxSources = int(maxSubs), int(maxInFlight), int(maxSources)
	t.CreatedAt, t.UpdatedAt = fromNanos(created), fromNanos(updated)
	return t, nil
}

func tenantNotFound(id string) error {
	return &herald.Error{Code: herald.CodeNotFound, Field: "id", Message: "tenant " + id + " does not exist"}
}

// PutTenant creates or replaces the tenant; see herald.TenantStore.
func (s *Store) PutTenant(ctx context.Context, t herald.Tenant) (herald.Tenant, bool, error) {
	if err := s.checkOpen(); err != nil {
		return herald.Tenant{}, false, err
	}
	if t.ID == "" || !validText(t.ID) {
		return herald.Tenant{}, false, herald.FieldErrorf("id", "the tenant id must be non-empty UTF-8 without NUL bytes")
	}
	if !validText(t.Name) || !validText(t.TopicPattern) {
		return herald.Tenant{}, false, herald.FieldErrorf("name", "tenant text must be valid UTF-8 without NUL bytes")
	}
	for k, v := range t.Metadata {
		if !validText(k) || !validText(v) {
			return herald.Tenant{}, false, herald.FieldErrorf("metadata", "metadata must be valid UTF-8 without NUL bytes")
		}
	}
	now := time.Now()
	if t.UpdatedAt.IsZero() {
		t.UpdatedAt = now
	}
	if t.CreatedAt.IsZero() {
		t.CreatedAt = t.UpdatedAt
	}
	meta := t.Metadata
	if meta == nil {
		meta = map[string]string{}
	}
	metaJSON, err := json.Marshal(meta)
	if err != nil {
		return herald.Tenant{}, false, err
	}
	var stored herald.Tenant
	var created bool
	err = s.inTx(ctx, func(tx pgx.Tx) error {
		// xmax is 0 in a row version an INSERT made, and the locking
		// transaction's id in one ON CONFLICT DO UPDATE made.
		row := tx.QueryRow(ctx, `INSERT INTO tenants (`+tenantColumns+`)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
			ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, metadata = EXCLUDED.metadata,
				topic_pattern = EXCLUDED.topic_pattern, max_subscriptions = EXCLUDED.max_subscriptions,
				deliveries_per_second = EXCLUDED.deliveries_per_second, max_in_flight = EXCLUDED.max_in_flight,
				updated_at = EXCLUDED.updated_at, publish_rate = EXCLUDED.publish_rate, max_sources = EXCLUDED.max_sources
			RETURNING (xmax = 0)`, t.ID, t.Name, metaJSON, t.TopicPattern, int64(t.Limits.MaxSubscriptions),
			t.Limits.DeliveriesPerSecond, int64(t.Limits.MaxInFlight), nanos(t.CreatedAt), nanos(t.UpdatedAt), t.Limits.PublishRate, int64(t.Limits.MaxSources))
		if err := row.Scan(&created); err != nil {
			return err
		}
		var err error
		stored, err = scanTenant(tx.QueryRow(ctx, `SELECT `+tenantColumns+` FROM tenants WHERE id = $1`, t.ID))
		if err != nil {
			return err
		}
		return nil
	})
	if err != nil {
		return herald.Tenant{}, false, s.fail("put tenant", err)
	}
	return stored, created, nil
}

// GetTenant returns the tenant, or CodeNotFound.
func (s *Store) GetTenant(ctx context.Context, id string) (herald.Tenant, error) {
	if err := s.checkOpen(); err != nil {
		return herald.Tenant{}, err
	}
	if !validText(id) {
		return herald.Tenant{}, tenantNotFound(id)
	}
	t, err := scanTenant(s.pool.QueryRow(ctx, `SELECT `+tenantColumns+` FROM tenants WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return herald.Tenant{}, tenantNotFound(id)
	}
	if err != nil {
		return herald.Tenant{}, s.fail("get tenant", err)
	}
	return t, nil
}

// ListTenants returns tenants in id order after the given id.
func (s *Store) ListTenants(ctx context.Context, after string, limit int) ([]herald.Tenant, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	if !validText(after) {
		return nil, herald.FieldErrorf("after", "the page cursor is not a tenant id")
	}
	var lim any // NULL: no limit
	if limit > 0 {
		lim = int64(limit)
	}
	rows, err := s.pool.Query(ctx, `SELECT `+tenantColumns+` FROM tenants WHERE id > $1 ORDER BY id LIMIT $2`, after, lim)
	if err != nil {
		return nil, s.fail("list tenants", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (herald.Tenant, error) { return scanTenant(row) })
	if err != nil {
		return nil, s.fail("list tenants", err)
	}
	return out, nil
}

// DeleteTenant removes the tenant with its subscriptions and keys in one
// transaction.
func (s *Store) DeleteTenant(ctx context.Context, id string) (herald.TenantDeletion, error) {
	if err := s.checkOpen(); err != nil {
		return herald.TenantDeletion{}, err
	}
	if !validText(id) {
		return herald.TenantDeletion{}, tenantNotFound(id)
	}
	var out herald.TenantDeletion
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		out = herald.TenantDeletion{}
		tag, err := tx.Exec(ctx, `DELETE FROM tenants WHERE id = $1`, id)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return tenantNotFound(id)
		}
		rows, err := tx.Query(ctx, `DELETE FROM subscriptions WHERE tenant = $1 RETURNING id`, id)
		if err != nil {
			return err
		}
		if out.Subscriptions, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
			return err
		}
		if len(out.Subscriptions) > 0 {
			b := &pgx.Batch{}
			for _, table := range []string{"cursors", "retries", "dead_letters", "attempts", "topic_fences"} {
				b.Queue(`DELETE FROM `+table+` WHERE subscription_id = ANY($1)`, out.Subscriptions)
			}
			if err := tx.SendBatch(ctx, b).Close(); err != nil {
				return err
			}
		}
		rows, err = tx.Query(ctx, `DELETE FROM api_keys WHERE tenant = $1 RETURNING id`, id)
		if err != nil {
			return err
		}
		if out.Keys, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
			return err
		}
		// Shards go with their source (ON DELETE CASCADE).
		rows, err = tx.Query(ctx, `DELETE FROM sources WHERE tenant = $1 RETURNING id`, id)
		if err != nil {
			return err
		}
		out.Sources, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	})
	if err != nil {
		return herald.TenantDeletion{}, s.fail("delete tenant", err)
	}
	if len(out.Subscriptions) > 0 {
		s.announceSubscriptionChange(ctx, out.Subscriptions...)
	}
	return out, nil
}

// CountSubscriptions returns how many subscriptions the tenant has.
func (s *Store) CountSubscriptions(ctx context.Context, tenant string) (int64, error) {
	if err := s.checkOpen(); err != nil {
		return 0, err
	}
	if !validText(tenant) {
		return 0, nil
	}
	var n int64
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM subscriptions WHERE tenant = $1`, tenant).Scan(&n); err != nil {
		return 0, s.fail("count subscriptions", err)
	}
	return n, nil
}
