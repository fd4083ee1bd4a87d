package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/heraldhq/herald"
)

const tenantColumns = `id, name, metadata, topic_pattern, max_subscriptions, deliveries_per_second, max_in_flight,
	created_at, updated_at, publish_rate, max_sources`

func scanTenant(sc interface{ Scan(...any) error }) (herald.Tenant, error) {
	var t herald.Tenant
	var meta string
	var created, updated int64
	if err := sc.Scan(&t.ID, &t.Name, &meta, &t.TopicPattern, &t.Limits.MaxSubscriptions,
		&t.Limits.DeliveriesPerSecond, &t.Limits.MaxInFlight, &created, &updated, &t.Limits.PublishRate, &t.Limits.MaxSources); err != nil {
		return herald.Tenant{}, err
	}
	if err := json.Unmarshal([]byte(meta), &t.Metadata); err != nil {
		return herald.Tenant{}, fmt.Errorf("tenant %s: stored metadata: %w", t.ID, err)
	}
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
	if t.ID == "" {
		return herald.Tenant{}, false, herald.FieldErrorf("id", "the tenant id is empty")
	}
	now := time.Now()
	if t.UpdatedAt.IsZero() {
		t.UpdatedAt = now
	}
	if t.CreatedAt.IsZero() {
		t.CreatedAt = t.UpdatedAt
	}
	meta, err := json.Marshal(cmpMeta(t.Metadata))
	if err != nil {
		return herald.Tenant{}, false, err
	}
	var created bool
	var stored herald.Tenant
	err = s.withTx(ctx, func(tx *sql.Tx) error {
		var createdAt int64
		err := tx.QueryRowContext(ctx, `SELECT created_at FROM tenants WHERE id = ?`, t.ID).Scan(&createdAt)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			created = true
			_, err = tx.ExecContext(ctx, `INSERT INTO tenants (`+tenantColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
				t.ID, t.Name, string(meta), t.TopicPattern, t.Limits.MaxSubscriptions, t.Limits.DeliveriesPerSecond,
				t.Limits.MaxInFlight, nanos(t.CreatedAt), nanos(t.UpdatedAt), t.Limits.PublishRate, t.Limits.MaxSources)
		case err == nil:
			t.CreatedAt = fromNanos(createdAt)
			_, err = tx.ExecContext(ctx, `UPDATE tenants SET name = ?, metadata = ?, topic_pattern = ?, max_subscriptions = ?,
				deliveries_per_second = ?, max_in_flight = ?, updated_at = ?, publish_rate = ?, max_sources = ? WHERE id = ?`,
				t.Name, string(meta), t.TopicPattern, t.Limits.MaxSubscriptions, t.Limits.DeliveriesPerSecond,
				t.Limits.MaxInFlight, nanos(t.UpdatedAt), t.Limits.PublishRate, t.Limits.MaxSources, t.ID)
		}
		if err != nil {
			return err
		}
		stored, err = scanTenant(tx.QueryRowContext(ctx, `SELECT `+tenantColumns+` FROM tenants WHERE id = ?`, t.ID))
		return err
	})
	if err != nil {
		return herald.Tenant{}, false, s.fail("put tenant", err)
	}
	return stored, created, nil
}

// cmpMeta returns m, or an empty map for nil, so stored metadata is
// always an object.
func cmpMeta(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

// GetTenant returns the tenant, or CodeNotFound.
func (s *Store) GetTenant(ctx context.Context, id string) (herald.Tenant, error) {
	if err := s.checkOpen(); err != nil {
		return herald.Tenant{}, err
	}
	t, err := scanTenant(s.reader.QueryRowContext(ctx, `SELECT `+tenantColumns+` FROM tenants WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
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
	if limit < 1 {
		limit = -1
	}
	rows, err := s.reader.QueryContext(ctx, `SELECT `+tenantColumns+` FROM tenants WHERE id > ? ORDER BY id LIMIT ?`, after, limit)
	if err != nil {
		return nil, s.fail("list tenants", err)
	}
	defer rows.Close()
	var out []herald.Tenant
	for rows.Next() {
		t, err := scanTenant(rows)
		if err != nil {
			return nil, s.fail("list tenants", err)
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
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
	var out herald.TenantDeletion
	err := s.withTx(ctx, func(tx *sql.Tx) error {
		out = herald.TenantDeletion{}
		n, err := execCount(ctx, tx, `DELETE FROM tenants WHERE id = ?`, id)
		if err != nil {
			return err
		}
		if n == 0 {
			return tenantNotFound(id)
		}
		rows, err := tx.QueryContext(ctx, `DELETE FROM subscriptions WHERE tenant = ? RETURNING sid, id`, id)
		if err != nil {
			return err
		}
		var sids []int64
		for rows.Next() {
			var sid int64
			var sub string
			if err := rows.Scan(&sid, &sub); err != nil {
				rows.Close()
				return err
			}
			sids = append(sids, sid)
			out.Subscriptions = append(out.Subscriptions, sub)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for _, sid := range sids {
			for _, table := range []string{"cursors", "retries", "dead_letters", "attempts", "topic_fences"} {
				if _, err := tx.ExecContext(ctx, `DELETE FROM `+table+` WHERE sid = ?`, sid); err != nil {
					return fmt.Errorf("delete %s: %w", table, err)
				}
			}
		}
		krows, err := tx.QueryContext(ctx, `DELETE FROM api_keys WHERE tenant = ? RETURNING id`, id)
		if err != nil {
			return err
		}
		defer krows.Close()
		for krows.Next() {
			var k string
			if err := krows.Scan(&k); err != nil {
				return err
			}
			out.Keys = append(out.Keys, k)
		}
		if err := krows.Err(); err != nil {
			return err
		}
		srows, err := tx.QueryContext(ctx, `DELETE FROM sources WHERE tenant = ? RETURNING id`, id)
		if err != nil {
			return err
		}
		defer srows.Close()
		for srows.Next() {
			var src string
			if err := srows.Scan(&src); err != nil {
				return err
			}
			out.Sources = append(out.Sources, src)
		}
		if err := srows.Err(); err != nil {
			return err
		}
		for _, src := range out.Sources {
			if _, err := tx.ExecContext(ctx, `DELETE FROM source_shards WHERE source_id = ?`, src); err != nil {
				return fmt.Errorf("delete source_shards: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return herald.TenantDeletion{}, s.fail("delete tenant", err)
	}
	return out, nil
}

// CountSubscriptions returns how many subscriptions the tenant has.
func (s *Store) CountSubscriptions(ctx context.Context, tenant string) (int64, error) {
	if err := s.checkOpen(); err != nil {
		return 0, err
	}
	var n int64
	if err := s.reader.QueryRowContext(ctx, `SELECT count(*) FROM subscriptions WHERE tenant = ?`, tenant).Scan(&n); err != nil {
		return 0, s.fail("count subscriptions", err)
	}
	return n, nil
}
