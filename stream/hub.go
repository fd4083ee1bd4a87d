package stream

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/engine"
	"github.com/heraldhq/herald/filter"
	"github.com/heraldhq/herald/lifecycle"
)

// Config tunes the hub. Zero values mean the defaults; every limit is
// documented for users in docs/streams.md.
type Config struct {
	// NodeID names this node in the presence it records for users
	// (Deps.Users); "" records none.
	NodeID string
	// UserSyncInterval is how often the hub rereads the server-side
	// subscriptions of the users connected here (changes made on this
	// node apply at once: UserChanged) and records their presence.
	// Default 2s.
	UserSyncInterval time.Duration
	// PresenceInterval is how often the announcer of presence events
	// looks at the cluster's presence records. Default 1s.
	PresenceInterval time.Duration
	// QueueSize bounds the events and control frames waiting to be written
	// to one connection. A connection whose queue is full is a slow
	// consumer: it is disconnected with ReasonSlowConsumer and resumes from
	// its last seq when it reconnects. Default 1024.
	QueueSize int
	// HeartbeatInterval is how often an SSE stream gets a comment line, so
	// proxies and clients see it alive. Default 15s.
	HeartbeatInterval time.Duration
	// PingInterval is how often a WebSocket gets a protocol ping. Default 20s.
	PingInterval time.Duration
	// PongTimeout is how long a ping waits for its pong before the
	// connection is closed as dead. Default 10s.
	PongTimeout time.Duration
	// WriteTimeout bounds each write to a client (one batch of frames).
	// Default 10s.
	WriteTimeout time.Duration
	// SSERetry is the reconnection delay sent to EventSource clients in the
	// "retry:" field. Default 2s.
	SSERetry time.Duration
	// MaxSubscriptionsPerConn bounds the subscriptions of one WebSocket.
	// Default 100.
	MaxSubscriptionsPerConn int
	// MaxConnsPerSubject bounds the open streams (SSE and WebSocket) of one
	// API key or token subject. Default 1000; negative means no limit.
	MaxConnsPerSubject int
	// MaxMessageBytes bounds one message a WebSocket client sends.
	// Default 64 KiB.
	MaxMessageBytes int64
	// AllowedOrigins lists the browser origins allowed besides the
	// server's own host, for SSE (CORS) and WebSocket (origin check). Each
	// entry is a host pattern ("app.example.com", "*.example.com") or,
	// with "://", a scheme and host pattern ("https://app.example.com"),
	// matched case-insensitively with path.Match. "*" allows every origin.
	AllowedOrigins []string
	// ReplayPage is how many events a replay reads from the store at a
	// time. Default 500.
	ReplayPage int
	// FanoutBuffer bounds the committed events waiting for fan-out. When
	// it is full, the hub reads the overflow back from the tail cache or
	// the store, so nothing is lost and the committer never waits.
	// Default 65536.
	FanoutBuffer int
	// SweepInterval is how often the hub checks connections for due pings
	// and expired tokens and keys. Default 1s.
	SweepInterval time.Duration
	// KeyCheckInterval is how often the hub asks the Authenticator's
	// KeyChecker whether the keys behind its open streams still hold,
	// closing those of a key deleted meanwhile (on any node). Default 1s.
	KeyCheckInterval time.Duration
}

func (c Config) withDefaults() Config {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defDur := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&c.QueueSize, 1024)
	def(&c.MaxSubscriptionsPerConn, 100)
	def(&c.ReplayPage, 500)
	def(&c.FanoutBuffer, 65536)
	if c.MaxConnsPerSubject == 0 {
		c.MaxConnsPerSubject = 1000
	}
	if c.MaxMessageBytes <= 0 {
		c.MaxMessageBytes = 64 << 10
	}
	defDur(&c.HeartbeatInterval, 15*time.Second)
	defDur(&c.PingInterval, 20*time.Second)
	defDur(&c.PongTimeout, 10*time.Second)
	defDur(&c.WriteTimeout, 10*time.Second)
	defDur(&c.SSERetry, 2*time.Second)
	defDur(&c.SweepInterval, time.Second)
	defDur(&c.KeyCheckInterval, time.Second)
	defDur(&c.UserSyncInterval, 2*time.Second)
	defDur(&c.PresenceInterval, time.Second)
	return c
}

