package sqlite

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"slices"
	"time"

	"github.com/heraldhq/herald"
)

// Columns bound per row by the batch statements.
const (
	eventColumns = 10
	dedupColumns = 5
)

// appendTopic is what one Append call knows about a topic it writes to.
type appendTopic struct {
	id      int64
	head    int64 // the last seq assigned, committed or in this call
	window  int64 // dedup window in nanoseconds
	exists  bool
	touched bool
	keys    []string // idempotency keys to look up
	ids     []string // event ids to look up
}

type dedupKey struct {
	topicID int64
	key     string
}

// dedupEntry is the first event stored under an idempotency key; an empty
// eventID means none is stored.
type dedupEntry struct {
	eventID string
	seq     int64
	time    int64
	dirty   bool // stored in this call; written at the end
	renew   bool // a row for the key was there before this call
}

type idKey struct {
	topicID int64
	id      string
}

// idEntry is the newest event stored with an id; a zero seq means none is.
type idEntry struct {
	seq     int64
	time    int64
	payload []byte
}

// Append commits the events in one transaction; see herald.Store. An event
// without Topic or Time fails the whole call with CodeInvalid.
func (s *Store) Append(ctx context.Context, events []*herald.Event) ([]herald.AppendResult, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	for i, e := range events {
		switch {
		case e == nil:
			return nil, herald.FieldErrorf("events", "event %d is nil", i)
		case e.Topic == "":
			return nil, herald.FieldErrorf("topic", "event %d has no topic", i)
		case e.Time.IsZero():
			return nil, herald.FieldErrorf("time", "event %d has no time", i)
		}
	}
	results := make([]herald.AppendResult, len(events))
	if len(events) == 0 {
		return results, nil
	}
	err := s.withTx(ctx, func(tx *sql.Tx) error { return s.appendTx(ctx, tx, events, results) })
	if errors.Is(err, herald.ErrAppendConflict) {
		return results, err
	}
	if err != nil {
		return nil, s.fail(fmt.Sprintf("append %d events", len(events)), err)
	}
	for i, r := range results {
		if r.Err == nil && !r.Duplicate {
			events[i].ID, events[i].Seq = r.ID, r.Seq
		}
	}
	return results, nil
}

