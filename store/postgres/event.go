package postgres

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/heraldhq/herald"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// lockTopicsSQL resolves the names of an Append and locks their rows in id
// order. Every Append locks in the same order, so two batches that touch
// the same topics queue behind each other instead of deadlocking. The lock
// is FOR NO KEY UPDATE, the one the head_seq update takes anyway; it does
// not block readers.
const lockTopicsSQL = `SELECT id, name, head_seq, dedup_window FROM topics
	WHERE name = ANY($1::text[]) ORDER BY id FOR NO KEY UPDATE`

// unscheduleSQL removes promoted events from the delayed set in the
// append's transaction and returns those that were still pending: the
// append stores only those, so a delayed event joins its log once even
// when two promoters race or a cancel comes between the read and the
// append. Concurrent deleters of one row wait on its row lock and then
// find it gone.
const unscheduleSQL = `DELETE FROM scheduled_events s
	USING unnest($1::text[], $2::text[]) AS d(topic, id)
	WHERE s.topic = d.topic AND s.id = d.id
	RETURNING s.topic, s.id`

// dedupLookupSQL reads the stored idempotency keys of an Append. It runs
// after lockTopicsSQL in the same transaction: every writer of a topic's
// keys holds that topic's row lock, so the statement's snapshot (taken
// after the lock was granted) sees every key committed before. The
// LATERAL subquery with its LIMIT is one probe of dedup's primary key per
// key: as a plain join, the planner hashed the keys and scanned the whole
// dedup table (98 ms for 1,000 keys against 200,000 stored).
const dedupLookupSQL = `SELECT v.name, v.idem_key, d.event_id, d.seq, d.time_ns
	FROM unnest($1::text[], $2::text[]) AS v(name, idem_key)
	JOIN topics t ON t.name = v.name
	CROSS JOIN LATERAL (SELECT event_id, seq, time_ns FROM dedup
		WHERE topic_id = t.id AND idem_key = v.idem_key COLLATE "C" LIMIT 1) d`

// idLookupSQL reads, for each event id of an Append, the newest stored
// event of its topic with that id, with its payload to compare. Like
// dedupLookupSQL it runs after lockTopicsSQL, so it sees every event
// committed before. The LATERAL subquery with its LIMIT is one probe of
// events_by_id per id: as a plain join, the planner hashes the ids and
// scans the whole events table.
const idLookupSQL = `SELECT v.name, v.id, e.seq, e.time_ns, e.payload
	FROM unnest($1::text[], $2::text[]) AS v(name, id)
	JOIN topics t ON t.name = v.name
	CROSS JOIN LATERAL (SELECT seq, time_ns, payload FROM events
		WHERE topic_id = t.id AND id = v.id COLLATE "C" ORDER BY seq DESC LIMIT 1) e`

// allocSeqsSQL allocates n seqs on a topic whose row the transaction has
// locked; it returns the new head, the last of them.
const allocSeqsSQL = `UPDATE topics SET head_seq = head_seq + $2 WHERE id = $1 RETURNING head_seq`

// insertEventsSQL writes many events in one statement, one array per column.
const insertEventsSQL = `INSERT INTO events
	(topic_id, seq, id, time_ns, event_type, event_key, idem_key, content_type, headers, payload)
	SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::bigint[], $5::text[],
		$6::text[], $7::text[], $8::text[], $9::jsonb[], $10::bytea[])`

// eventCopyColumns are the columns COPY writes, in the order of eventRows.
var eventCopyColumns = []string{"topic_id", "seq", "id", "time_ns", "event_type", "event_key", "idem_key", "content_type", "headers", "payload"}

// putDedupSQL records idempotency keys. A key already there has expired (or
// the event would have been a duplicate): its row now names the new event.
const putDedupSQL = `INSERT INTO dedup (topic_id, idem_key, event_id, seq, time_ns)
	SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::bigint[])
	ON CONFLICT (topic_id, idem_key) DO UPDATE
	SET event_id = excluded.event_id, seq = excluded.seq, time_ns = excluded.time_ns`

