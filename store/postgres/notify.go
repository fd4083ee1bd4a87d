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

// Commit notifications (cluster.Bus): an Append that stores events sends
// one pg_notify, whatever the number of events and topics, in a small
// transaction of its own that the server runs right after the append's
// COMMIT and only if that COMMIT succeeded (notifySQL says why not inside
// it). So no node is woken for events that do not exist or could still be
// lost. One node's appends are announced in commit order; an append of
// another node committed just after may be announced first, which
// listeners absorb because heads only grow. The payload is compact JSON:
//
//	{"n":"node-id","t":1712345678901234567,"h":{"orders":42,"audit":7}}
//
// n is the committing node, t its clock at commit (Unix nanoseconds), h the
// new head seq of each topic the batch stored events in. A payload that
// would pass PostgreSQL's limit (8000 bytes) becomes {"n":..,"t":..,"r":1}:
// listeners then read every topic's head from the store.
//
// A committed creation, change or deletion of a subscription
// (CreateSubscription, UpdateSubscription, DeleteSubscription) is announced
// as {"n":..,"t":..,"s":1} the same way, so the node that dispatches the
// subscription (rarely the one the API request reached) acts on it at
// once instead of at its next poll of the subscriptions table.
//
// A committed deletion of a topic (DeleteTopic) is announced as
// {"n":..,"t":..,"d":["orders"]} the same way, so every node drops what it
// keeps in memory about the topic (its streams end, its caches forget it)
// and a topic created again under the name starts clean there too.
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
	Subs   int              `json:"s,omitempty"`
	SubIDs []string         `json:"si,omitempty"` // the subscriptions changed, when they fit
	Topics []string         `json:"d,omitempty"`  // deleted topics
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

// EnableNotify makes every later Append that stores events, every later
// change of a subscription and every later deletion of a topic send one
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

// notifySQL sends a commit notification in a transaction of its own,
// which Append queues right after its COMMIT, in the same round trip.
//
// Not in the appending transaction: PostgreSQL makes every transaction
// that notifies take one lock for the whole database server at commit
// (PreCommit_Notify in its async.c) and hold it until the commit is
// flushed, so notifying appends committed one at a time, whatever their
// topics, on every node together: a ceiling of one commit per WAL flush
// for the cluster. This transaction commits without waiting for the flush
// (synchronous_commit off, for it alone: a notification is not durable
// anyway), so the lock is held for microseconds, and the append it
// announces is already durable when it is sent, so no one is woken for an
// event that a crash could take back. Measured with pgbench on the
// append's shape, eight sessions appending to 100 topics: 5,300 commits/s
// notifying inside the transaction, 8,400-8,600 with this, 7,500-9,100
// without notifying (docs/cluster.md).
//
// A notification is lost only if the connection or the server fails
// between the two commits; listeners resync every topic's head after a
// reconnect and every ResyncInterval (cluster package).
const notifySQL = `SELECT set_config('synchronous_commit', 'off', true), pg_notify($1, $2)`

// notifyWarnEvery spaces the warnings of failed notifications: a full
// notification queue would otherwise log one per commit.
const notifyWarnEvery = time.Minute

// notifyFailed reports a notification that failed after the change it
// announces committed: the change stands, and the other nodes learn of it
// at their next resync or poll.
func (s *Store) notifyFailed(err error) {
	now := time.Now().UnixNano()
	last := s.notifyWarned.Load()
	if now-last < int64(notifyWarnEvery) || !s.notifyWarned.CompareAndSwap(last, now) {
		return
	}
	s.log.Warn("postgres store: a commit notification failed; other nodes see the change at their next resync or poll (check pg_notification_queue_usage())", "err", err)
}

// queueNotify adds the commit notification of an Append to its write
// batch, after the COMMIT, if notifications are enabled and the Append
// stored events. The server runs it only once the COMMIT has succeeded:
// a failed statement makes it skip the rest of the batch.
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
	b.Queue(notifySQL, n.channel, encodeCommit(n.node, time.Now(), heads))
}

// announceSubscriptionChange tells the other nodes that a subscription
// change has just committed, if notifications are enabled. Like an
// append's, the notification is a transaction of its own after the
// change's (notifySQL): it can fail without undoing the change, which the
// owner then sees at its next poll of the subscriptions.
//
// It names the subscriptions changed, so that the other nodes look at
// those alone; when they do not fit in a notification, or none is named,
// the others read every subscription.
func (s *Store) announceSubscriptionChange(ctx context.Context, ids ...string) {
	n := s.notify.Load()
	if n == nil {
		return
	}
	w := commitWire{Node: n.node, Time: time.Now().UnixNano(), Subs: 1, SubIDs: ids}
	b, _ := json.Marshal(w) // cannot fail
	if len(b) > maxNotifyPayload {
		w.SubIDs = nil
		b, _ = json.Marshal(w)
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if _, err := s.pool.Exec(ctx, notifySQL, n.channel, string(b)); err != nil {
		s.notifyFailed(err)
	}
}

// announceTopicDeletion tells the other nodes that the topic's deletion
// has just committed, if notifications are enabled, like
// announceSubscriptionChange: it can fail without undoing the deletion,
// and then the other nodes' streams of the topic stay open until their
// clients reconnect. A topic name is at most 200 ASCII bytes, so the
// payload always fits.
func (s *Store) announceTopicDeletion(ctx context.Context, topic string) {
	n := s.notify.Load()
	if n == nil {
		return
	}
	b, _ := json.Marshal(commitWire{Node: n.node, Time: time.Now().UnixNano(), Topics: []string{topic}}) // cannot fail
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if _, err := s.pool.Exec(ctx, notifySQL, n.channel, string(b)); err != nil {
		s.notifyFailed(err)
	}
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
	c := cluster.Commit{Node: w.Node, Resync: w.Resync != 0, Subscriptions: w.Subs != 0, SubscriptionIDs: w.SubIDs, DeletedTopics: w.Topics}
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
// listening, then calls deliver for every notification, in the order they
// were sent (see above), own ones included, until ctx ends, the connection
// fails or deliver fails. A payload that cannot be parsed is delivered as a resync. It
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