// appendTx writes the events in tx and fills results. When an event's id
// conflicts it writes nothing and returns herald.ErrAppendConflict, for
// the caller to roll back, with results as herald.Store.Append describes.
func (s *Store) appendTx(ctx context.Context, tx *sql.Tx, events []*herald.Event, results []herald.AppendResult) error {
	// 1. The topics, and the idempotency keys and event ids to look up.
	// Both are remembered only while the topic has a dedup window.
	topics := make(map[string]*appendTopic, 1)
	var keys map[dedupKey]*dedupEntry
	var ids map[idKey]*idEntry
	topicStmt := tx.StmtContext(ctx, s.wTopicByName)
	defer topicStmt.Close()
	for _, e := range events {
		t := topics[e.Topic]
		if t == nil {
			t = &appendTopic{}
			err := topicStmt.QueryRowContext(ctx, e.Topic).Scan(&t.id, &t.head, &t.window)
			switch {
			case err == nil:
				t.exists = true
			case !errors.Is(err, sql.ErrNoRows):
				return fmt.Errorf("look up topic: %w", err)
			}
			topics[e.Topic] = t
		}
		if t.exists && t.window > 0 && e.IdempotencyKey != "" {
			if keys == nil {
				keys = make(map[dedupKey]*dedupEntry)
			}
			k := dedupKey{t.id, e.IdempotencyKey}
			if keys[k] == nil {
				keys[k] = &dedupEntry{}
				t.keys = append(t.keys, e.IdempotencyKey)
			}
		}
		if t.exists && t.window > 0 && e.ID != "" {
			if ids == nil {
				ids = make(map[idKey]*idEntry)
			}
			if k := (idKey{t.id, e.ID}); ids[k] == nil {
				ids[k] = &idEntry{}
				t.ids = append(t.ids, e.ID)
			}
		}
	}
	if keys != nil {
		if err := s.lookUpKeys(ctx, tx, topics, keys); err != nil {
			return err
		}
	}
	if ids != nil {
		if err := s.lookUpIDs(ctx, tx, topics, ids); err != nil {
			return err
		}
	}

	// 2. Seqs, duplicates and conflicts, in slice order.
	args := make([]any, 0, len(events)*eventColumns)
	conflict := false
	var unschedule *sql.Stmt
	for i, e := range events {
		t := topics[e.Topic]
		if !t.exists {
			results[i].Err = topicNotFound(e.Topic)
			continue
		}
		if e.Delayed {
			// A promoted event leaves the delayed set in this transaction;
			// one no longer there (cancelled, promoted already) is not
			// appended.
			if unschedule == nil {
				var err error
				if unschedule, err = tx.PrepareContext(ctx, `DELETE FROM scheduled_events WHERE topic = ? AND id = ?`); err != nil {
					return fmt.Errorf("prepare delayed delete: %w", err)
				}
				defer unschedule.Close()
			}
			res, err := unschedule.ExecContext(ctx, e.Topic, e.ID)
			if err != nil {
				return fmt.Errorf("remove promoted event from the delayed set: %w", err)
			}
			if n, _ := res.RowsAffected(); n == 0 {
				results[i] = herald.AppendResult{ID: e.ID, Duplicate: true}
				continue
			}
		}
		at := e.Time.UnixNano()
		var entry *dedupEntry
		if t.window > 0 && e.IdempotencyKey != "" {
			entry = keys[dedupKey{t.id, e.IdempotencyKey}]
			// A key is live while the new event's time is less than the
			// window after the first event's time.
			if entry.eventID != "" && at-entry.time < t.window {
				results[i] = herald.AppendResult{ID: entry.eventID, Seq: entry.seq, Duplicate: true}
				continue
			}
		}
		id := e.ID
		var prev *idEntry
		switch {
		case id == "":
			id = herald.NewID(e.Time) // unique by construction: nothing to look up
		case t.window > 0:
			// A given id, like a key, is live for a window after its
			// newest event.
			prev = ids[idKey{t.id, id}]
			if prev.seq != 0 && at-prev.time < t.window {
				if bytes.Equal(prev.payload, e.Payload) {
					results[i] = herald.AppendResult{ID: e.ID, Seq: prev.seq, Duplicate: true}
				} else {
					results[i].Err = herald.EventIDConflict(e, prev.seq)
					conflict = true
				}
				continue
			}
		}
		t.head++
		t.touched = true
		results[i] = herald.AppendResult{ID: id, Seq: t.head}
		if entry != nil {
			*entry = dedupEntry{eventID: id, seq: t.head, time: at, dirty: true, renew: entry.renew}
		}
		if prev != nil {
			*prev = idEntry{seq: t.head, time: at, payload: e.Payload}
		}
		payload := e.Payload
		if payload == nil {
			payload = []byte{} // the column is NOT NULL; empty is a payload
		}
		var headers []byte
		if len(e.Headers) > 0 {
			headers = encodeHeaders(e.Headers)
		}
		args = append(args, t.id, t.head, id, at, e.Type, e.Key, e.IdempotencyKey, e.ContentType, headers, payload)
	}

	if conflict {
		for i := range results {
			if results[i].Err == nil {
				results[i] = herald.AppendResult{}
			}
		}
		return herald.ErrAppendConflict
	}

	// 3. Write.
	if err := s.wInsert.exec(ctx, tx, args, eventColumns); err != nil {
		return fmt.Errorf("insert events: %w", err)
	}
	if keys != nil {
		// New keys in multi-row inserts; a key whose window had passed
		// (rare) takes the new event in its row.
		args = args[:0]
		var renew *sql.Stmt
		for k, e := range keys {
			switch {
			case !e.dirty:
			case !e.renew:
				args = append(args, k.topicID, k.key, e.eventID, e.seq, e.time)
			default:
				if renew == nil {
					renew = tx.StmtContext(ctx, s.wDedupRenew)
					defer renew.Close()
				}
				if _, err := renew.ExecContext(ctx, e.eventID, e.seq, e.time, k.topicID, k.key); err != nil {
					return fmt.Errorf("renew idempotency key: %w", err)
				}
			}
		}
		if err := s.wDedupPut.exec(ctx, tx, args, dedupColumns); err != nil {
			return fmt.Errorf("store idempotency keys: %w", err)
		}
	}
	setHead := tx.StmtContext(ctx, s.wSetHead)
	defer setHead.Close()
	for _, t := range topics {
		if t.touched {
			if _, err := setHead.ExecContext(ctx, t.head, t.id); err != nil {
				return fmt.Errorf("advance head seq: %w", err)
			}
		}
	}
	return nil
}