// writeTimeout bounds the write-and-commit round trip of an Append, which
// does not stop when the caller's context ends (see Append). Past it, the
// outcome is unknown: the error says so.
const writeTimeout = 30 * time.Second

// appendTopic is the state of one topic during an Append.
type appendTopic struct {
	id     int64
	head   int64 // seq of the newest event, including this call's so far
	locked int64 // head_seq when the row was locked
	window int64 // dedup window, nanoseconds
}

type dedupKey struct {
	topic string
	key   string
}

type dedupEntry struct {
	id   string
	seq  int64
	time int64
}

// idEntry is the newest event stored with an id.
type idEntry struct {
	seq     int64
	time    int64
	payload []byte
}

// eventRows holds the rows of an Append column by column, the shape both
// INSERT ... unnest and COPY take.
type eventRows struct {
	topicID, seq, time                 []int64
	id, typ, key, idemKey, contentType []string
	headers, payload                   [][]byte
}

func (r *eventRows) add(topicID, seq int64, id string, e *herald.Event, headers []byte) {
	r.topicID = append(r.topicID, topicID)
	r.seq = append(r.seq, seq)
	r.id = append(r.id, id)
	r.time = append(r.time, e.Time.UnixNano())
	r.typ = append(r.typ, e.Type)
	r.key = append(r.key, e.Key)
	r.idemKey = append(r.idemKey, e.IdempotencyKey)
	r.contentType = append(r.contentType, e.ContentType)
	r.headers = append(r.headers, headers)
	payload := e.Payload
	if payload == nil {
		payload = []byte{} // NULL is not a payload; the empty one is
	}
	r.payload = append(r.payload, payload)
}

func (r *eventRows) len() int { return len(r.seq) }

// commitFailed reports a failed write-and-commit round trip. When the
// server answered with an error the transaction was rolled back; when it
// did not answer, the COMMIT may have been applied before the connection
// failed, and the caller must not assume either way.
func (s *Store) commitFailed(err error) error {
	err = s.fail("append: commit", err)
	if _, answered := errors.AsType[*pgconn.PgError](err); !answered {
		if e, ok := errors.AsType[*herald.Error](err); ok {
			e.Message = "the store did not confirm the commit; the events may or may not have been stored"
		}
	}
	return err
}

