package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/heraldhq/herald"
)

const auditColumns = `id, time, principal, tenant, method, route, object, status, request_id, remote, changes`

// AppendAudit stores the entry and returns its id.
func (s *Store) AppendAudit(ctx context.Context, e herald.AuditEntry) (int64, error) {
	if err := s.checkOpen(); err != nil {
		return 0, err
	}
	for _, v := range []string{e.Principal, e.Tenant, e.Method, e.Route, e.Object, e.RequestID, e.Remote} {
		if !validText(v) {
			return 0, herald.FieldErrorf("audit", "audit text must be valid UTF-8 without NUL bytes")
		}
	}
	if err := checkTimes(namedTime{"time", e.Time}); err != nil {
		return 0, err
	}
	var changes []byte
	if len(e.Changes) > 0 {
		changes = e.Changes
	}
	var id int64
	err := s.pool.QueryRow(ctx, `INSERT INTO audit (time, principal, tenant, method, route, object, status, request_id, remote, changes)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id`,
		nanos(e.Time), e.Principal, e.Tenant, e.Method, e.Route, e.Object, int32(e.Status), e.RequestID, e.Remote, changes).Scan(&id)
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
	q := `SELECT ` + auditColumns + ` FROM audit WHERE true`
	var args []any
	add := func(cond string, v any) {
		args = append(args, v)
		q += fmt.Sprintf(` AND `+cond, len(args))
	}
	for _, c := range []struct{ col, v string }{{"principal", f.Principal}, {"tenant", f.Tenant}, {"method", f.Method},
		{"route", f.Route}, {"object", f.Object}} {
		if c.v != "" {
			if !validText(c.v) {
				return nil, nil // no stored entry has it
			}
			add(c.col+` = $%d`, c.v)
		}
	}
	if !f.Since.IsZero() {
		add(`time >= $%d`, clampedNanos(f.Since))
	}
	if !f.Until.IsZero() {
		add(`time < $%d`, clampedNanos(f.Until))
	}
	if f.BeforeID > 0 {
		add(`id < $%d`, f.BeforeID)
	}
	q += ` ORDER BY id DESC`
	if f.Limit > 0 {
		args = append(args, f.Limit)
		q += fmt.Sprintf(` LIMIT $%d`, len(args))
	}
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, s.fail("list audit", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (herald.AuditEntry, error) {
		var e herald.AuditEntry
		var at int64
		var status int32
		var changes []byte
		err := row.Scan(&e.ID, &at, &e.Principal, &e.Tenant, &e.Method, &e.Route, &e.Object, &status,
			&e.RequestID, &e.Remote, &changes)
		e.Time, e.Status = fromNanos(at), int(status)
		if len(changes) > 0 {
			e.Changes = changes
		}
		return e, err
	})
	if err != nil {
		return nil, s.fail("list audit", err)
	}
	return out, nil
}

// clampedNanos is nanos for a time that may be outside the stored range.
func clampedNanos(t time.Time) int64 {
	switch {
	case t.Before(minTime):
		return minTime.UnixNano()
	case t.After(maxTime):
		return maxTime.UnixNano()
	}
	return t.UnixNano()
}

// PruneAudit deletes up to limit entries older than before.
func (s *Store) PruneAudit(ctx context.Context, before time.Time, limit int) (int64, error) {
	if err := s.checkOpen(); err != nil {
		return 0, err
	}
	n, err := s.exec(ctx, `DELETE FROM audit WHERE id IN (SELECT id FROM audit WHERE time < $1 ORDER BY time LIMIT $2)`,
		clampedNanos(before), limit)
	if err != nil {
		return 0, s.fail("prune audit", err)
	}
	return n, nil
}
