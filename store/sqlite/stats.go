package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/heraldhq/herald"
)

// DeliveryStats returns the subscription's delivery statistics; see
// herald.SubscriptionStore.
func (s *Store) DeliveryStats(ctx context.Context, id string) (herald.DeliveryStats, error) {
	if err := s.checkOpen(); err != nil {
		return herald.DeliveryStats{}, err
	}
	st, err := readStats(ctx, s.reader, statsByIDSQL, id, id)
	if err != nil {
		return herald.DeliveryStats{}, s.fail("read delivery stats", err)
	}
	return st, nil
}

// queryer is what readStats needs of a database or a transaction.
type queryer interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

const (
	statsColumns  = `SELECT d.delivered, d.failed, d.latency, d.sample, d.updated_at FROM delivery_stats d`
	statsByIDSQL  = statsColumns + ` JOIN subscriptions s ON s.sid = d.sid WHERE s.id = ?`
	statsBySIDSQL = statsColumns + ` WHERE d.sid = ?`
)

// readStats reads the statistics that query selects by arg, of the
// subscription with the given id.
func readStats(ctx context.Context, q queryer, query string, arg any, id string) (herald.DeliveryStats, error) {
	var st herald.DeliveryStats
	var latency, sample []byte
	var updated int64
	err := q.QueryRowContext(ctx, query, arg).Scan(&st.Delivered, &st.Failed, &latency, &sample, &updated)
	if errors.Is(err, sql.ErrNoRows) {
		return herald.DeliveryStats{}, nil
	}
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(latency, &st.Latency); err != nil {
		return st, fmt.Errorf("decode the latency histogram: %w", err)
	}
	if st.Sample, err = herald.UnmarshalSample(sample, id); err != nil {
		return st, fmt.Errorf("decode the sample: %w", err)
	}
	st.UpdatedAt = fromNanos(updated)
	return st, nil
}

// addStats adds a settlement's delta to the subscription's statistics,
// inside Settle's transaction: the writer reads the row and writes it
// back, one row per subscription and settlement that carries a delta.
func addStats(ctx context.Context, tx *sql.Tx, sid int64, id string, d *herald.StatsDelta) error {
	st, err := readStats(ctx, tx, statsBySIDSQL, sid, id)
	if err != nil {
		return err
	}
	st.Apply(d)
	latency, err := json.Marshal(&st.Latency)
	if err != nil {
		return err
	}
	sample, err := herald.MarshalSample(st.Sample)
	if err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO delivery_stats (sid, delivered, failed, latency, sample, updated_at)
		VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (sid) DO UPDATE SET delivered = excluded.delivered, failed = excluded.failed,
		latency = excluded.latency, sample = excluded.sample, updated_at = excluded.updated_at`,
		sid, st.Delivered, st.Failed, latency, sample, subNanos(st.UpdatedAt))
	return err
}
