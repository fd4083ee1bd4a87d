package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/heraldhq/herald"
)

var _ herald.TimeStore = (*Store)(nil)

const scheduledColumns = `topic, id, due_at, time_ns, event_type, event_key, idem_key, content_type, headers, payload`

func scanScheduled(row pgx.Row) (herald.ScheduledEvent, error) {
	var e herald.ScheduledEvent
	var due, at int64
	var headers []byte
	if err := row.Scan(&e.Topic, &e.ID, &due, &at, &e.Type, &e.Key, &e.IdempotencyKey, &e.ContentType, &headers, &e.Payload, &e.Pos); err != nil {
		return e, err
	}
	e.DueAt, e.Time = fromNanos(due), fromNanos(at)
	if headers != nil {
		if err := json.Unmarshal(headers, &e.Headers); err != nil {
			return e, fmt.Errorf("scheduled event %s headers: %w", e.ID, err)
		}
	}
	return e, nil
}

func checkScheduled(e *herald.ScheduledEvent) error {
	switch {
	case e.Topic == "" || e.ID == "" || !validText(e.Topic):
		return herald.FieldErrorf("id", "a scheduled event needs a topic and an id")
	case !inNanosRange(e.DueAt) || !inNanosRange(e.Time) || e.DueAt.IsZero() || e.Time.IsZero():
		return herald.FieldErrorf("deliver_at", "the due time must be between %s and %s", minTime.UTC(), maxTime.UTC())
	}
	return herald.ValidateEvent(&e.Event)
}

// ScheduleEvents commits the events to be published at their due times,
// all or none; see herald.TimeStore.
func (s *Store) ScheduleEvents(ctx context.Context, events []herald.ScheduledEvent) ([]herald.AppendResult, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	for i := range events {
		if err := checkScheduled(&events[i]); err != nil {
			return nil, err
		}
	}
	results := make([]herald.AppendResult, len(events))
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		for i := range events {
			e := &events[i]
			headers, err := encodeHeaders(e.Headers)
			if err != nil {
				return err
			}
			var h any
			if headers != nil {
				h = json.RawMessage(headers)
			}
			tag, err := tx.Exec(ctx, `INSERT INTO scheduled_events (`+scheduledColumns+`)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING`,
				e.Topic, e.ID, e.DueAt.UnixNano(), e.Time.UnixNano(), e.Type, e.Key, e.IdempotencyKey, e.ContentType, h, e.Payload)
			if err != nil {
				return err
			}
			if tag.RowsAffected() == 1 {
				results[i] = herald.AppendResult{ID: e.ID}
				continue
			}
			var id string
			if err := tx.QueryRow(ctx, `SELECT id FROM scheduled_events WHERE topic = $1 AND (id = $2 OR ($3 <> '' AND idem_key = $3)) LIMIT 1`,
				e.Topic, e.ID, e.IdempotencyKey).Scan(&id); err != nil {
				return err
			}
			results[i] = herald.AppendResult{ID: id, Duplicate: true}
		}
		return nil
	})
	if err != nil {
		return nil, s.fail("schedule events", err)
	}
	return results, nil
}

func (s *Store) queryScheduled(ctx context.Context, op, q string, args ...any) ([]herald.ScheduledEvent, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, s.fail(op, err)
	}
	defer rows.Close()
	var out []herald.ScheduledEvent
	for rows.Next() {
		e, err := scanScheduled(rows)
		if err != nil {
			return nil, s.fail(op, err)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, s.fail(op, err)
	}
	return out, nil
}

// DueEvents returns up to limit pending events due at or before now, in
// due order.
func (s *Store) DueEvents(ctx context.Context, now time.Time, after herald.DuePosition, limit int) ([]herald.ScheduledEvent, error) {
	if limit < 1 {
		return nil, herald.FieldErrorf("limit", "limit must be at least 1, got %d", limit)
	}
	return s.queryScheduled(ctx, "due events", `SELECT `+scheduledColumns+`, sid FROM scheduled_events
		WHERE due_at <= $1 AND (due_at, sid) > ($2, $3) ORDER BY due_at, sid LIMIT $4`,
		now.UnixNano(), after.Nanos(), after.Pos, limit)
}

// NextDue returns the earliest pending due time, or zero.
func (s *Store) NextDue(ctx context.Context) (time.Time, error) {
	if err := s.checkOpen(); err != nil {
		return time.Time{}, err
	}
	var due *int64
	if err := s.pool.QueryRow(ctx, `SELECT min(due_at) FROM scheduled_events`).Scan(&due); err != nil {
		return time.Time{}, s.fail("next due", err)
	}
	if due == nil {
		return time.Time{}, nil
	}
	return fromNanos(*due), nil
}