// Store is the part of herald.Store the hub reads: topic statistics for
// the retention gap, and events for replay and catch-up.
type Store interface {
	GetTopic(ctx context.Context, name string) (herald.Topic, error)
	ListTopics(ctx context.Context, after string, limit int) ([]herald.Topic, error)
	ReadEvents(ctx context.Context, topic string, afterSeq int64, limit int) ([]herald.Event, error)
	SeqAtTime(ctx context.Context, topic string, t time.Time) (int64, error)
}

// TailReader reads the newest events of a topic from memory
// (engine.Tail implements it). ok false means "ask the store".
type TailReader interface {
	Read(topic string, afterSeq int64, limit int) (events []*herald.Event, ok bool)
}

// Deps are the parts the hub runs on. Store is required. A nil Tail reads
// every replay from the store; a nil Keys never re-checks the keys behind
// open streams; a nil Logger discards; a nil Registry keeps the metrics
// private; a nil Now is time.Now.
type Deps struct {
	Store Store
	// Users keeps end users' server-side subscriptions and presence; nil:
	// user tokens get no server-side subscriptions.
	Users  UserStore
	Tail   TailReader
	Keys   KeyChecker
	Logger *slog.Logger
	// Registry receives the herald_stream_* metrics. A second hub on the
	// same registry shares them.
	Registry prometheus.Registerer
	// Now is the clock for token expiry of open connections.
	Now func() time.Time
	// Presence, when set with Leases, Users and Config.NodeID, publishes
	// presence events (PresenceTopic): a user's first connection in the
	// cluster opened (PresenceJoined) or its last one closed
	// (PresenceLeft), announced by the one node holding PresenceLease
	// (see announcePresence). It is called from one goroutine, in order,
	// with batches of events to commit. nil: none.
	Presence func(ctx context.Context, events []*herald.Event) error
	// Decoder renders payloads that are not JSON (protobuf, through the
	// topic's schema) for filters that read payload fields and for
	// subscriptions in the json format (schema.Registry implements it).
	// nil: such payloads are not rendered.
	Decoder filter.Decoder
	// Leases decides which node announces presence.
	Leases Leases
}

// Hub serves realtime streams: Server-Sent Events (ServeSSE) and
// WebSockets (ServeWebSocket). Committed events reach it through OnCommit
// (a committer hook) and Notify (events committed by another node); it
// fans them out from memory to each matching connection's bounded queue,
// and replays history from the store when a client resumes.
//
// Lock order: Hub.mu before conn.mu. Hub.inMu and Hub.pendMu are leaves,
// never held while taking another lock.
//
// Create it with NewHub, call Start before serving and Stop when shutting
// down. Its methods are safe for concurrent use.
type Hub struct {
	cfg   Config
	store Store
	tail  TailReader
	keys  KeyChecker // nil: keys are not re-checked
	users UserStore  // nil: no server-side subscriptions
	log   *slog.Logger
	dec   filter.Decoder // nil: payloads that are not JSON are not rendered

	presence     func(context.Context, []*herald.Event) error // nil: no presence events
	leases       Leases                                       // nil: no presence events
	presenceWake chan struct{}                                // capacity 1: record presence now
	announceWake chan struct{}                                // capacity 1: announce now
	metrics      *metrics
	now          func() time.Time

	mu         sync.RWMutex
	exact      map[string][]*sub // subscriptions to one topic, by topic
	patterns   []*sub            // subscriptions to patterns
	conns      map[*conn]struct{}
	perSubject map[string]int
	byUser     map[string]map[*conn]struct{} // connections of user tokens
	userWake   chan struct{}                 // capacity 1: sync users now
	state      hubState
	accepting  atomic.Bool // OnCommit and Notify take events: between Start and Stop
	startedAt  time.Time
	ctx        context.Context  // the hub's lifetime; cancelled by Stop once handlers are done
	life       lifecycle.Runner // loop and checkKeys
	stopCh     chan struct{}    // closed when Stop begins
	handlers   sync.WaitGroup

	// inbox holds committed events waiting for fan-out, in commit order.
	inMu    sync.Mutex
	inbox   []*herald.Event
	inSpare []*herald.Event
	// pending holds topics to catch up from the tail or the store, with
	// the seq to reach: events that overflowed the inbox, or that another
	// node committed (Notify).
	pendMu  sync.Mutex
	pending map[string]int64
	forgets map[string]struct{} // topics deleted, to forget first
	remote  bool                // Notify was called: seqs may arrive out of order
	wake    chan struct{}       // capacity 1: the loop has work

	// heads is the newest seq fanned out (or passed over: no stream here
	// covered the topic) per topic; owned by the loop.
	heads map[string]int64
}

