package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/heraldhq/herald"
	"github.com/jackc/pgx/v5"
)

// addStatsSQL adds a settlement's delta to a subscription's statistics in
// one statement: counters and histogram buckets add up, and the sample
// keeps the newest $6 attempts of the stored one and the delta's.
const addStatsSQL = `INSERT INTO delivery_stats AS d (subscription_id, delivered, failed, latency, sample, updated_at)
	VALUES ($1, $2, $3, $4::bigint[], (SELECT COALESCE(jsonb_agg(e ORDER BY o), '[]'::jsonb)
		FROM (SELECT e, o FROM jsonb_array_elements($5::jsonb) WITH ORDINALITY AS t(e, o) ORDER BY o DESC LIMIT $6) s), $7)
	ON CONFLICT (subscription_id) DO UPDATE SET
		delivered = d.delivered + excluded.delivered,
		failed = d.failed + excluded.failed,
		latency = ARRAY(SELECT COALESCE(a, 0) + COALESCE(b, 0)
			FROM unnest(d.latency, excluded.latency) WITH ORDINALITY AS t(a, b, o) ORDER BY o),
		sample = (SELECT COALESCE(jsonb_agg(e ORDER BY o), '[]'::jsonb)
			FROM (SELECT e, o FROM jsonb_array_elements(d.sample || excluded.sample) WITH ORDINALITY AS t(e, o)
				ORDER BY o DESC LIMIT $6) s),
		updated_at = excluded.updated_at`

// queueStats queues the statement that adds the delta.
func queueStats(b *pgx.Batch, id string, d *herald.StatsDelta) error {
	sample, err := herald.MarshalSample(d.Sample)
	if err != nil {
		return err
	}
	b.Queue(addStatsSQL, id, d.Delivered, d.Failed, d.Latency[:], string(sample), max(d.SampleLimit, 0), d.At.UnixNano())
	return nil
}

// DeliveryStats returns the subscription's delivery statistics; see
// herald.SubscriptionStore.
func (s *Store) DeliveryStats(ctx context.Context, id string) (herald.DeliveryStats, error) {
	if err := s.checkOpen(); err != nil {
		return herald.DeliveryStats{}, err
	}
	if !validText(id) {
		return herald.DeliveryStats{}, nil
	}
	var st herald.DeliveryStats
	var latency []int64
	var sample []byte
	var updated int64
	err := s.pool.QueryRow(ctx, `SELECT delivered, failed, latency, sample::text, updated_at
		FROM delivery_stats WHERE subscription_id = $1`, id).Scan(&st.Delivered, &st.Failed, &latency, &sample, &updated)
	if errors.Is(err, pgx.ErrNoRows) {
		return herald.DeliveryStats{}, nil
	}
	if err != nil {
		return st, s.fail("read delivery stats", err)
	}
	copy(st.Latency[:], latency)
	if st.Sample, err = herald.UnmarshalSample(sample, id); err != nil {
		return st, s.fail("read delivery stats", fmt.Errorf("decode the sample: %w", err))
	}
	st.UpdatedAt = fromNanos(updated)
	return st, nil
}
