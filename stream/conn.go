package stream

import (
	"context"
	"errors"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/filter"
)

// The reasons a server ends a stream, as sent to clients: the WebSocket
// close reason, or the "reason" of an SSE "herald.disconnect" event. A
// client that reconnects resumes where it left off.
const (
	ReasonSlowConsumer = "slow consumer: reconnect and resume from your last seq"
	ReasonShutdown     = "server restart: reconnect and resume from your last seq"
	ReasonTokenExpired = "token expired: reconnect with a new token"
	// ReasonInvalidUTF8 closes a WebSocket that sent a text frame of
	// invalid UTF-8 (RFC 6455 section 8.1).
	ReasonInvalidUTF8 = "text frames must be valid UTF-8"
	ReasonKeyRevoked  = "key revoked: the API key was deleted or has expired"
)

// clockMargin widens a time-based start for topics a client has seen
// nothing of: an event's time is taken when it is accepted, a little
// before it is committed, so starting this much earlier covers events
// committed after the client's subscription began. It can only add
// events the client has never received, never repeat one.
const clockMargin = 10 * time.Second

type transport uint8

const (
	transportSSE transport = iota + 1
	transportWS
)

func (t transport) String() string {
	if t == transportWS {
		return "websocket"
	}
	return "sse"
}

// closeReason is why the server ends a connection.
type closeReason uint8

const (
	reasonNone closeReason = iota
	reasonSlowConsumer
	reasonShutdown
	reasonTokenExpired
	reasonInvalidUTF8
	reasonKeyRevoked
)

// closeError ends a connection's writer for a reason the client is told.
type closeError struct{ reason closeReason }

func (e closeError) Error() string {
	switch e.reason {
	case reasonSlowConsumer:
		return ReasonSlowConsumer
	case reasonShutdown:
		return ReasonShutdown
	case reasonTokenExpired:
		return ReasonTokenExpired
	case reasonInvalidUTF8:
		return ReasonInvalidUTF8
	case reasonKeyRevoked:
		return ReasonKeyRevoked
	}
	return "closed"
}

// writeError is a failed write to the client: the connection is gone.
type writeError struct{ err error }

func (e writeError) Error() string { return "write to stream client: " + e.err.Error() }
func (e writeError) Unwrap() error { return e.err }

// conn is one client connection: an SSE response or a WebSocket. The hub
// fans events into its bounded queue; one writer drains it. A WebSocket,
// and an SSE stream over HTTP/1 (which the hub takes over from net/http),
// get a writer goroutine only while there is something to write, so an
// idle one costs one goroutine: the WebSocket's reader (readWS), or the
// SSE stream's watcher of the client's close (watchSSE). That goroutine
// ends the connection: the writer's end only closes it. An SSE stream
// over HTTP/2 keeps its handler's goroutine as its writer.
type conn struct {
	hub       *Hub
	transport transport
	subject   string
	scopes    herald.Scopes
	expires   time.Time // token expiry; zero for API keys
	// keyExpires is the expiry of the key behind the connection (its own,
	// or its token's); zero when it never expires.
	keyExpires time.Time
	// user is the end user of a user token ("" otherwise); userPos are
	// the positions its server-side subscriptions resume from (the
	// connect request's ?positions=), and userSeen the topics of its
	// server-side subscriptions already started (or refused) here, so a
	// sync starts each once. Both guarded by hub.mu.
	user     string
	userPos  map[string]int64
	userSeen map[string]bool

	ws       *websocket.Conn // set under mu once accepted
	nc       net.Conn        // SSE over a connection taken from net/http; set under mu
	out      output          // the on-demand writer's output; set under mu when ready
	lastPing time.Time       // owned by the hub's sweep
	lastBeat time.Time       // owned by the hub's sweep
	wg       sync.WaitGroup  // writer and ping goroutines, waited for by finish
	wakeCh   chan struct{}   // SSE in its handler: capacity 1, the writer has work

	subs map[string]*sub // by client id; guarded by hub.mu

	mu       sync.Mutex
	queue    []item
	closing  closeReason
	running  bool // an on-demand writer goroutine is active
	pinging  bool // WebSocket: a ping waits for its pong
	finished bool // the connection is ending: start no goroutine

	replaying []*sub // subscriptions catching up from the store; writer-owned
}

type itemKind uint8