// rollback ends the failed transaction on conn, if one is open, so the
// connection can go back to the pool; if it cannot, it closes the
// connection, which ends the transaction too, and the pool drops it.
func rollback(conn *pgxpool.Conn) {
	pc := conn.Conn().PgConn()
	if pc.IsClosed() || pc.TxStatus() == 'I' {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := conn.Exec(ctx, "ROLLBACK"); err != nil {
		_ = conn.Conn().Close(ctx)
	}
}

// copySource adapts eventRows to pgx.CopyFromSource.
type copySource struct {
	rows *eventRows
	i    int
}

func (c *copySource) Next() bool { c.i++; return c.i <= c.rows.len() }
func (c *copySource) Err() error { return nil }
func (c *copySource) Values() ([]any, error) {
	r, i := c.rows, c.i-1
	var headers any
	if r.headers[i] != nil {
		headers = json.RawMessage(r.headers[i])
	}
	return []any{r.topicID[i], r.seq[i], r.id[i], r.time[i], r.typ[i], r.key[i], r.idemKey[i], r.contentType[i], headers, r.payload[i]}, nil
}

// checkEvent reports why the store cannot take e, if it cannot. Besides
// the Store contract's preconditions, text must be valid UTF-8 without NUL
// bytes: PostgreSQL rejects anything else, and one such event must not
// fail the batch it was grouped with.
func checkEvent(e *herald.Event) error {
	switch {
	case e == nil:
		return herald.FieldErrorf("event", "the event is missing")
	case e.Topic == "":
		return herald.FieldErrorf("topic", "the event topic is empty")
	case e.Time.IsZero() || !inNanosRange(e.Time):
		return herald.FieldErrorf("time", "the event time must be set, between %s and %s", minTime.UTC(), maxTime.UTC())
	}
	if err := herald.ValidateEvent(e); err != nil {
		return err
	}
	switch {
	case !validText(e.Key):
		return herald.FieldErrorf("key", "the event key must be valid UTF-8 without NUL bytes")
	case !validText(e.IdempotencyKey):
		return herald.FieldErrorf("idempotency_key", "the idempotency key must be valid UTF-8 without NUL bytes")
	case !validText(e.ContentType):
		return herald.FieldErrorf("content_type", "the content type must be valid UTF-8 without NUL bytes")
	}
	for k, v := range e.Headers {
		if !validText(v) {
			return herald.FieldErrorf("headers", "header %q must be valid UTF-8 without NUL bytes", k)
		}
	}
	return nil
}

// Append commits the events in one transaction and returns one result per
// event, in order, after the commit is durable. See herald.Store.
//
// An event the store cannot take (a missing Topic or Time, invalid
// metadata, or text that is not valid UTF-8 or holds NUL bytes) gets Err
// with CodeInvalid and is not stored; the other events are. An event whose
// topic does not exist gets CodeNotFound.
//
// The transaction locks the rows of the batch's topics in id order, reads
// their stored idempotency keys and the newest events with the batch's
// given event ids, then allocates seqs by incrementing each topic's
// head_seq and writes the events and keys (or, when an event id
// conflicts, rolls back and returns herald.ErrAppendConflict with the
// results). Concurrent appends to a topic, from any node, queue on its row
// lock for the length of one transaction, so two nodes cannot both store
// one id; seqs stay gap-free because a rolled-back transaction also rolls
// back its increment. It takes two round trips to the server, each
// a pipelined batch: begin, lock and look up keys; then allocate, write
// and commit.
//
// The caller's context can cancel the first round trip (waiting for a
// topic lock, say), after which nothing is stored. It does not cancel the
// second, which carries the COMMIT: Append waits up to writeTimeout for
// its outcome. When the connection fails during that round trip the
// outcome cannot be known; the error's message says that the events may
// have been stored.
func (s *Store) Append(ctx context.Context, events []*herald.Event) ([]herald.AppendResult, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	p := planAppend(events)
	if len(p.names) == 0 {
		return p.results, nil
	}

	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, s.fail("append: acquire a connection", err)
	}
	defer conn.Release()
	committed := false
	defer func() {
		if !committed {
			rollback(conn)
		}
	}()

	// Round trip 1: begin, lock the topics, read their stored keys.
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	p.queueLookups(b)
	if err := conn.SendBatch(ctx, b).Close(); err != nil {
		return nil, s.fail("append: lock topics", err)
	}

	// Decide each event: not found, duplicate, conflict, or stored with
	// the next seq.
	if p.decide() {
		// Nothing is written: the deferred rollback ends the transaction.
		return p.results, herald.ErrAppendConflict
	}

	// Round trip 2: allocate the seqs, write events and keys, commit. The
	// COMMIT is sent with the writes, so from here on the caller's
	// cancellation is ignored: the answer must say whether the events were
	// stored, and only waiting for the server tells. The writes wait for
	// no lock an append takes; writeTimeout bounds a server that hangs.
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), writeTimeout)
	defer cancel()
	w := &pgx.Batch{}
	useCopy := s.copyFrom > 0 && p.rows.len() >= s.copyFrom
	p.queueWrites(w, useCopy)
	if useCopy {
		if err := conn.SendBatch(wctx, w).Close(); err != nil {
			return nil, s.fail("append: write events", err)
		}
		if _, err := conn.CopyFrom(wctx, pgx.Identifier{"events"}, eventCopyColumns, &copySource{rows: &p.rows}); err != nil {
			return nil, s.fail("append: copy events", err)
		}
		w = &pgx.Batch{}
	}
	// COMMIT rides in the batch: if a statement before it fails, the
	// server skips the rest of the batch and the transaction is left
	// aborted, for rollback.
	queueCommit(w, &committed)
	if p.rows.len() > 0 {
		// After the COMMIT, in the same round trip: skipped with it
		// if it fails (see queueNotify).
		s.queueNotify(w, p.topics)
	}
	if err := conn.SendBatch(wctx, w).Close(); err != nil {
		if !committed {
			return nil, s.commitFailed(err)
		}
		// The events are stored; only the announcement failed.
		s.notifyFailed(err)
	}
	p.stamp()
	return p.results, nil
}