type hubState int

const (
	hubNew hubState = iota
	hubRunning
	hubStopped
)

// NewHub returns a hub. It starts nothing; call Start. It panics only if
// deps.Registry holds different collectors under the hub's metric names,
// a wiring bug.
func NewHub(cfg Config, deps Deps) *Hub {
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	now := deps.Now
	if now == nil {
		now = time.Now
	}
	h := &Hub{
		cfg:          cfg.withDefaults(),
		store:        deps.Store,
		tail:         deps.Tail,
		keys:         deps.Keys,
		users:        deps.Users,
		log:          log,
		dec:          deps.Decoder,
		presence:     deps.Presence,
		leases:       deps.Leases,
		presenceWake: make(chan struct{}, 1),
		announceWake: make(chan struct{}, 1),
		metrics:      newMetrics(deps.Registry),
		now:          now,
		exact:        make(map[string][]*sub),
		conns:        make(map[*conn]struct{}),
		perSubject:   make(map[string]int),
		byUser:       make(map[string]map[*conn]struct{}),
		userWake:     make(chan struct{}, 1),
		stopCh:       make(chan struct{}),
		pending:      make(map[string]int64),
		wake:         make(chan struct{}, 1),
		heads:        make(map[string]int64),
	}
	return h
}

// Start launches the hub's loop (fan-out, catch-up, pings and token
// expiry) and lets the handlers accept streams. It returns at once. ctx
// only carries values; the hub runs until Stop. Calling Start twice, or
// after Stop, is an error.
func (h *Hub) Start(ctx context.Context) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.state != hubNew {
		return errors.New("stream hub: Start called twice or after Stop")
	}
	h.state = hubRunning
	h.startedAt = h.now()
	if err := h.life.Start(ctx, "stream hub"); err != nil {
		return err
	}
	h.ctx = h.life.Context()
	h.accepting.Store(true)
	h.life.Go(h.loop)
	if h.keys != nil {
		h.life.Go(h.checkKeys)
	}
	if h.users != nil {
		h.life.Go(h.syncUsers)
	}
	if h.presence != nil && h.leases != nil && h.users != nil && h.cfg.NodeID != "" {
		first, cancel := context.WithTimeout(h.ctx, 10*time.Second)
		seen := h.announceStep(first, nil)
		cancel()
		h.life.Go(func(context.Context) { h.announcePresence(seen) })
	}
	return nil
}

// Stop tells every client to reconnect (an SSE response ends after an
// "herald.disconnect" event; a WebSocket closes with 1012, service
// restart), refuses new streams with 503, and waits until every stream
// has ended (its handler, or the goroutine that reads a taken-over
// connection, has returned) and the loop has exited, or ctx ends. Clients
// lose nothing: they resume from their last seq on any node. Stop is
// idempotent, safe before Start, and every call waits. Call it from
// http.Server.RegisterOnShutdown (Shutdown does not wait for hijacked
// WebSockets and would wait for SSE responses until its deadline) and
// again after Shutdown returns.
func (h *Hub) Stop(ctx context.Context) error {
	h.mu.Lock()
	first := h.state != hubStopped
	h.state = hubStopped
	h.accepting.Store(false)
	var conns []*conn
	if first {
		close(h.stopCh)
		for c := range h.conns {
			conns = append(conns, c)
		}
	}
	h.mu.Unlock()
	for _, c := range conns {
		c.shutdown(reasonShutdown)
	}
	done := make(chan struct{})
	go func() { // ends when the last handler returns, even if Stop gave up waiting
		h.handlers.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		return context.Cause(ctx)
	}
	_, err := h.life.Stop(ctx) // the loop and checkKeys; nothing before Start
	return err
}

// Listener is the hub's part in an engine.Feed, at StageConsumer: this
// node's commits fan out from memory, other nodes' commits are read from
// the store, a deleted topic ends its subscriptions, and a revoked key its
// streams.
func (h *Hub) Listener() engine.Listener {
	return engine.Listener{Committed: h.OnCommit, RemoteCommitted: h.Notify, TopicDeleted: h.Forget, KeyRevoked: h.Revoke}
}