// lookUpKeys fills keys with the stored first events of the idempotency
// keys.
func (s *Store) lookUpKeys(ctx context.Context, tx *sql.Tx, topics map[string]*appendTopic, keys map[dedupKey]*dedupEntry) error {
	for _, t := range topics {
		err := queryInLists(ctx, tx, s.wDedupGet, t.id, t.keys, func(rows *sql.Rows) error {
			var key string
			var e dedupEntry
			if err := rows.Scan(&key, &e.eventID, &e.seq, &e.time); err != nil {
				return err
			}
			e.renew = true
			*keys[dedupKey{t.id, key}] = e
			return nil
		})
		if err != nil {
			return fmt.Errorf("look up idempotency keys: %w", err)
		}
	}
	return nil
}

// lookUpIDs fills ids with the newest stored event of each event id.
func (s *Store) lookUpIDs(ctx context.Context, tx *sql.Tx, topics map[string]*appendTopic, ids map[idKey]*idEntry) error {
	for _, t := range topics {
		err := queryInLists(ctx, tx, s.wIDGet, t.id, t.ids, func(rows *sql.Rows) error {
			var id string
			var e idEntry
			if err := rows.Scan(&id, &e.seq, &e.time, &e.payload); err != nil {
				return err
			}
			if cur := ids[idKey{t.id, id}]; e.seq > cur.seq {
				*cur = e
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("look up event ids: %w", err)
		}
	}
	return nil
}

// queryInLists runs the statements, whose arguments are a topic id and an
// IN list of 1, 2, 4, ... values, over list in runs of up to maxBatchRows
// values, and calls scan for each row. A run shorter than its statement's
// IN list repeats its last value.
func queryInLists(ctx context.Context, tx *sql.Tx, stmts batchStmts, topicID int64, list []string, scan func(*sql.Rows) error) error {
	args := make([]any, 0, 1+maxBatchRows)
	for len(list) > 0 {
		n := min(len(list), maxBatchRows)
		i := bits.Len(uint(n - 1)) // the smallest IN list that holds n values
		args = append(args[:0], topicID)
		for j := range 1 << i {
			args = append(args, list[min(j, n-1)])
		}
		list = list[n:]
		if err := queryRows(ctx, tx, stmts[i], args, scan); err != nil {
			return err
		}
	}
	return nil
}

func queryRows(ctx context.Context, tx *sql.Tx, st *sql.Stmt, args []any, scan func(*sql.Rows) error) error {
	get := tx.StmtContext(ctx, st)
	defer get.Close()
	rows, err := get.QueryContext(ctx, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := scan(rows); err != nil {
			return err
		}
	}
	return rows.Err()
}

// encodeHeaders writes headers as uvarint-prefixed names and values in name
// order: smaller and faster to decode than JSON, and deterministic.
func encodeHeaders(h map[string]string) []byte {
	names := make([]string, 0, len(h))
	size := binary.MaxVarintLen64
	for k, v := range h {
		names = append(names, k)
		size += 2*binary.MaxVarintLen64 + len(k) + len(v)
	}
	slices.Sort(names)
	b := make([]byte, 0, size)
	b = binary.AppendUvarint(b, uint64(len(names)))
	for _, k := range names {
		b = binary.AppendUvarint(b, uint64(len(k)))
		b = append(b, k...)
		v := h[k]
		b = binary.AppendUvarint(b, uint64(len(v)))
		b = append(b, v...)
	}
	return b
}

var errBadHeaders = errors.New("malformed stored headers")

func decodeHeaders(b []byte) (map[string]string, error) {
	if len(b) == 0 {
		return nil, nil
	}
	n, w := binary.Uvarint(b)
	if w <= 0 || n > uint64(len(b)) {
		return nil, errBadHeaders
	}
	b = b[w:]
	h := make(map[string]string, n)
	next := func() (string, bool) {
		l, w := binary.Uvarint(b)
		if w <= 0 || l > uint64(len(b)-w) {
			return "", false
		}
		s := string(b[w : w+int(l)])
		b = b[w+int(l):]
		return s, true
	}
	for range n {
		k, ok1 := next()
		v, ok2 := next()
		if !ok1 || !ok2 {
			return nil, errBadHeaders
		}
		h[k] = v
	}
	return h, nil
}

const eventSelect = `SELECT e.seq, e.id, e.time, e.event_type, e.event_key, e.idem_key, e.content_type, e.headers, e.payload FROM events e`

func scanEvent(sc interface{ Scan(...any) error }, topic string) (herald.Event, error) {
	e := herald.Event{Topic: topic}
	var at int64
	var headers []byte
	if err := sc.Scan(&e.Seq, &e.ID, &at, &e.Type, &e.Key, &e.IdempotencyKey, &e.ContentType, &headers, &e.Payload); err != nil {
		return herald.Event{}, err
	}
	e.Time = time.Unix(0, at).UTC()
	var err error
	e.Headers, err = decodeHeaders(headers)
	return e, err
}

// ReadEvents returns up to limit events of the topic with seq > afterSeq,
// in seq order; an unknown topic yields none. A limit below 1 fails with
// CodeInvalid.
func (s *Store) ReadEvents(ctx context.Context, topic string, afterSeq int64, limit int) ([]herald.Event, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	if limit < 1 {
		return nil, herald.FieldErrorf("limit", "limit must be at least 1, got %d", limit)
	}
	rows, err := s.rReadEvents.QueryContext(ctx, topic, afterSeq, limit)
	if err != nil {
		return nil, s.fail("read events", err)
	}
	defer rows.Close()
	out := make([]herald.Event, 0, min(limit, 256))
	for rows.Next() {
		e, err := scanEvent(rows, topic)
		if err != nil {
			return nil, s.fail("read events", err)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, s.fail("read events", err)
	}
	return out, nil
}

// GetEvent returns the newest event of the topic with the id, or
// CodeNotFound (also for an unknown topic).
func (s *Store) GetEvent(ctx context.Context, topic, id string) (herald.Event, error) {
	if err := s.checkOpen(); err != nil {
		return herald.Event{}, err
	}
	e, err := scanEvent(s.rGetEvent.QueryRowContext(ctx, topic, id), topic)
	if errors.Is(err, sql.ErrNoRows) {
		return herald.Event{}, &herald.Error{Code: herald.CodeNotFound, Field: "id",
			Message: "event " + id + " does not exist in topic " + topic}
	}
	if err != nil {
		return herald.Event{}, s.fail("get event", err)
	}
	return e, nil
}

// SeqAtTime returns the seq of the first retained event of the topic whose
// Time is at or after t, or HeadSeq+1 when there is none; CodeNotFound for
// an unknown topic.
func (s *Store) SeqAtTime(ctx context.Context, topic string, t time.Time) (int64, error) {
	if err := s.checkOpen(); err != nil {
		return 0, err
	}
	var head int64
	var first sql.NullInt64
	err := s.rSeqAtTime.QueryRowContext(ctx, clampNanos(t), topic).Scan(&head, &first)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, topicNotFound(topic)
	}
	if err != nil {
		return 0, s.fail("seq at time", err)
	}
	if first.Valid {
		return first.Int64, nil
	}
	return head + 1, nil
}
