package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/heraldhq/herald"
)

var _ herald.TimeStore = (*Store)(nil)

const scheduledColumns = `topic, id, due_at, time, event_type, event_key, idem_key, content_type, headers, payload`

func scanScheduled(rows *sql.Rows) (herald.ScheduledEvent, error) {
	var e herald.ScheduledEvent
	var due, at int64
	var headers []byte
	if err := rows.Scan(&e.Topic, &e.ID, &due, &at, &e.Type, &e.Key, &e.IdempotencyKey, &e.ContentType, &headers, &e.Payload, &e.Pos); err != nil {
		return e, err
	}
	e.DueAt, e.Time = time.Unix(0, due).UTC(), time.Unix(0, at).UTC()
	var err error
	e.Headers, err = decodeHeaders(headers)
	return e, err
}

func checkScheduled(e *herald.ScheduledEvent) error {
	switch {
	case e.Topic == "" || e.ID == "":
		return herald.FieldErrorf("id", "a scheduled event needs a topic and an id")
	case e.DueAt.IsZero() || e.Time.IsZero():
		return herald.FieldErrorf("deliver_at", "a scheduled event needs its due time and its time")
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
	err := s.withTx(ctx, func(tx *sql.Tx) error {
		ins, err := tx.PrepareContext(ctx, `INSERT INTO scheduled_events (`+scheduledColumns+`)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`)
		if err != nil {
			return err
		}
		defer ins.Close()
		for i := range events {
			e := &events[i]
			var headers []byte
			if len(e.Headers) > 0 {
				headers = encodeHeaders(e.Headers)
			}
			res, err := ins.ExecContext(ctx, e.Topic, e.ID, e.DueAt.UnixNano(), e.Time.UnixNano(), e.Type, e.Key,
				e.IdempotencyKey, e.ContentType, headers, e.Payload)
			if err != nil {
				return err
			}
			if n, _ := res.RowsAffected(); n == 1 {
				results[i] = herald.AppendResult{ID: e.ID}
				continue
			}
			var id string
			err = tx.QueryRowContext(ctx, `SELECT id FROM scheduled_events WHERE topic = ?1 AND (id = ?2 OR (?3 <> '' AND idem_key = ?3)) LIMIT 1`,
				e.Topic, e.ID, e.IdempotencyKey).Scan(&id)
			if err != nil {
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
	rows, err := s.reader.QueryContext(ctx, q, args...)
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
		WHERE due_at <= ? AND (due_at, sid) > (?, ?) ORDER BY due_at, sid LIMIT ?`,
		now.UnixNano(), after.Nanos(), after.Pos, limit)
}

// NextDue returns the earliest pending due time, or zero.
func (s *Store) NextDue(ctx context.Context) (time.Time, error) {
	if err := s.checkOpen(); err != nil {
		return time.Time{}, err
	}
	var due sql.NullInt64
	if err := s.reader.QueryRowContext(ctx, `SELECT min(due_at) FROM scheduled_events`).Scan(&due); err != nil {
		return time.Time{}, s.fail("next due", err)
	}
	if !due.Valid {
		return time.Time{}, nil
	}
	return time.Unix(0, due.Int64).UTC(), nil
}

// DeleteScheduled removes the named pending events in one transaction.
func (s *Store) DeleteScheduled(ctx context.Context, refs []herald.EventRef) error {
	if err := s.checkOpen(); err != nil {
		return err
	}
	if len(refs) == 0 {
		return nil
	}
	err := s.withTx(ctx, func(tx *sql.Tx) error {
		del, err := tx.PrepareContext(ctx, `DELETE FROM scheduled_events WHERE topic = ? AND id = ?`)
		if err != nil {
			return err
		}
		defer del.Close()
		for _, r := range refs {
			if _, err := del.ExecContext(ctx, r.Topic, r.ID); err != nil {
				return err
			}
		}
		return nil
	})
	return s.fail("delete scheduled events", err)
}

// CancelScheduled removes one pending event, or returns CodeNotFound.
func (s *Store) CancelScheduled(ctx context.Context, topic, id string) error {
	if err := s.checkOpen(); err != nil {
		return err
	}
	var n int64
	err := s.withTx(ctx, func(tx *sql.Tx) error {
		var err error
		n, err = execCount(ctx, tx, `DELETE FROM scheduled_events WHERE topic = ? AND id = ?`, topic, id)
		return err
	})
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
	var after int64
	if !afterDue.IsZero() {
		after = afterDue.UnixNano()
	}
	return s.queryScheduled(ctx, "list scheduled events", `SELECT `+scheduledColumns+`, sid FROM scheduled_events
		WHERE topic = ?1 AND (due_at > ?2 OR (due_at = ?2 AND id > ?3)) ORDER BY due_at, id LIMIT ?4`,
		topic, after, afterID, limit)
}

// CountScheduled returns how many events are pending.
func (s *Store) CountScheduled(ctx context.Context) (int64, error) {
	if err := s.checkOpen(); err != nil {
		return 0, err
	}
	var n int64
	if err := s.reader.QueryRowContext(ctx, `SELECT count(*) FROM scheduled_events`).Scan(&n); err != nil {
		return 0, s.fail("count scheduled events", err)
	}
	return n, nil
}

const scheduleColumns = `name, spec, paused, last_tick, created_at, updated_at`

func scanSchedule(sc interface{ Scan(...any) error }) (herald.Schedule, error) {
	var sch herald.Schedule
	var spec []byte
	var last, created, updated int64
	if err := sc.Scan(&sch.Name, &spec, &sch.Paused, &last, &created, &updated); err != nil {
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
	if sch.Name == "" || !utf8.ValidString(sch.Name) || strings.ContainsRune(sch.Name, 0) {
		return herald.Schedule{}, false, herald.FieldErrorf("name", "the schedule name must be non-empty UTF-8 without NUL bytes")
	}
	spec, err := herald.EncodeScheduleSpec(sch)
	if err != nil {
		return herald.Schedule{}, false, err
	}
	var out herald.Schedule
	var created bool
	err = s.withTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE schedules SET spec = ?, paused = ?, updated_at = ? WHERE name = ?`,
			spec, sch.Paused, nanos(sch.UpdatedAt), sch.Name)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			created = true
			if _, err := tx.ExecContext(ctx, `INSERT INTO schedules (`+scheduleColumns+`) VALUES (?, ?, ?, ?, ?, ?)`,
				sch.Name, spec, sch.Paused, nanos(sch.LastTick), nanos(sch.CreatedAt), nanos(sch.UpdatedAt)); err != nil {
				return err
			}
		}
		out, err = scanSchedule(tx.QueryRowContext(ctx, `SELECT `+scheduleColumns+` FROM schedules WHERE name = ?`, sch.Name))
		return err
	})
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
	sch, err := scanSchedule(s.reader.QueryRowContext(ctx, `SELECT `+scheduleColumns+` FROM schedules WHERE name = ?`, name))
	if errors.Is(err, sql.ErrNoRows) {
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
	rows, err := s.reader.QueryContext(ctx, `SELECT `+scheduleColumns+` FROM schedules WHERE name > ? ORDER BY name LIMIT ?`, after, limit)
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
	return s.scheduleExec(ctx, "delete schedule", name, `DELETE FROM schedules WHERE name = ?`, name)
}

// SetSchedulePaused pauses or resumes the schedule.
func (s *Store) SetSchedulePaused(ctx context.Context, name string, paused bool, now time.Time) (herald.Schedule, error) {
	if err := s.scheduleExec(ctx, "pause schedule", name, `UPDATE schedules SET paused = ?, updated_at = ? WHERE name = ?`, paused, nanos(now), name); err != nil {
		return herald.Schedule{}, err
	}
	return s.GetSchedule(ctx, name)
}

// AdvanceSchedule moves the schedule's last tick forward to tick.
func (s *Store) AdvanceSchedule(ctx context.Context, name string, tick time.Time) error {
	if err := s.checkOpen(); err != nil {
		return err
	}
	var found bool
	err := s.withTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `UPDATE schedules SET last_tick = ? WHERE name = ? AND last_tick < ?`, nanos(tick), name, nanos(tick)); err != nil {
			return err
		}
		err := tx.QueryRowContext(ctx, `SELECT 1 FROM schedules WHERE name = ?`, name).Scan(new(int))
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		found = err == nil
		return err
	})
	if err != nil {
		return s.fail("advance schedule", err)
	}
	if !found {
		return scheduleNotFound(name)
	}
	return nil
}

func (s *Store) scheduleExec(ctx context.Context, op, name, q string, args ...any) error {
	if err := s.checkOpen(); err != nil {
		return err
	}
	var n int64
	err := s.withTx(ctx, func(tx *sql.Tx) error {
		var err error
		n, err = execCount(ctx, tx, q, args...)
		return err
	})
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
	if node == "" {
		return false, herald.FieldErrorf("node", "the node name must be non-empty")
	}
	var holder string
	err := s.withLazyTx(ctx, func(tx *sql.Tx) error {
		return tx.QueryRowContext(ctx, `INSERT INTO leases (name, node, expires_at) VALUES (?1, ?2, ?3)
			ON CONFLICT (name) DO UPDATE SET node = excluded.node, expires_at = excluded.expires_at
			WHERE leases.node = excluded.node OR leases.expires_at <= ?4
			RETURNING node`, name, node, now.Add(ttl).UnixNano(), now.UnixNano()).Scan(&holder)
	})
	if errors.Is(err, sql.ErrNoRows) {
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
	err := s.withTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `DELETE FROM leases WHERE name = ? AND node = ?`, name, node)
		return err
	})
	return s.fail("release lease", err)
}