// OnCommit takes the events of one commit, for fan-out to the matching
// connections. Register it on the committer (engine.Committer.OnCommit)
// after the tail cache's hook. It never blocks: the events go to a bounded
// buffer served by the hub's loop, and what does not fit is read back
// later from the tail cache or the store. Events of one topic must come
// in seq order, as the committer gives them. Before Start and after Stop
// it drops them: no stream is open then.
func (h *Hub) OnCommit(events []*herald.Event) {
	if len(events) == 0 || !h.accepting.Load() {
		return
	}
	h.inMu.Lock()
	room := h.cfg.FanoutBuffer - len(h.inbox)
	fit := min(max(room, 0), len(events))
	h.inbox = append(h.inbox, events[:fit]...)
	h.inMu.Unlock()
	if fit < len(events) {
		h.metrics.fanoutOverflow.Add(float64(len(events) - fit))
		for _, e := range events[fit:] {
			h.markPending(e.Topic, e.Seq)
		}
	}
	h.kick()
}

// Notify tells the hub that the topic has events up to headSeq that were
// committed elsewhere (by another node). The hub reads them from the tail
// cache or the store and fans them out in seq order, skipping any it has
// already sent. When no stream on this node covers the topic, it only
// notes headSeq as passed and reads nothing (see catchUp). It never
// blocks; notifications for one topic coalesce.
func (h *Hub) Notify(topic string, headSeq int64) {
	if !h.accepting.Load() {
		return
	}
	h.pendMu.Lock()
	h.remote = true
	h.pendMu.Unlock()
	h.markPending(topic, headSeq)
	h.kick()
}

// Forget tells the hub that the topic was deleted. Subscriptions to the
// topic end with a not-found error: a WebSocket subscription gets an
// "error" frame (the connection goes on), an SSE stream ends with a
// "herald.disconnect" event of code "not-found" (an EventSource that
// reconnects gets 404 and gives up, or, if the topic was created again,
// streams it from its first event). Pattern subscriptions forget their
// position in it, so a topic created again under the name is streamed
// from seq 1. The API calls it on the node that deleted the topic, and
// the cluster on every other node; without it the hub notices a deletion
// only when the topic starts over on this node. A catch-up still pending
// for the topic is dropped: its head is the deleted topic's. It never
// blocks. Before Start and after Stop no stream is open, and it does
// nothing.
func (h *Hub) Forget(topic string) {
	if !h.accepting.Load() {
		return
	}
	h.pendMu.Lock()
	if h.forgets == nil {
		h.forgets = make(map[string]struct{})
	}
	h.forgets[topic] = struct{}{}
	// A head noted for the deleted topic must not count for one created
	// again: the catch-up would pass over the new topic's events up to it.
	delete(h.pending, topic)
	h.pendMu.Unlock()
	h.kick()
}

func (h *Hub) markPending(topic string, seq int64) {
	h.pendMu.Lock()
	if seq > h.pending[topic] {
		h.pending[topic] = seq
	}
	h.pendMu.Unlock()
}

func (h *Hub) kick() {
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

// loop is the hub's main goroutine: it fans out committed events in commit
// order, catches up topics from the store, and sweeps connections for
// pings and expired tokens and keys. With a KeyChecker, checkKeys runs
// beside it, so its store reads do not hold up fan-out. Owned by Start and
// Stop.
func (h *Hub) loop(ctx context.Context) {
	t := time.NewTicker(h.cfg.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			h.sweep()
		case <-h.wake:
			h.drain()
		}
	}
}

// drain forgets deleted topics, fans out everything in the inbox, then
// catches up pending topics.
func (h *Hub) drain() {
	h.pendMu.Lock()
	forgets := h.forgets
	h.forgets = nil
	h.pendMu.Unlock()
	for topic := range forgets {
		h.forget(topic)
	}
	for {
		h.inMu.Lock()
		batch := h.inbox
		h.inbox, h.inSpare = h.inSpare[:0], nil
		h.inMu.Unlock()
		if len(batch) == 0 {
			break
		}
		for i, e := range batch {
			h.fanOutInOrder(e)
			batch[i] = nil
		}
		h.inMu.Lock()
		if cap(batch) <= 4096 { // keep a modest buffer for the next round
			h.inSpare = batch[:0]
		}
		h.inMu.Unlock()
	}
	h.pendMu.Lock()
	if len(h.pending) == 0 {
		h.pendMu.Unlock()
		return
	}
	pending := h.pending
	h.pending = make(map[string]int64)
	h.pendMu.Unlock()
	for topic, target := range pending {
		if h.heads[topic] < target {
			h.catchUp(topic, target)
		}
	}
}