// queueCommit queues the COMMIT of a pipelined transaction, which sets
// *committed once the server confirms it.
func queueCommit(w *pgx.Batch, committed *bool) {
	w.Queue("COMMIT").Exec(func(tag pgconn.CommandTag) error {
		if tag.String() != "COMMIT" {
			return fmt.Errorf("commit ended in %q", tag)
		}
		*committed = true
		return nil
	})
}

// appendPlan is one Append's work, in the steps of its two round trips:
// planAppend checks the events, queueLookups locks their topics and reads
// what dedup needs, decide gives each event its result, queueWrites
// writes the stored ones. CommitStateBatch runs the same steps inside its
// own transaction.
type appendPlan struct {
	events  []*herald.Event
	results []herald.AppendResult
	names   []string // the topics, each once
	// Idempotency keys and given event ids to look up, by topic name.
	dedupNames, dedupKeys []string
	idNames, ids          []string // a dedupKey holds the id as its key

	topics      map[string]*appendTopic
	stored      map[dedupKey]dedupEntry
	storedIDs   map[dedupKey]idEntry
	unscheduled map[dedupKey]bool

	rows      eventRows
	dedupRows struct {
		topicID, seq, time []int64
		key, eventID       []string
	}
}

// planAppend checks the events; one that fails a check has its result's
// Err set and is left out.
func planAppend(events []*herald.Event) *appendPlan {
	p := &appendPlan{events: events, results: make([]herald.AppendResult, len(events))}
	seenName := make(map[string]bool)
	seenKey := make(map[dedupKey]bool)
	seenID := make(map[dedupKey]bool)
	for i, e := range events {
		if err := checkEvent(e); err != nil {
			p.results[i].Err = err
			continue
		}
		if !validText(e.Topic) {
			p.results[i].Err = topicNotFound(e.Topic) // no stored topic has this name
			continue
		}
		if !seenName[e.Topic] {
			seenName[e.Topic] = true
			p.names = append(p.names, e.Topic)
		}
		if k := (dedupKey{e.Topic, e.IdempotencyKey}); k.key != "" && !seenKey[k] {
			seenKey[k] = true
			p.dedupNames = append(p.dedupNames, k.topic)
			p.dedupKeys = append(p.dedupKeys, k.key)
		}
		if k := (dedupKey{e.Topic, e.ID}); k.key != "" && !seenID[k] {
			seenID[k] = true
			p.idNames = append(p.idNames, k.topic)
			p.ids = append(p.ids, k.key)
		}
	}
	return p
}