// DeleteScheduled removes the named pending events in one statement.
func (s *Store) DeleteScheduled(ctx context.Context, refs []herald.EventRef) error {
	if err := s.checkOpen(); err != nil {
		return err
	}
	if len(refs) == 0 {
		return nil
	}
	topics, ids := make([]string, len(refs)), make([]string, len(refs))
	for i, r := range refs {
		topics[i], ids[i] = r.Topic, r.ID
	}
	_, err := s.exec(ctx, `DELETE FROM scheduled_events s USING unnest($1::text[], $2::text[]) AS r(topic, id)
		WHERE s.topic = r.topic AND s.id = r.id`, topics, ids)
	return s.fail("delete scheduled events", err)
}

// CancelScheduled removes one pending event, or returns CodeNotFound.
func (s *Store) CancelScheduled(ctx context.Context, topic, id string) error {
	if err := s.checkOpen(); err != nil {
		return err
	}
	if !validText(topic) || !validText(id) {
		return scheduledNotFound(topic, id)
	}
	n, err := s.exec(ctx, `DELETE FROM scheduled_events WHERE topic = $1 AND id = $2`, topic, id)
	if err != nil {
		return s.fail("cancel scheduled event", err)
	}
	if n == 0 {
		return scheduledNotFound(topic, id)
	}
	return nil
}

func scheduledNotFound(topic, id string) error {
	return &herald.Error{Code: herald.CodeNotFound, Field: "id",
		Message: "no event " + id + " is pending in topic " + topic + ": it was never delayed, was cancelled, or is already published"}
}

// ListScheduled returns a page of the topic's pending events in due order.
func (s *Store) ListScheduled(ctx context.Context, topic string, afterDue time.Time, afterID string, limit int) ([]herald.ScheduledEvent, error) {
	if limit < 1 {
		return nil, herald.FieldErrorf("limit", "limit must be at least 1, got %d", limit)
	}
	if !validText(topic) || !validText(afterID) {
		return nil, nil
	}
	var after int64
	if !afterDue.IsZero() {
		after = afterDue.UnixNano()
	}
	return s.queryScheduled(ctx, "list scheduled events", `SELECT `+scheduledColumns+`, sid FROM scheduled_events
		WHERE topic = $1 AND (due_at > $2 OR (due_at = $2 AND id > $3)) ORDER BY due_at, id LIMIT $4`,
		topic, after, afterID, limit)
}