// fanOutInOrder sends e unless it was sent already; when events before it
// were not seen (committed elsewhere, or overflowed the inbox), it reads
// them first, so every connection gets each topic in seq order.
func (h *Hub) fanOutInOrder(e *herald.Event) {
	head, known := h.heads[e.Topic]
	switch {
	case known && e.Seq <= head && !h.isRemote():
		// One node commits each topic in seq order: a seq that goes back
		// means the topic was deleted and created again.
		h.forget(e.Topic)
	case known && e.Seq <= head:
		return // already sent through a catch-up
	case known && e.Seq > head+1:
		h.catchUp(e.Topic, e.Seq-1)
	}
	if h.heads[e.Topic] >= e.Seq {
		return
	}
	h.heads[e.Topic] = e.Seq
	h.deliver(newOutEvent(e))
}

// catchUp fans out the topic's events after the last one sent, up to
// target, reading the tail cache and then the store. A topic never seen
// since Start is read from the first event at or after the start time
// (less clockMargin): later events are new to every connection.
//
// A topic no subscription on this node covers is not read: its head just
// moves to target. That loses nothing. Every event up to target was
// committed before this check, so before any subscription registered
// after it (addSub, under h.mu like the check). Such a subscription either
// is live, and wants only events committed after it registered, or
// replays: its plan and replay read the store after it registered, so
// they see those events, and the events after target are fanned out to it
// by later catch-ups (noted as missed while it replays, deduplicated by
// its positions). The head must move all the same: a catch-up from an
// older head would send a live subscription events from before it.
func (h *Hub) catchUp(topic string, target int64) {
	if !h.streamed(topic) {
		h.heads[topic] = max(h.heads[topic], target)
		return
	}
	ctx := h.ctx
	after, known := h.heads[topic]
	if !known {
		seq, err := h.store.SeqAtTime(ctx, topic, h.startedAt.Add(-clockMargin))
		if err != nil {
			h.logCatchUp(topic, err)
			return
		}
		after = seq - 1
	}
	for after < target {
		events, err := h.read(ctx, topic, after, h.cfg.ReplayPage)
		if err != nil {
			h.logCatchUp(topic, err)
			return
		}
		if len(events) == 0 {
			break
		}
		for _, e := range events {
			if e.Seq > target {
				break
			}
			after = e.Seq
			h.heads[topic] = e.Seq
			h.deliver(newOutEvent(e))
		}
		if len(events) < h.cfg.ReplayPage {
			break
		}
	}
}

// streamed reports whether a subscription on this node covers the topic:
// one to the topic, or a pattern that matches it.
func (h *Hub) streamed(topic string) bool {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if len(h.exact[topic]) > 0 {
		return true
	}
	for _, s := range h.patterns {
		if s.matches(topic) {
			return true
		}
	}
	return false
}

func (h *Hub) isRemote() bool {
	h.pendMu.Lock()
	defer h.pendMu.Unlock()
	return h.remote
}

// forget drops what the hub and its subscriptions know of a deleted
// topic's seqs; see Forget.
func (h *Hub) forget(topic string) {
	delete(h.heads, topic)
	h.mu.RLock()
	defer h.mu.RUnlock()
	for _, s := range h.exact[topic] {
		s.conn.enqueue(item{kind: itemForget, sub: s, topic: topic})
	}
	for _, s := range h.patterns {
		if s.matches(topic) {
			s.conn.enqueue(item{kind: itemForget, sub: s, topic: topic})
		}
	}
}

func (h *Hub) logCatchUp(topic string, err error) {
	if h.ctx.Err() != nil {
		return
	}
	h.log.Warn("stream catch-up failed; clients of the topic resume on reconnect", "topic", topic, "err", err)
}

// read returns up to limit events of the topic after afterSeq from the
// tail cache when it can answer, else from the store.
func (h *Hub) read(ctx context.Context, topic string, afterSeq int64, limit int) ([]*herald.Event, error) {
	if h.tail != nil {
		// An empty answer only means the tail has seen nothing newer; events
		// committed by another node may be in the store.
		if evs, ok := h.tail.Read(topic, afterSeq, limit); ok && len(evs) > 0 {
			return evs, nil
		}
	}
	stored, err := h.store.ReadEvents(ctx, topic, afterSeq, limit)
	if err != nil {
		return nil, err
	}
	out := make([]*herald.Event, len(stored))
	for i := range stored {
		out[i] = &stored[i]
	}
	return out, nil
}