// queueLookups queues the statements that lock the topics (in id order)
// and read their stored keys, ids and pending delayed events.
func (p *appendPlan) queueLookups(b *pgx.Batch) {
	p.topics = make(map[string]*appendTopic, len(p.names))
	b.Queue(lockTopicsSQL, p.names).Query(func(rows pgx.Rows) error {
		var id, head, window int64
		var name string
		_, err := pgx.ForEachRow(rows, []any{&id, &name, &head, &window}, func() error {
			p.topics[name] = &appendTopic{id: id, head: head, locked: head, window: window}
			return nil
		})
		return err
	})
	p.stored = make(map[dedupKey]dedupEntry)
	if len(p.dedupKeys) > 0 {
		b.Queue(dedupLookupSQL, p.dedupNames, p.dedupKeys).Query(func(rows pgx.Rows) error {
			var k dedupKey
			var d dedupEntry
			_, err := pgx.ForEachRow(rows, []any{&k.topic, &k.key, &d.id, &d.seq, &d.time}, func() error {
				p.stored[k] = d
				return nil
			})
			return err
		})
	}
	p.storedIDs = make(map[dedupKey]idEntry)
	if len(p.ids) > 0 {
		b.Queue(idLookupSQL, p.idNames, p.ids).Query(func(rows pgx.Rows) error {
			var k dedupKey
			var d idEntry
			_, err := pgx.ForEachRow(rows, []any{&k.topic, &k.key, &d.seq, &d.time, &d.payload}, func() error {
				p.storedIDs[k] = d
				return nil
			})
			return err
		})
	}
	// Promoted events leave the delayed set in this transaction; one no
	// longer there (cancelled, promoted already) is not appended.
	var delayedNames, delayedIDs []string
	for i, e := range p.events {
		if e.Delayed && p.results[i].Err == nil {
			delayedNames = append(delayedNames, e.Topic)
			delayedIDs = append(delayedIDs, e.ID)
		}
	}
	if len(delayedIDs) > 0 {
		p.unscheduled = make(map[dedupKey]bool, len(delayedIDs))
		b.Queue(unscheduleSQL, delayedNames, delayedIDs).Query(func(rows pgx.Rows) error {
			var k dedupKey
			_, err := pgx.ForEachRow(rows, []any{&k.topic, &k.key}, func() error {
				p.unscheduled[k] = true
				return nil
			})
			return err
		})
	}
}

// decide gives each event its result once the lookups are in: not found,
// duplicate, conflict, or stored with the next seq of its topic. It
// returns true when an id conflicts: then nothing may be written, and
// every other result is zero (see herald.Store.Append).
func (p *appendPlan) decide() bool {
	conflict := false
	newKeys := make(map[dedupKey]int) // index in dedupRows, so a key written twice keeps the last
	for i, e := range p.events {
		if p.results[i].Err != nil {
			continue
		}
		t := p.topics[e.Topic]
		if t == nil {
			p.results[i].Err = topicNotFound(e.Topic)
			continue
		}
		if e.Delayed {
			if k := (dedupKey{e.Topic, e.ID}); !p.unscheduled[k] {
				p.results[i] = herald.AppendResult{ID: e.ID, Duplicate: true}
				continue
			}
			delete(p.unscheduled, dedupKey{e.Topic, e.ID}) // the same event twice in one call: once
		}
		at := e.Time.UnixNano()
		k := dedupKey{e.Topic, e.IdempotencyKey}
		if k.key != "" && t.window > 0 {
			if d, ok := p.stored[k]; ok && at-d.time < t.window {
				p.results[i] = herald.AppendResult{ID: d.id, Seq: d.seq, Duplicate: true}
				continue
			}
		}
		// A given id, like a key, is live for a window after its newest
		// event; one Herald makes is unique by construction.
		id, idk := e.ID, dedupKey{e.Topic, e.ID}
		if id == "" {
			id = herald.NewID(e.Time)
		} else if d, ok := p.storedIDs[idk]; ok && t.window > 0 && at-d.time < t.window {
			if bytes.Equal(d.payload, e.Payload) {
				p.results[i] = herald.AppendResult{ID: e.ID, Seq: d.seq, Duplicate: true}
			} else {
				p.results[i].Err = herald.EventIDConflict(e, d.seq)
				conflict = true
			}
			continue
		}
		headers, err := encodeHeaders(e.Headers)
		if err != nil {
			p.results[i].Err = err
			continue
		}
		t.head++
		p.rows.add(t.id, t.head, id, e, headers)
		p.results[i] = herald.AppendResult{ID: id, Seq: t.head}
		if e.ID != "" {
			p.storedIDs[idk] = idEntry{seq: t.head, time: at, payload: e.Payload} // a later repeat in this call is judged against it
		}
		if k.key != "" && t.window > 0 {
			d := dedupEntry{id: id, seq: t.head, time: at}
			p.stored[k] = d // a later event of this call with the key is a duplicate
			dr := &p.dedupRows
			if j, ok := newKeys[k]; ok {
				dr.eventID[j], dr.seq[j], dr.time[j] = d.id, d.seq, d.time
			} else {
				newKeys[k] = len(dr.key)
				dr.topicID = append(dr.topicID, t.id)
				dr.key = append(dr.key, k.key)
				dr.eventID = append(dr.eventID, d.id)
				dr.seq = append(dr.seq, d.seq)
				dr.time = append(dr.time, d.time)
			}
		}
	}
	if conflict {
		for i := range p.results {
			if p.results[i].Err == nil {
				p.results[i] = herald.AppendResult{}
			}
		}
	}
	return conflict
}