const (
	itemEvent  itemKind = iota + 1
	itemStart           // plan and acknowledge a new subscription
	itemFrame           // a control frame (WebSocket)
	itemForget          // the topic was deleted
)

// item is one entry of a connection's queue.
type item struct {
	kind  itemKind
	sub   *sub
	ev    *outEvent
	frame []byte
	topic string // itemForget
}

// enqueueLocked adds it to the queue, or marks the connection a slow
// consumer when the queue is full, and wakes the writer. c.mu is held.
func (c *conn) enqueueLocked(it item) {
	if c.closing != reasonNone {
		return
	}
	if len(c.queue) >= c.hub.cfg.QueueSize {
		c.closing = reasonSlowConsumer
		c.queue = nil // free it now: the client will replay from the store
		c.hub.metrics.slowConsumer(c.transport).Inc()
		c.kickLocked()
		return
	}
	if c.queue == nil {
		c.queue = make([]item, 0, 4)
	}
	c.queue = append(c.queue, it)
	c.kickLocked()
}

// enqueue adds it to the queue (see enqueueLocked).
func (c *conn) enqueue(it item) {
	c.mu.Lock()
	c.enqueueLocked(it)
	c.mu.Unlock()
}

// enqueueFrame queues a control frame.
func (c *conn) enqueueFrame(b []byte) { c.enqueue(item{kind: itemFrame, frame: b}) }

// kickLocked wakes the writer, starting an on-demand writer goroutine if
// the connection has one and none runs. c.mu is held.
func (c *conn) kickLocked() {
	if c.finished {
		return
	}
	if c.out != nil {
		if !c.running {
			c.running = true
			c.wg.Go(c.runWriter)
		}
		return
	}
	if c.wakeCh != nil {
		select {
		case c.wakeCh <- struct{}{}:
		default:
		}
	}
}

// startWriter makes out the connection's on-demand writer, and starts it
// if anything waits already.
func (c *conn) startWriter(out output) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.out = out
	if c.closing != reasonNone || len(c.queue) > 0 || len(c.replaying) > 0 {
		c.kickLocked()
	}
}

// runWriter drains the queue and replays until nothing is left, then
// exits; enqueueing starts it again. On an error it ends the connection,
// and running stays true so no writer starts again.
func (c *conn) runWriter() {
	for {
		more, err := c.step(c.hub.ctx, c.out)
		if err != nil {
			c.end(err)
			return
		}
		if more {
			continue
		}
		c.mu.Lock()
		if len(c.queue) == 0 && len(c.replaying) == 0 && c.closing == reasonNone {
			c.running = false
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
	}
}

// end closes a connection with an on-demand writer, telling the client
// why when it can.
func (c *conn) end(err error) {
	if c.transport == transportWS {
		c.closeWS(err) // the reader then sees the close and unregisters
		return
	}
	c.out.(sseWriter).end(err)
	_ = c.nc.Close() // watchSSE then sees the close and unregisters
}

// heartbeat queues an SSE comment line for an idle-capable stream.
func (c *conn) heartbeat() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.nc != nil && c.closing == reasonNone {
		c.enqueueLocked(item{kind: itemFrame, frame: heartbeatLine})
	}
}

var heartbeatLine = []byte(":\n\n")

// shutdown makes the writer end the connection for reason, dropping what
// is queued: the client replays it after reconnecting. It reports whether
// the connection was not ending already.
func (c *conn) shutdown(reason closeReason) bool {
	c.mu.Lock()
	first := c.closing == reasonNone
	if first {
		c.closing = reason
		c.queue = nil
	}
	c.kickLocked()
	c.mu.Unlock()
	return first
}

// finish stops new goroutines of the connection and waits for the
// running ones.
func (c *conn) finish() {
	c.mu.Lock()
	c.finished = true
	c.mu.Unlock()
	c.wg.Wait()
}

// output writes to one client; sseOut and wsOut implement it. Calls come
// from the connection's writer only.
type output interface {
	// started acknowledges a subscription once its start is known.
	started(s *sub, recovered bool, firstSeq int64) error
	// gap reports events that passed retention before they could be sent.
	gap(s *sub, g gapInfo) error
	// event writes one event of the subscription.
	event(s *sub, oe *outEvent) error
	// frame writes a prepared control frame.
	frame(b []byte) error
	// failed reports that the subscription ended on an error; a non-nil
	// result ends the connection.
	failed(s *sub, err error) error
	// flush sends what was written.
	flush() error
}

