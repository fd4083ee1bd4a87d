package postgres

import (
	"context"
	"github.com/jackc/pgx/v5"
	"time"

	"github.com/heraldhq/herald"
)

const usageDayLayout = "2006-01-02"

// AddUsage adds the rows' counts to the stored rows, in one transaction.
func (s *Store) AddUsage(ctx context.Context, rows []herald.UsageDay) error {
	if err := s.checkOpen(); err != nil {
		return err
	}
	if len(rows) == 0 {
		return nil
	}
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		for _, r := range rows {
			if _, err := tx.Exec(ctx, `INSERT INTO usage_daily (tenant, day, events_published, bytes_published,
				deliveries_succeeded, deliveries_failed, dead_lettered, bytes_delivered) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
				ON CONFLICT (tenant, day) DO UPDATE SET
					events_published = usage_daily.events_published + excluded.events_published,
					bytes_published = usage_daily.bytes_published + excluded.bytes_published,
					deliveries_succeeded = usage_daily.deliveries_succeeded + excluded.deliveries_succeeded,
					deliveries_failed = usage_daily.deliveries_failed + excluded.deliveries_failed,
					dead_lettered = usage_daily.dead_lettered + excluded.dead_lettered,
					bytes_delivered = usage_daily.bytes_delivered + excluded.bytes_delivered`,
				r.Tenant, r.Day.UTC().Format(usageDayLayout), r.EventsPublished, r.BytesPublished,
				r.DeliveriesSucceeded, r.DeliveriesFailed, r.DeadLettered, r.BytesDelivered); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return s.fail("add usage", err)
	}
	return nil
}

// ListUsage returns the matching rows by day then tenant.
func (s *Store) ListUsage(ctx context.Context, f herald.UsageFilter) ([]herald.UsageDay, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	q := `SELECT tenant, day, events_published, bytes_published, deliveries_succeeded, deliveries_failed, dead_lettered, bytes_delivered
		FROM usage_daily WHERE day >= $1 AND day <= $2`
	args := []any{f.From.UTC().Format(usageDayLayout), f.To.UTC().Format(usageDayLayout)}
	if !f.AllTenants {
		q += ` AND tenant = $3`
		args = append(args, f.Tenant)
	}
	rows, err := s.pool.Query(ctx, q+` ORDER BY day, tenant`, args...)
	if err != nil {
		return nil, s.fail("list usage", err)
	}
	defer rows.Close()
	var out []herald.UsageDay
	for rows.Next() {
		var u herald.UsageDay
		var day string
		if err := rows.Scan(&u.Tenant, &day, &u.EventsPublished, &u.BytesPublished, &u.DeliveriesSucceeded,
			&u.DeliveriesFailed, &u.DeadLettered, &u.BytesDelivered); err != nil {
			return nil, s.fail("list usage", err)
		}
		if u.Day, err = time.Parse(usageDayLayout, day); err != nil {
			return nil, s.fail("list usage", err)
		}
		out = append(out, u)
	}
	if err := rows.Err(); err != nil {
		return nil, s.fail("list usage", err)
	}
	return out, nil
}