// queueWrites queues what decide chose to store: the topics' new heads
// (in id order), the events (unless copied, useCopy) and the keys.
func (p *appendPlan) queueWrites(w *pgx.Batch, useCopy bool) {
	if p.rows.len() == 0 {
		return
	}
	touched := make([]*appendTopic, 0, len(p.topics))
	for _, t := range p.topics {
		if t.head > t.locked {
			touched = append(touched, t)
		}
	}
	slices.SortFunc(touched, func(a, b *appendTopic) int { return cmp.Compare(a.id, b.id) })
	for _, t := range touched {
		w.Queue(allocSeqsSQL, t.id, t.head-t.locked).QueryRow(func(row pgx.Row) error {
			var head int64
			if err := row.Scan(&head); err != nil {
				return err
			}
			if head != t.head {
				// Impossible while the row lock is held; refuse rather
				// than write seqs that may collide or leave a gap.
				return fmt.Errorf("topic %d: head_seq moved under the row lock: want %d, got %d", t.id, t.head, head)
			}
			return nil
		})
	}
	r := &p.rows
	if !useCopy {
		w.Queue(insertEventsSQL, r.topicID, r.seq, r.id, r.time, r.typ,
			r.key, r.idemKey, r.contentType, r.headers, r.payload)
	}
	if dr := &p.dedupRows; len(dr.key) > 0 {
		w.Queue(putDedupSQL, dr.topicID, dr.key, dr.eventID, dr.seq, dr.time)
	}
}

// stamp sets the id and seq of each stored event, after the commit.
func (p *appendPlan) stamp() {
	for i, e := range p.events {
		if r := p.results[i]; r.Err == nil && !r.Duplicate {
			e.ID, e.Seq = r.ID, r.Seq
		}
	}
}

// encodeHeaders returns the JSON object of the headers, or nil (stored as
// NULL) for none, so a nil map reads back nil.
func encodeHeaders(h map[string]string) ([]byte, error) {
	if len(h) == 0 {
		return nil, nil
	}
	b, err := json.Marshal(h)
	if err != nil {
		return nil, herald.FieldErrorf("headers", "the headers cannot be encoded: %v", err)
	}
	return b, nil
}

// eventColumns are read by scanEvent.
const eventColumns = `e.seq, e.id, e.time_ns, e.event_type, e.event_key, e.idem_key, e.content_type, e.headers, e.payload`

func scanEvent(row pgx.Row, topic string) (herald.Event, error) {
	e := herald.Event{Topic: topic}
	var at int64
	var headers []byte
	if err := row.Scan(&e.Seq, &e.ID, &at, &e.Type, &e.Key, &e.IdempotencyKey, &e.ContentType, &headers, &e.Payload); err != nil {
		return herald.Event{}, err
	}
	e.Time = fromNanos(at)
	if headers != nil {
		if err := json.Unmarshal(headers, &e.Headers); err != nil {
			return herald.Event{}, fmt.Errorf("event %d headers: %w", e.Seq, err)
		}
	}
	return e, nil
}