// CountScheduled returns how many events are pending.
func (s *Store) CountScheduled(ctx context.Context) (int64, error) {
	if err := s.checkOpen(); err != nil {
		return 0, err
	}
	var n int64
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM scheduled_events`).Scan(&n); err != nil {
		return 0, s.fail("count scheduled events", err)
	}
	return n, nil
}

const scheduleColumns = `name, spec, paused, last_tick, created_at, updated_at`

func scanSchedule(row pgx.Row, extra ...any) (herald.Schedule, error) {
	var sch herald.Schedule
	var spec []byte
	var last, created, updated int64
	if err := row.Scan(append([]any{&sch.Name, &spec, &sch.Paused, &last, &created, &updated}, extra...)...); err != nil {
		return sch, err
	}
	sch.LastTick, sch.CreatedAt, sch.UpdatedAt = fromNanos(last), fromNanos(created), fromNanos(updated)
	return sch, herald.DecodeScheduleSpec(spec, &sch)
}

func scheduleNotFound(name string) error {
	return &herald.Error{Code: herald.CodeNotFound, Field: "name", Message: "schedule " + name + " does not exist"}
}

// PutSchedule creates or replaces a schedule's definition.
func (s *Store) PutSchedule(ctx context.Context, sch herald.Schedule) (herald.Schedule, bool, error) {
	if err := s.checkOpen(); err != nil {
		return herald.Schedule{}, false, err
	}
	if sch.Name == "" || !validText(sch.Name) {
		return herald.Schedule{}, false, herald.FieldErrorf("name", "the schedule name must be non-empty UTF-8 without NUL bytes")
	}
	spec, err := herald.EncodeScheduleSpec(sch)
	if err != nil {
		return herald.Schedule{}, false, err
	}
	var created bool
	out, err := scanSchedule(s.pool.QueryRow(ctx, `INSERT INTO schedules (`+scheduleColumns+`) VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (name) DO UPDATE SET spec = excluded.spec, paused = excluded.paused, updated_at = excluded.updated_at
		RETURNING `+scheduleColumns+`, (xmax = 0)`, sch.Name, json.RawMessage(spec), sch.Paused, nanos(sch.LastTick), nanos(sch.CreatedAt), nanos(sch.UpdatedAt)), &created)
	if err != nil {
		return herald.Schedule{}, false, s.fail("put schedule", err)
	}
	return out, created, nil
}

// GetSchedule returns the schedule or CodeNotFound.
func (s *Store) GetSchedule(ctx context.Context, name string) (herald.Schedule, error) {
	if err := s.checkOpen(); err != nil {
		return herald.Schedule{}, err
	}
	if !validText(name) {
		return herald.Schedule{}, scheduleNotFound(name)
	}
	sch, err := scanSchedule(s.pool.QueryRow(ctx, `SELECT `+scheduleColumns+` FROM schedules WHERE name = $1`, name))
	if errors.Is(err, pgx.ErrNoRows) {
		return herald.Schedule{}, scheduleNotFound(name)
	}
	if err != nil {
		return herald.Schedule{}, s.fail("get schedule", err)
	}
	return sch, nil
}

// ListSchedules returns a page of schedules in name order.
func (s *Store) ListSchedules(ctx context.Context, after string, limit int) ([]herald.Schedule, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	if limit < 1 {
		return nil, herald.FieldErrorf("limit", "limit must be at least 1, got %d", limit)
	}
	if !validText(after) {
		return nil, nil
	}
	rows, err := s.pool.Query(ctx, `SELECT `+scheduleColumns+` FROM schedules WHERE name > $1 ORDER BY name LIMIT $2`, after, limit)
	if err != nil {
		return nil, s.fail("list schedules", err)
	}
	defer rows.Close()
	var out []herald.Schedule
	for rows.Next() {
		sch, err := scanSchedule(rows)
		if err != nil {
			return nil, s.fail("list schedules", err)
		}
		out = append(out, sch)
	}
	if err := rows.Err(); err != nil {
		return nil, s.fail("list schedules", err)
	}
	return out, nil
}

// DeleteSchedule removes the schedule or returns CodeNotFound.
func (s *Store) DeleteSchedule(ctx context.Context, name string) error {
	return s.scheduleExec(ctx, "delete schedule", name, `DELETE FROM schedules WHERE name = $1`, name)
}

// SetSchedulePaused pauses or resumes the schedule.
func (s *Store) SetSchedulePaused(ctx context.Context, name string, paused bool, now time.Time) (herald.Schedule, error) {
	if err := s.scheduleExec(ctx, "pause schedule", name, `UPDATE schedules SET paused = $2, updated_at = $3 WHERE name = $1`, name, paused, nanos(now)); err != nil {
		return herald.Schedule{}, err
	}
	return s.GetSchedule(ctx, name)
}

// AdvanceSchedule moves the schedule's last tick forward to tick.
func (s *Store) AdvanceSchedule(ctx context.Context, name string, tick time.Time) error {
	return s.scheduleExec(ctx, "advance schedule", name, `UPDATE schedules SET last_tick = greatest(last_tick, $2) WHERE name = $1`, name, nanos(tick))
}

func (s *Store) scheduleExec(ctx context.Context, op, name, q string, args ...any) error {
	if err := s.checkOpen(); err != nil {
		return err
	}
	if !validText(name) {
		return scheduleNotFound(name)
	}
	n, err := s.exec(ctx, q, args...)
	if err != nil {
		return s.fail(op, err)
	}
	if n == 0 {
		return scheduleNotFound(name)
	}
	return nil
}

// AcquireNamedLease gives node the named lease until now+ttl if it is
// free, expired or node's own, and reports whether node holds it.
func (s *Store) AcquireNamedLease(ctx context.Context, name, node string, now time.Time, ttl time.Duration) (bool, error) {
	if err := s.checkOpen(); err != nil {
		return false, err
	}
	if node == "" || !validText(node) || !validText(name) {
		return false, herald.FieldErrorf("node", "the node and lease names must be non-empty UTF-8 without NUL bytes")
	}
	var holder string
	err := s.pool.QueryRow(ctx, `INSERT INTO leases (name, node, expires_at) VALUES ($1, $2, $3)
		ON CONFLICT (name) DO UPDATE SET node = excluded.node, expires_at = excluded.expires_at
		WHERE leases.node = excluded.node OR leases.expires_at <= $4
		RETURNING node`, name, node, now.Add(ttl).UnixNano(), now.UnixNano()).Scan(&holder)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, s.fail("acquire lease", err)
	}
	return holder == node, nil
}

// ReleaseNamedLease gives up node's lease, if it holds it.
func (s *Store) ReleaseNamedLease(ctx context.Context, name, node string) error {
	if err := s.checkOpen(); err != nil {
		return err
	}
	_, err := s.exec(ctx, `DELETE FROM leases WHERE name = $1 AND node = $2`, name, node)
	return s.fail("release lease", err)
}