// deliver offers one event to every subscription that matches its topic.
// The read lock is taken per event so subscribers never wait long.
func (h *Hub) deliver(oe *outEvent) {
	topic := oe.ev.Topic
	h.mu.RLock()
	defer h.mu.RUnlock()
	for _, s := range h.exact[topic] {
		s.offer(oe)
	}
	for _, s := range h.patterns {
		if s.matches(topic) {
			s.offer(oe)
		}
	}
}

// sweep pings WebSockets that are due and closes connections whose token
// or key has expired.
func (h *Hub) sweep() {
	now := h.now()
	h.mu.RLock()
	defer h.mu.RUnlock()
	for c := range h.conns {
		if !c.expires.IsZero() && !now.Before(c.expires) {
			c.shutdown(reasonTokenExpired)
			continue
		}
		if !c.keyExpires.IsZero() && !now.Before(c.keyExpires) {
			c.shutdown(reasonKeyRevoked)
			continue
		}
		switch {
		case c.transport == transportWS && now.Sub(c.lastPing) >= h.cfg.PingInterval:
			c.lastPing = now
			c.ping()
		case c.transport == transportSSE && now.Sub(c.lastBeat) >= h.cfg.HeartbeatInterval:
			c.lastBeat = now
			c.heartbeat()
		}
	}
}

// Revoke closes every open stream of the subject (the API key's id; its
// tokens' streams too) with ReasonKeyRevoked: the API reports a key it
// deletes to the feed, which calls it. Other nodes notice the deletion through the KeyChecker
// (see checkKeys). It never blocks.
func (h *Hub) Revoke(subject string) { h.revoke(subject) }

// revoke closes the subject's streams and returns how many were not
// closing already.
func (h *Hub) revoke(subject string) int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	n := 0
	for c := range h.conns {
		if c.subject == subject && c.shutdown(reasonKeyRevoked) {
			n++
		}
	}
	return n
}

// checkKeys asks the KeyChecker, every KeyCheckInterval, about the key of
// each open stream, and revokes the streams of keys that no longer hold:
// deleted through another node, or expired. A key deleted anywhere closes
// its streams here within KeyCheckInterval plus the checker's delay. A
// check that fails (the store is away) closes nothing. Run beside loop
// until the hub's context ends.
func (h *Hub) checkKeys(context.Context) {
	t := time.NewTicker(h.cfg.KeyCheckInterval)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-h.ctx.Done():
			return
		case <-t.C:
		}
		h.mu.RLock()
		subjects := make([]string, 0, len(h.perSubject))
		for s := range h.perSubject {
			subjects = append(subjects, s)
		}
		h.mu.RUnlock()
		var failed error
		for _, s := range subjects {
			ctx, cancel := context.WithTimeout(h.ctx, 10*time.Second)
			_, err := h.keys.CheckKey(ctx, s)
			cancel()
			switch {
			case herald.IsCode(err, herald.CodeUnauthorized):
				if n := h.revoke(s); n > 0 {
					h.log.Info("closed the streams of a deleted or expired API key", "subject", s, "streams", n)
				}
			case err != nil && h.ctx.Err() == nil:
				failed = err
			}
		}
		if failed != nil && !failing {
			h.log.Warn("cannot check the API keys of open streams; they stay open until it works again", "err", failed)
		}
		failing = failed != nil
	}
}

// addConn admits a connection: the hub must be running and the subject
// under its limit. The caller must call removeConn when it ends.
func (h *Hub) addConn(c *conn) error {
	joined, err := h.admit(c)
	if joined {
		h.notePresence(c.user)
	}
	return err
}

// admit registers c and reports whether it is its user's first
// connection here.
func (h *Hub) admit(c *conn) (joined bool, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.state != hubRunning {
		return false, herald.Errorf(herald.CodeUnavailable, "the stream service is not running; reconnect later")
	}
	if limit := h.cfg.MaxConnsPerSubject; limit > 0 && h.perSubject[c.subject] >= limit {
		return false, herald.Errorf(herald.CodeRateLimited, "too many open streams for this key: the limit is %d", limit)
	}
	h.perSubject[c.subject]++
	h.conns[c] = struct{}{}
	if c.user != "" {
		if h.byUser[c.user] == nil {
			h.byUser[c.user] = map[*conn]struct{}{}
			joined = true
		}
		h.byUser[c.user][c] = struct{}{}
	}
	h.handlers.Add(1)
	c.lastPing, c.lastBeat = h.now(), h.now()
	h.metrics.conns.WithLabelValues(c.transport.String()).Inc()
	return joined, nil
}