// step writes what is queued, then one page of replay, and reports
// whether more work is waiting. An error ends the connection: a
// closeError with the reason to tell the client, a writeError, or (SSE)
// the error of a failed subscription.
func (c *conn) step(ctx context.Context, out output) (bool, error) {
	c.mu.Lock()
	batch := c.queue
	c.queue = nil
	closing := c.closing
	c.mu.Unlock()
	if closing != reasonNone {
		return false, closeError{closing}
	}
	for i := range batch {
		it := &batch[i]
		var err error
		switch it.kind {
		case itemFrame:
			err = out.frame(it.frame)
		case itemStart:
			err = c.startSub(ctx, out, it.sub)
		case itemEvent:
			err = c.sendEvent(out, it.sub, it.ev)
		case itemForget:
			err = c.forgetTopic(out, it.sub, it.topic)
		}
		if err != nil {
			return false, err
		}
		*it = item{}
	}
	if len(c.replaying) > 0 {
		if err := c.replayStep(ctx, out); err != nil {
			return false, err
		}
	}
	if err := out.flush(); err != nil {
		return false, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.queue == nil && cap(batch) > 0 && cap(batch) <= 64 {
		c.queue = batch[:0] // reuse a small buffer; a large one goes back to the heap
	}
	return len(c.queue) > 0 || len(c.replaying) > 0 || c.closing != reasonNone, nil
}

// sendEvent writes the event unless the subscription already sent it (or
// a later one of its topic): replay and live delivery may overlap.
func (c *conn) sendEvent(out output, s *sub, oe *outEvent) error {
	if s.gone.Load() {
		return nil
	}
	e := oe.ev
	if p, ok := s.pos.get(e.Topic); ok && e.Seq <= p {
		return nil
	}
	s.pos.set(e.Topic, e.Seq)
	if err := out.event(s, oe); err != nil {
		return err
	}
	c.hub.metrics.sent(c.transport).Inc()
	return nil
}

// startSub plans a new WebSocket subscription, acknowledges it, reports
// its gaps and queues its replay. A subscription the client unsubscribed
// before its turn came is planned and answered all the same: every
// subscribe gets its answer, before the answer to anything the client sent
// after it (the unsubscribe's is queued behind this item). Only its replay
// is skipped.
func (c *conn) startSub(ctx context.Context, out output, s *sub) error {
	cursors, gaps, err := c.hub.plan(ctx, s)
	if err != nil {
		return c.failSub(out, s, err)
	}
	recovered, firstSeq := true, int64(0)
	if len(gaps) > 0 {
		recovered = false
		if s.exact {
			firstSeq = gaps[0].FirstSeq
		}
	}
	if err := out.started(s, recovered, firstSeq); err != nil {
		return err
	}
	for _, g := range gaps {
		if err := out.gap(s, g); err != nil {
			return err
		}
	}
	if s.start.replays() && !s.gone.Load() {
		s.cursors = cursors
		c.replaying = append(c.replaying, s)
	}
	return nil
}

// forgetTopic handles the deletion of a topic: a subscription to it ends;
// a pattern forgets its position there, so the topic created again is
// streamed from its first event.
func (c *conn) forgetTopic(out output, s *sub, topic string) error {
	if s.gone.Load() {
		return nil
	}
	if s.exact {
		return c.failSub(out, s, &herald.Error{Code: herald.CodeNotFound, Field: "topic",
			Message: "topic " + quote(topic) + " was deleted"})
	}
	s.pos.remove(topic)
	return nil
}

// failSub ends a subscription that cannot go on and tells the client.
func (c *conn) failSub(out output, s *sub, err error) error {
	c.hub.removeSub(c, s.id, s, nil)
	c.replaying = removeSub(c.replaying, s)
	if herald.ErrorCode(err) == herald.CodeInternal && !errors.Is(err, context.Canceled) {
		c.hub.log.Warn("stream subscription failed", "topic", s.pattern, "transport", c.transport.String(), "err", err)
	}
	return out.failed(s, err)
}

func removeSub(l []*sub, s *sub) []*sub {
	for i, x := range l {
		if x == s {
			return append(l[:i], l[i+1:]...)
		}
	}
	return l
}

// replayStep reads and writes one page for the first replaying
// subscription, then moves it to the back, so replays share the
// connection with each other and with live events. A subscription whose
// topics are all read goes live, unless events arrived meanwhile: those
// topics are read again first.
func (c *conn) replayStep(ctx context.Context, out output) error {
	s := c.replaying[0]
	c.replaying = append(c.replaying[1:], s)
	if s.gone.Load() {
		c.replaying = removeSub(c.replaying, s)
		return nil
	}
	if len(s.cursors) == 0 {
		c.mu.Lock()
		missed := s.missed
		s.missed = nil
		if len(missed) == 0 {
			s.live = true
		}
		c.mu.Unlock()
		if len(missed) == 0 {
			c.replaying = removeSub(c.replaying, s)
			return nil
		}
		for topic, first := range missed {
			after, ok := s.pos.get(topic)
			if !ok {
				after = first - 1
			}
			s.cursors = append(s.cursors, cursor{topic: topic, after: after})
		}
	}
	cur := &s.cursors[0]
	page := c.hub.cfg.ReplayPage
	evs, err := c.hub.read(ctx, cur.topic, cur.after, page)
	if err != nil {
		return c.failSub(out, s, err)
	}
	if len(evs) > 0 && evs[0].Seq > cur.after+1 {
		// Pruned after the plan looked: report it, as the plan would have.
		g := gapInfo{Topic: cur.topic, MissedFrom: cur.after + 1, MissedTo: evs[0].Seq - 1, FirstSeq: evs[0].Seq}
		if err := out.gap(s, g); err != nil {
			return err
		}
	}
	for _, e := range evs {
		cur.after = e.Seq
		if s.filter != nil && !s.filter.MatchEvent(c.hub.ctx, e, c.hub.dec) {
			s.pos.set(e.Topic, e.Seq)
			continue
		}
		if err := c.sendEvent(out, s, newOutEvent(e)); err != nil {
			return err
		}
		c.hub.metrics.replayed.Inc()
	}
	if len(evs) < page {
		if p, ok := s.pos.get(cur.topic); !ok || p < cur.after {
			s.pos.set(cur.topic, cur.after)
		}
		s.cursors = s.cursors[1:]
	}
	return nil
}

// sub is one subscription of a connection: a topic or pattern, a filter,
// and where it started.
type sub struct {
	conn       *conn
	id         string // the client's reference (WebSocket); "" for SSE
	idJSON     string // id as a JSON string, for event frames
	pattern    string // a topic name or a pattern
	exact      bool   // pattern is a plain topic name
	filter     *filter.Filter
	rendered   bool // the json format: payloads the topic's schema reads come as JSON
	start      startSpec
	idx        int       // position in the hub's index; guarded by hub.mu
	registered time.Time // when it began receiving live events
	startAfter int64     // single topic: the seq it starts after, once planned
	gone       atomic.Bool

	// Guarded by conn.mu.
	live   bool             // queue its events; else note them as missed
	missed map[string]int64 // topic -> first seq fanned out while replaying

	// Owned by the connection's writer.
	pos     positions // newest seq sent (or passed over) per topic
	cursors []cursor  // topics still to replay
}

func newSub(c *conn, id, pattern string, f *filter.Filter, start startSpec) *sub {
	return &sub{conn: c, id: id, pattern: pattern, exact: !herald.IsPattern(pattern), filter: f, start: start}
}

// matches reports whether the subscription covers the topic: it is the
// subscription's topic, or its pattern matches it and the caller may read
// it. A wildcard reaches Herald's own topics ("herald.") only for callers
// whose scopes allow them (admin, or a scope naming them; see
// herald.Scope.Allows): "read:>" streams every topic but those.
func (s *sub) matches(topic string) bool {
	if !herald.MatchTopic(s.pattern, topic) {
		return false
	}
	return !herald.IsSystemTopic(topic) || mayStream(s.conn.scopes, topic)
}

// offer queues an event fanned out by the hub, or notes it as missed while
// the subscription replays. It never blocks. Called with hub.mu read-held.
func (s *sub) offer(oe *outEvent) {
	e := oe.ev
	if s.filter != nil && !s.filter.MatchEvent(s.conn.hub.ctx, e, s.conn.hub.dec) {
		return
	}
	c := s.conn
	c.mu.Lock()
	defer c.mu.Unlock()
	if s.live {
		c.enqueueLocked(item{kind: itemEvent, sub: s, ev: oe})
		return
	}
	if c.closing != reasonNone {
		return
	}
	if s.missed == nil {
		s.missed = make(map[string]int64, 1)
	}
	if _, seen := s.missed[e.Topic]; !seen {
		s.missed[e.Topic] = e.Seq
	}
}

// cursor is a topic still to replay, after a seq.
type cursor struct {
	topic string
	after int64
}

// gapInfo describes events that passed retention before a client could
// get them.
type gapInfo struct {
	Topic      string `json:"topic"`
	MissedFrom int64  `json:"missed_from"`
	MissedTo   int64  `json:"missed_to"`
	FirstSeq   int64  `json:"first_seq"`
}

// positions holds the newest seq per topic; one topic needs no map.
type positions struct {
	topic string
	seq   int64
	more  map[string]int64
}

func (p *positions) get(topic string) (int64, bool) {
	if p.topic == topic && topic != "" {
		return p.seq, true
	}
	seq, ok := p.more[topic]
	return seq, ok
}

func (p *positions) set(topic string, seq int64) {
	switch {
	case p.topic == "" || p.topic == topic:
		p.topic, p.seq = topic, seq
	default:
		if p.more == nil {
			p.more = make(map[string]int64)
		}
		p.more[topic] = seq
	}
}

func (p *positions) remove(topic string) {
	if p.topic != topic {
		delete(p.more, topic)
		return
	}
	p.topic, p.seq = "", 0
	for t, seq := range p.more { // promote any other
		p.topic, p.seq = t, seq
		delete(p.more, t)
		break
	}
}

// sorted returns every (topic, seq), in topic order.
func (p *positions) sorted() []cursor {
	if p.topic == "" {
		return nil
	}
	out := make([]cursor, 0, 1+len(p.more))
	out = append(out, cursor{p.topic, p.seq})
	for t, s := range p.more {
		out = append(out, cursor{t, s})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].topic < out[j].topic })
	return out
}