// readEventsSQL reads a page of a topic's log. The topic's id comes from a
// scalar subquery rather than a join, so the planner knows every row has
// one topic_id and the events primary key (topic_id, seq) yields the rows
// already in order: the LIMIT stops the scan after the page. Written as a
// join, the ORDER BY needed a sort of every event after afterSeq, and the
// generic plan that pgx's prepared statement gets after five executions
// (planned with the default 1/3 selectivity for seq > $2, or with no
// statistics yet on a new table) scanned the whole topic through
// events_by_time or the whole table: 20 ms per read at 50,000 events,
// growing with the log, on every read a node makes of events committed
// by another node.
const readEventsSQL = `SELECT ` + eventColumns + ` FROM events e
	WHERE e.topic_id = (SELECT id FROM topics WHERE name = $1) AND e.seq > $2
	ORDER BY e.seq LIMIT $3`

// ReadEvents returns up to limit events of the topic with seq > afterSeq,
// in seq order: one range scan of the events primary key, whatever the
// plan's parameters (readEventsSQL). An unknown topic yields no events and
// no error; a limit below 1 fails with CodeInvalid.
func (s *Store) ReadEvents(ctx context.Context, topic string, afterSeq int64, limit int) ([]herald.Event, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	if limit < 1 {
		return nil, herald.FieldErrorf("limit", "limit must be at least 1, got %d", limit)
	}
	if !validText(topic) {
		return nil, nil
	}
	rows, err := s.pool.Query(ctx, readEventsSQL, topic, afterSeq, limit)
	if err != nil {
		return nil, s.fail("read events", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (herald.Event, error) { return scanEvent(row, topic) })
	if err != nil {
		return nil, s.fail("read events", err)
	}
	return out, nil
}

// GetEvent returns the event of the topic with the id (the newest one if a
// producer reused an id outside the dedup window), or CodeNotFound.
func (s *Store) GetEvent(ctx context.Context, topic, id string) (herald.Event, error) {
	if err := s.checkOpen(); err != nil {
		return herald.Event{}, err
	}
	if !validText(topic) || !validText(id) {
		return herald.Event{}, eventNotFound(topic, id)
	}
	// The topic id as a scalar subquery, as in readEventsSQL: the lookup
	// is then one probe of events_by_id whatever the cached plan.
	e, err := scanEvent(s.pool.QueryRow(ctx, `SELECT `+eventColumns+` FROM events e
		WHERE e.topic_id = (SELECT id FROM topics WHERE name = $1) AND e.id = $2
		ORDER BY e.seq DESC LIMIT 1`, topic, id), topic)
	if errors.Is(err, pgx.ErrNoRows) {
		return herald.Event{}, eventNotFound(topic, id)
	}
	if err != nil {
		return herald.Event{}, s.fail("get event", err)
	}
	return e, nil
}

func eventNotFound(topic, id string) error {
	return &herald.Error{Code: herald.CodeNotFound, Field: "id", Message: "event " + id + " does not exist in topic " + topic}
}

// SeqAtTime returns the seq of the first retained event of the topic whose
// Time is at or after t, or HeadSeq+1 when there is none; CodeNotFound for
// an unknown topic. The planner answers from the events_by_time index or
// from the front of the primary key, whichever it expects to read less of.
func (s *Store) SeqAtTime(ctx context.Context, topic string, t time.Time) (int64, error) {
	if err := s.checkOpen(); err != nil {
		return 0, err
	}
	if !validText(topic) {
		return 0, topicNotFound(topic)
	}
	// Times outside the stored range are before or after every event.
	var at int64
	switch {
	case t.Before(minTime):
		at = minTime.UnixNano()
	case t.After(maxTime):
		at = maxTime.UnixNano()
	default:
		at = t.UnixNano()
	}
	var seq int64
	err := s.pool.QueryRow(ctx, `SELECT coalesce(
			(SELECT min(e.seq) FROM events e WHERE e.topic_id = t.id AND e.time_ns >= $2),
			t.head_seq + 1)
		FROM topics t WHERE t.name = $1`, topic, at).Scan(&seq)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, topicNotFound(topic)
	}
	if err != nil {
		return 0, s.fail("seq at time", err)
	}
	return seq, nil
}
