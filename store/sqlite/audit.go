package sqlite

import (
	"context"
	"database/sql"
	"time"

	"github.com/heraldhq/herald"
)

const auditColumns = `id, time, principal, tenant, method, route, object, status, request_id, remote, changes`

// AppendAudit stores the entry and returns its id.
func (s *Store) AppendAudit(ctx context.Context, e herald.AuditEntry) (int64, error) {
	if err := s.checkOpen(); err != nil {
		return 0, err
	}
	var changes []byte
	if len(e.Changes) > 0 {
		changes = e.Changes
	}
	var id int64
	err := s.withTx(ctx, func(tx *sql.Tx) error {
		return tx.QueryRowContext(ctx, `INSERT INTO audit (time, principal, tenant, method, route, object, status, request_id, remote, changes)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`,
			nanos(e.Time), e.Principal, e.Tenant, e.Method, e.Route, e.Object, e.Status, e.RequestID, e.Remote, changes).Scan(&id)
	})
	if err != nil {
		return 0, s.fail("append audit", err)
	}
	return id, nil
}

// ListAudit returns the matching entries, newest first.
func (s *Store) ListAudit(ctx context.Context, f herald.AuditFilter) ([]herald.AuditEntry, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	q := `SELECT ` + auditColumns + ` FROM audit WHERE 1 = 1`
	var args []any
	add := func(cond string, v any) {
		q += ` AND ` + cond
		args = append(args, v)
	}
	for _, c := range []struct{ col, v string }{{"principal", f.Principal}, {"tenant", f.Tenant}, {"method", f.Method},
		{"route", f.Route}, {"object", f.Object}} {
		if c.v != "" {
			add(c.col+` = ?`, c.v)
		}
	}
	if !f.Since.IsZero() {
		add(`time >= ?`, clampNanos(f.Since))
	}
	if !f.Until.IsZero() {
		add(`time < ?`, clampNanos(f.Until))
	}
	if f.BeforeID > 0 {
		add(`id < ?`, f.BeforeID)
	}
	q += ` ORDER BY id DESC`
	if f.Limit > 0 {
		q += ` LIMIT ?`
		args = append(args, f.Limit)
	}
	rows, err := s.reader.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, s.fail("list audit", err)
	}
	defer rows.Close()
	var out []herald.AuditEntry
	for rows.Next() {
		var e herald.AuditEntry
		var at int64
		var changes []byte
		if err := rows.Scan(&e.ID, &at, &e.Principal, &e.Tenant, &e.Method, &e.Route, &e.Object, &e.Status,
			&e.RequestID, &e.Remote, &changes); err != nil {
			return nil, s.fail("list audit", err)
		}
		e.Time = fromNanos(at)
		if len(changes) > 0 {
			e.Changes = changes
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, s.fail("list audit", err)
	}
	return out, nil
}

// PruneAudit deletes up to limit entries older than before.
func (s *Store) PruneAudit(ctx context.Context, before time.Time, limit int) (int64, error) {
	if err := s.checkOpen(); err != nil {
		return 0, err
	}
	var n int64
	err := s.withTx(ctx, func(tx *sql.Tx) error {
		var err error
		n, err = execCount(ctx, tx, `DELETE FROM audit WHERE id IN (SELECT id FROM audit WHERE time < ? ORDER BY time LIMIT ?)`,
			clampNanos(before), limit)
		return err
	})
	if err != nil {
		return 0, s.fail("prune audit", err)
	}
	return n, nil
}