// plan works out where a subscription starts in each topic it covers:
// the cursors to replay and the retention gaps to report. Topics it has
// nothing to replay in are marked as covered, so live events it already
// has are not sent twice.
func (h *Hub) plan(ctx context.Context, s *sub) ([]cursor, []gapInfo, error) {
	var topics []herald.Topic
	switch {
	case s.exact:
		t, err := h.store.GetTopic(ctx, s.pattern)
		if err != nil {
			return nil, nil, err
		}
		topics = []herald.Topic{t}
	case !s.start.replays():
		return nil, nil, nil
	case s.start.kind == startLive:
		// Only the listed topics replay; look up just those.
		for name := range s.start.positions {
			if !s.matches(name) {
				continue
			}
			t, err := h.store.GetTopic(ctx, name)
			if herald.IsCode(err, herald.CodeNotFound) {
				continue
			}
			if err != nil {
				return nil, nil, err
			}
			topics = append(topics, t)
		}
	default:
		const pageSize = 1000
		after := ""
		for {
			page, err := h.store.ListTopics(ctx, after, pageSize)
			if err != nil {
				return nil, nil, err
			}
			for _, t := range page {
				if s.matches(t.Name) {
					topics = append(topics, t)
				}
			}
			if len(page) < pageSize {
				break
			}
			after = page[len(page)-1].Name
		}
	}
	var cursors []cursor
	var gaps []gapInfo
	for _, t := range topics {
		after, ok, err := s.start.after(ctx, h.store, t.Name)
		if err != nil {
			return nil, nil, err
		}
		if !ok {
			continue // live in this topic
		}
		if after > t.HeadSeq {
			// A seq this topic never reached: the position is from a topic
			// of the same name that was deleted. Start from the beginning.
			after = 0
		}
		switch {
		case t.FirstSeq == 0 && t.HeadSeq > after:
			gaps = append(gaps, gapInfo{Topic: t.Name, MissedFrom: after + 1, MissedTo: t.HeadSeq, FirstSeq: t.HeadSeq + 1})
			after = t.HeadSeq
		case t.FirstSeq > after+1:
			gaps = append(gaps, gapInfo{Topic: t.Name, MissedFrom: after + 1, MissedTo: t.FirstSeq - 1, FirstSeq: t.FirstSeq})
			after = t.FirstSeq - 1
		}
		if s.exact {
			s.startAfter = after
		}
		if after >= t.HeadSeq {
			s.pos.set(t.Name, after)
			continue
		}
		cursors = append(cursors, cursor{topic: t.Name, after: after})
	}
	return cursors, gaps, nil
}