// removeConn unregisters the connection and its subscriptions, waits for
// its writer and ping goroutines, and releases its place in Stop's wait.
func (h *Hub) removeConn(c *conn) {
	h.unregister(c)
	c.finish()
	h.handlers.Done()
}

// unregister removes the connection and its subscriptions from the hub.
func (h *Hub) unregister(c *conn) {
	h.mu.Lock()
	for _, s := range c.subs {
		h.unindex(s)
	}
	n := len(c.subs)
	c.subs = nil
	_, was := h.conns[c]
	delete(h.conns, c)
	left := false
	if c.user != "" && was {
		if delete(h.byUser[c.user], c); len(h.byUser[c.user]) == 0 {
			delete(h.byUser, c.user)
			left = true
		}
	}
	if h.perSubject[c.subject]--; h.perSubject[c.subject] <= 0 {
		delete(h.perSubject, c.subject)
	}
	h.mu.Unlock()
	h.metrics.subs.Sub(float64(n))
	h.metrics.conns.WithLabelValues(c.transport.String()).Dec()
	if left {
		h.notePresence(c.user)
	}
}

// addSub registers a subscription of c and, with queueStart, queues its
// start (the plan, the acknowledgement, then any replay) for the writer.
// From here on, every event fanned out for it is either queued (live) or
// noted as missed (replaying).
func (h *Hub) addSub(c *conn, s *sub, queueStart bool) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.state != hubRunning {
		return herald.Errorf(herald.CodeUnavailable, "the stream service is shutting down; reconnect later")
	}
	if c.subs == nil {
		c.subs = make(map[string]*sub, 1)
	}
	if _, dup := c.subs[s.id]; dup {
		return &herald.Error{Code: herald.CodeConflict, Field: "id", Message: "a subscription with id " + quote(s.id) + " exists on this connection"}
	}
	if limit := h.cfg.MaxSubscriptionsPerConn; len(c.subs) >= limit {
		return herald.Errorf(herald.CodeRateLimited, "too many subscriptions on this connection: the limit is %d", limit)
	}
	c.subs[s.id] = s
	if s.exact {
		l := h.exact[s.pattern]
		s.idx = len(l)
		h.exact[s.pattern] = append(l, s)
	} else {
		s.idx = len(h.patterns)
		h.patterns = append(h.patterns, s)
	}
	s.registered = h.now()
	c.mu.Lock()
	s.live = !s.start.replays()
	if queueStart {
		c.enqueueLocked(item{kind: itemStart, sub: s})
	}
	c.mu.Unlock()
	h.metrics.subs.Inc()
	return nil
}

// removeSub ends the subscription with the id and queues frame (the
// acknowledgement of an unsubscribe, or nil). When only is not nil, it
// ends only that subscription, not a newer one with the same id. It
// reports whether there was such a subscription.
func (h *Hub) removeSub(c *conn, id string, only *sub, frame []byte) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	s, ok := c.subs[id]
	if !ok || (only != nil && s != only) {
		return false
	}
	delete(c.subs, id)
	h.unindex(s)
	s.gone.Store(true)
	if frame != nil {
		c.mu.Lock()
		c.enqueueLocked(item{kind: itemFrame, frame: frame})
		c.mu.Unlock()
	}
	h.metrics.subs.Dec()
	return true
}

// unindex removes s from the fan-out index. h.mu is held.
func (h *Hub) unindex(s *sub) {
	if s.exact {
		l := h.exact[s.pattern]
		last := l[len(l)-1]
		l[s.idx], last.idx = last, s.idx
		l[len(l)-1] = nil
		if l = l[:len(l)-1]; len(l) == 0 {
			delete(h.exact, s.pattern)
		} else {
			h.exact[s.pattern] = l
		}
		return
	}
	l := h.patterns
	last := l[len(l)-1]
	l[s.idx], last.idx = last, s.idx
	l[len(l)-1] = nil
	h.patterns = l[:len(l)-1]
}

// stopping is closed when Stop begins.
func (h *Hub) stopping() <-chan struct{} { return h.stopCh }
