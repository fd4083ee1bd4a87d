package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/cluster"
)

// Commit notifications (cluster.Bus): an Append that stores events queues
// one pg_notify in its transaction, whatever the number of events and
// topics. PostgreSQL delivers it to the listeners only when the transaction
// commits, and never for one that rolls back, so no node is woken for
// events that do not exist. The payload is compact JSON:
//
//	{"n":"node-id","t":1712345678901234567,"h":{"orders":42,"audit":7}}
//
// n is the committing node, t its clock at commit (Unix nanoseconds), h the
// new head seq of each topic the batch stored events in. A payload that
// would pass PostgreSQL's limit (8000 bytes) becomes {"n":..,"t":..,"r":1}:
// listeners then read every topic's head from the store.
//
// The channel is per installation (schema), so Herald installations or
// test runs sharing one database do not wake each other.

// maxNotifyPayload is the largest payload pg_notify accepts: it refuses
// 8000 bytes and more.
const maxNotifyPayload = 7999

// notifyTarget is where and as whom Append announces commits.
type notifyTarget struct {
	node    string
	channel string
}

// commitWire is the payload.
type commitWire struct {
	Node   string           `json:"n"`
	Time   int64            `json:"t"`
	Heads  map[string]int64 `json:"h,omitempty"`
	Resync int              `json:"r,omitempty"`
}

// notifyChannel names the channel of the installation in schema:
// "herald_commit:<schema>", or with a hash of the schema when that would
// pass the 63-byte limit on identifiers.
func notifyChannel(schema string) string {
	ch := "herald_commit:" + schema
	if len(ch) > 63 {
		h := fnv.New64a()
		h.Write([]byte(schema))
		ch = fmt.Sprintf("herald_commit:%016x", h.Sum64())
	}
	return ch
}

// EnableNotify makes every later Append that stores events send one
// notification, tagged with node, on the channel of this store's schema
// (see Listen). It fails with CodeInvalid for an empty or non-UTF-8 node.
func (s *Store) EnableNotify(ctx context.Context, node string) error {
	if err := s.checkOpen(); err != nil {
		return err
	}
	if node == "" || !validText(node) {
		return herald.FieldErrorf("node", "the node id must be non-empty UTF-8 without NUL bytes")
	}
	ch, err := s.channel(ctx)
	if err != nil {
		return err
	}
	s.notify.Store(&notifyTarget{node: node, channel: ch})
	return nil
}

// channel reads the schema the tables live in and names its channel.
func (s *Store) channel(ctx context.Context) (string, error) {
	var schema *string
	if err := s.pool.QueryRow(ctx, `SELECT current_schema()`).Scan(&schema); err != nil {
		return "", s.fail("read the current schema", err)
	}
	if schema == nil {
		return "", herald.Errorf(herald.CodeInvalid, "no schema of the search_path exists; create it or fix search_path")
	}
	return notifyChannel(*schema), nil
}

// queueNotify adds the commit notification of an Append to its write
// batch, if notifications are enabled and the Append stored events.
func (s *Store) queueNotify(b *pgx.Batch, topics map[string]*appendTopic) {
	n := s.notify.Load()
	if n == nil {
		return
	}
	heads := make(map[string]int64)
	for name, t := range topics {
		if t.head > t.locked {
			heads[name] = t.head
		}
	}
	if len(heads) == 0 {
		return
	}
	b.Queue(`SELECT pg_notify($1, $2)`, n.channel, encodeCommit(n.node, time.Now(), heads))
}

// encodeCommit returns the payload of a commit, or a resync payload when
// the heads do not fit.
func encodeCommit(node string, at time.Time, heads map[string]int64) string {
	w := commitWire{Node: node, Time: at.UnixNano(), Heads: heads}
	b, _ := json.Marshal(w) // strings and integers: cannot fail
	if len(b) > maxNotifyPayload {
		w.Heads, w.Resync = nil, 1
		b, _ = json.Marshal(w)
	}
	return string(b)
}

// decodeCommit parses a payload; topics come in no particular order.
func decodeCommit(payload string) (cluster.Commit, error) {
	var w commitWire
	if err := json.Unmarshal([]byte(payload), &w); err != nil {
		return cluster.Commit{}, fmt.Errorf("commit notification %.80q: %w", payload, err)
	}
	c := cluster.Commit{Node: w.Node, Resync: w.Resync != 0}
	if w.Time != 0 {
		c.Time = time.Unix(0, w.Time)
	}
	for topic, seq := range w.Heads {
		c.Heads = append(c.Heads, cluster.Head{Topic: topic, Seq: seq})
	}
	return c, nil
}

// listenProbe is how long Listen waits for a notification before it
// checks that the connection still works: a database or network that
// vanishes without closing the socket is noticed within about this long.
const listenProbe = 15 * time.Second

// Listen opens a connection of its own (outside the pool, with the pool's
// settings), listens on the channel of this store's schema, calls
// listening, then calls deliver for every notification, in commit order,
// own ones included, until ctx ends, the connection fails or deliver
// fails. A payload that cannot be parsed is delivered as a resync. It
// returns ctx.Err() when ctx ended, else the error that ended it (with a
// code: CodeUnavailable when the database went away). EnableNotify must
// have been called (CodeConflict otherwise): it names the channel.
func (s *Store) Listen(ctx context.Context, listening func(context.Context) error, deliver func(cluster.Commit) error) error {
	if err := s.checkOpen(); err != nil {
		return err
	}
	n := s.notify.Load()
	if n == nil {
		return herald.Errorf(herald.CodeConflict, "commit notifications are not enabled on this store")
	}
	conn, err := pgx.ConnectConfig(ctx, s.pool.Config().ConnConfig.Copy())
	if err != nil {
		return s.listenErr(ctx, "connect", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	if _, err := conn.Exec(ctx, `LISTEN `+pgx.Identifier{n.channel}.Sanitize()); err != nil {
		return s.listenErr(ctx, "listen", err)
	}
	if err := listening(ctx); err != nil {
		return err
	}
	for {
		wctx, cancel := context.WithTimeout(ctx, listenProbe)
		note, err := conn.WaitForNotification(wctx)
		cancel()
		if note != nil {
			c, derr := decodeCommit(note.Payload)
			if derr != nil {
				s.log.Warn("postgres store: unreadable commit notification; resyncing", "err", derr)
				c = cluster.Commit{Resync: true}
			}
			if err := deliver(c); err != nil {
				return err
			}
		}
		switch {
		case err == nil:
		case ctx.Err() != nil:
			return ctx.Err()
		case pgconn.Timeout(err) || errors.Is(err, context.DeadlineExceeded):
			// Quiet for a while: make sure the connection is still there.
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err = conn.Ping(pctx)
			cancel()
			if err != nil {
				return s.listenErr(ctx, "probe", err)
			}
		default:
			return s.listenErr(ctx, "wait for notifications", err)
		}
	}
}

// listenErr reports why Listen ended: the context, or a coded store error.
func (s *Store) listenErr(ctx context.Context, op string, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	e := s.fail("commit listener: "+op, err)
	_, answered := errors.AsType[*pgconn.PgError](err)
	if he, ok := errors.AsType[*herald.Error](e); ok && he.Code == herald.CodeInternal && !answered {
		// A connection that failed under the listener (closed, reset,
		// terminated by an administrator) means the database is away.
		he.Code, he.Message = herald.CodeUnavailable, "the commit listener lost its connection"
	}
	return e
}
