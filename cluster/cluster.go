// Package cluster lets several Herald nodes share one database with no
// other coordinator. Each node registers in a membership table and
// heartbeats; every node reads the same set of live nodes and assigns each
// subscription to one of them by rendezvous hashing (Owns), which the
// dispatcher backs with a lease and a fencing epoch in the store. Nodes wake
// each other after commits: the store sends one notification per committed
// batch, and the cluster hands the topics' new heads to registered
// callbacks (the dispatcher, the stream hub); deleted topics and changed
// subscriptions are announced the same way.
//
// The store provides both halves as optional capabilities found by type
// assertion (Store and Bus): PostgreSQL has them, SQLite (one node) does
// not, and then there is no cluster at all. docs/cluster.md is the
// operator's side of this package.
package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/heraldhq/herald/lifecycle"
)

// Timing defaults. A node that dies stops heartbeating; the others drop it
// from their view NodeTTL after its last heartbeat (seen at their next
// heartbeat) and take its subscriptions as soon as its leases expire, which
// LeaseTTL after their last renewal. With the dispatcher renewing every
// second, a dead node's subscriptions move within about
// max(NodeTTL+HeartbeatInterval, LeaseTTL+1s): 6 seconds.
const (
	DefaultHeartbeatInterval = time.Second
	DefaultNodeTTL           = 5 * time.Second
	// LeaseTTL is the dispatch lease to use with the defaults above
	// (engine.DispatcherConfig.LeaseTTL). Its default of 10s would make
	// failover take 11s.
	LeaseTTL = 5 * time.Second
	// DefaultResyncInterval is how often every topic's head is announced
	// again from the store, a safety net for a wake-up lost in between.
	DefaultResyncInterval = 10 * time.Second
)

// Member is a node as the membership table shows it.
type Member struct {
	ID          string    // unique among running processes; a restarted node may keep its own
	Addr        string    // the address its API listens on, for people
	StartedAt   time.Time // when the process joined
	HeartbeatAt time.Time // its last heartbeat
}

// Store is the membership capability of a herald.Store: a table of nodes
// and their heartbeats. Methods are safe for concurrent use; errors carry
// herald codes (CodeInvalid for a bad id or time, CodeUnavailable when the
// database cannot be reached).
type Store interface {
	// Heartbeat records that the node is alive at now, inserting it on
	// its first call (with its StartedAt and Addr) and updating Addr and
	// the heartbeat time after. It also removes nodes that have not
	// heartbeated for a day, so restarts do not pile up rows.
	Heartbeat(ctx context.Context, m Member, now time.Time) error
	// LiveNodes returns the nodes whose last heartbeat is after now-ttl,
	// in id order.
	LiveNodes(ctx context.Context, now time.Time, ttl time.Duration) ([]Member, error)
	// Leave removes the node, so the others rebalance at once instead of
	// waiting for its heartbeat to age. Removing an absent node is no
	// error.
	Leave(ctx context.Context, id string) error
}

// Head is the newest committed seq of a topic.
type Head struct {
	Topic string
	Seq   int64
}

// Commit is a notification of one committed batch.
type Commit struct {
	Node  string    // the node that committed it ("" if unknown)
	Time  time.Time // when it was committed, by that node's clock
	Heads []Head    // each topic the batch stored events in, with its new head
	// Resync means the batch touched too many topics to list: every
	// topic's head must be read from the store.
	Resync bool
	// Subscriptions means the transaction created, changed or deleted a
	// subscription: the node that dispatches it must look at it now.
	Subscriptions bool
	// SubscriptionIDs names the subscriptions changed, when the
	// notification could carry them: only those need looking at. Empty
	// with Subscriptions set means any may have changed.
	SubscriptionIDs []string
	// DeletedTopics lists the topics the transaction deleted: every node
	// must drop what it keeps in memory about them.
	DeletedTopics []string
}

// Bus is the commit notification capability of a herald.Store. The store
// notifies after every Append that stores events, every change of a
// subscription and every deletion of a topic, only once the transaction
// has committed, and only after EnableNotify.
type Bus interface {
	// EnableNotify makes every later Append that stores events, every
	// later creation, change or deletion of a subscription, and every
	// later deletion of a topic send one Commit, tagged with node, to
	// every listener on the same installation (database and schema).
	EnableNotify(ctx context.Context, node string) error
	// Listen opens a dedicated connection, starts listening, calls
	// listening (a failure ends Listen with that error), then calls
	// deliver for every Commit, own ones included, until ctx ends
	// (ctx.Err()) or the connection fails or deliver fails (that error).
	// One node's Commits come in commit order; a Commit of another node
	// made just after may come first, so a head can arrive after a newer
	// one of the same topic. Commits sent while no Listen was active are
	// not delivered: callers catch up in listening.
	Listen(ctx context.Context, listening func(context.Context) error, deliver func(Commit) error) error
	// TopicHeads returns every topic's head seq.
	TopicHeads(ctx context.Context) ([]Head, error)
}

// Config tunes a Cluster. Zero values mean the defaults.
type Config struct {
	// NodeID names this node in the membership table and in dispatch
	// leases; no two running processes may share one. A node restarted
	// under its previous id takes back its leases at once (see
	// engine.DispatcherConfig.NodeID). Default: NewNodeID().
	NodeID string
	// Addr is the API address recorded for people; it plays no part in
	// coordination.
	Addr string
	// HeartbeatInterval is how often the node heartbeats and re-reads the
	// live nodes. Default DefaultHeartbeatInterval.
	HeartbeatInterval time.Duration
	// NodeTTL is how long after its last heartbeat a node counts as live.
	// Default DefaultNodeTTL; at least twice HeartbeatInterval.
	NodeTTL time.Duration
	// ResyncInterval is how often every topic's head is announced from
	// the store. Default DefaultResyncInterval.
	ResyncInterval time.Duration
	// Leases reports how many dispatch leases this node holds, for the
	// herald_cluster_leases_held gauge; nil leaves the gauge out.
	Leases func() int
	// Now is the clock; nil means time.Now. Heartbeats compare times
	// written by different nodes, so node clocks must agree (NTP) to well
	// under NodeTTL, as dispatch leases already require.
	Now func() time.Time
}

// NewNodeID returns a node id: the host name, the process id and a random
// suffix, unique per process start.
func NewNodeID() string {
	host, _ := os.Hostname()
	if host == "" {
		host = "node"
	}
	return fmt.Sprintf("%s-%d-%06x", host, os.Getpid(), rand.IntN(1<<24))
}

// Cluster is this node's membership in a cluster: it heartbeats, keeps the
// view of live nodes that Owns reads, and listens for other nodes' commits.
// New starts nothing; Start joins and Stop leaves. Safe for concurrent use.
type Cluster struct {
	store   Store
	bus     Bus
	cfg     Config
	log     *slog.Logger
	metrics *metrics
	started time.Time

	mu      sync.RWMutex
	members []Member
	ids     []string // ids of members, in id order: what Owns hashes over

	hookMu      sync.Mutex
	commitHooks []func(topic string, headSeq int64)
	changeHooks []func()
	subHooks    []func(id string)
	deleteHooks []func(topic string)

	// A resync reads heads that may predate a deletion delivered while it
	// reads: delMu orders the two, and deletedAt (kept only while a resync
	// runs) tells a resync which of its heads belong to deleted topics.
	delMu     sync.Mutex
	delGen    uint64
	resyncing int
	deletedAt map[string]uint64 // topic -> delGen of its deletion

	life lifecycle.Runner // heartbeats, the commit listener, resyncs
}

// New returns a cluster member over the store's two capabilities (usually
// the same *postgres.Store). It starts nothing. reg may be nil.
func New(store Store, bus Bus, cfg Config, logger *slog.Logger, reg prometheus.Registerer) *Cluster {
	if cfg.NodeID == "" {
		cfg.NodeID = NewNodeID()
	}
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if cfg.NodeTTL <= 0 {
		cfg.NodeTTL = DefaultNodeTTL
	}
	cfg.NodeTTL = max(cfg.NodeTTL, 2*cfg.HeartbeatInterval)
	if cfg.ResyncInterval <= 0 {
		cfg.ResyncInterval = DefaultResyncInterval
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Cluster{store: store, bus: bus, cfg: cfg, log: logger, metrics: newMetrics(reg, cfg.Leases)}
}

// NodeID is this node's id.
func (c *Cluster) NodeID() string { return c.cfg.NodeID }

// OnRemoteCommit registers f to be called with each topic and its new head
// seq when another node commits events, and for every topic after a
// resync (a reconnect of the listener, a batch too large to list, and every
// ResyncInterval), so f may see a head it has seen before, or an older one
// after a newer (see Bus.Listen): heads only grow, so take the largest. f
// runs on the cluster's goroutines and must not block. Register before
// Start.
func (c *Cluster) OnRemoteCommit(f func(topic string, headSeq int64)) {
	c.hookMu.Lock()
	defer c.hookMu.Unlock()
	c.commitHooks = append(c.commitHooks, f)
}

// OnMembershipChange registers f to be called when the subscriptions this
// node should dispatch may have changed: after the set of live nodes
// changed (so Owns may answer differently), and after another node
// created, changed or deleted a subscription (which this node may own: a
// new subscription would otherwise wait for the dispatcher's next poll).
// f must not block. Register before Start.
func (c *Cluster) OnMembershipChange(f func()) {
	c.hookMu.Lock()
	defer c.hookMu.Unlock()
	c.changeHooks = append(c.changeHooks, f)
}

// OnTopicDeleted registers f to be called with the name of each topic
// another node deleted, once the deletion has committed, so this node
// drops what it keeps about the topic (its streams of it, cached events
// and settings) and a topic created again under the name starts clean
// here too. The node that deleted the topic is not called: it does that
// itself. A deletion whose notification was lost (the listener's
// connection failed in between) is not repeated by resyncs. f must not
// block. Register before Start.
func (c *Cluster) OnTopicDeleted(f func(topic string)) {
	c.hookMu.Lock()
	defer c.hookMu.Unlock()
	c.deleteHooks = append(c.deleteHooks, f)
}

// Owns reports whether this node should dispatch the subscription (or own
// any other key): whether it is the key's rendezvous owner among the live
// nodes of its latest view. Nodes agree once their views do, within a
// heartbeat; a lease in the store covers the moments they do not. Before
// Start has succeeded it is false.
func (c *Cluster) Owns(id string) bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return Owner(c.ids, id) == c.cfg.NodeID
}

// Members returns the live nodes of the latest view, in id order.
func (c *Cluster) Members() []Member {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return slices.Clone(c.members)
}

// Start enables commit notifications, heartbeats once and reads the live
// nodes (failing if the store cannot be reached), then keeps heartbeating,
// listening and resyncing in the background until Stop.
func (c *Cluster) Start(ctx context.Context) error {
	if err := c.life.CanStart("cluster"); err != nil {
		return err
	}
	if err := c.bus.EnableNotify(ctx, c.cfg.NodeID); err != nil {
		return fmt.Errorf("enable commit notifications: %w", err)
	}
	c.started = c.cfg.Now().UTC()
	if err := c.beat(ctx); err != nil {
		return fmt.Errorf("join the cluster: %w", err)
	}
	if err := c.life.Start(ctx, "cluster", c.heartbeats, c.listen, c.resyncs); err != nil {
		return err
	}
	c.log.Info("cluster joined", "node_id", c.cfg.NodeID, "nodes", len(c.Members()))
	return nil
}

// Stop ends heartbeating and listening, then removes this node from the
// membership table so the others take over its subscriptions without
// waiting for NodeTTL (they still wait for its leases, which its
// dispatcher releases as it stops). Idempotent and safe before Start.
func (c *Cluster) Stop(ctx context.Context) error {
	stopped, err := c.life.Stop(ctx)
	if err != nil || !stopped {
		return err
	}
	lctx, lcancel := context.WithTimeout(ctx, 5*time.Second)
	defer lcancel()
	if err := c.store.Leave(lctx, c.cfg.NodeID); err != nil {
		return fmt.Errorf("leave the cluster: %w", err)
	}
	c.log.Info("cluster left", "node_id", c.cfg.NodeID)
	return nil
}

// beat heartbeats and refreshes the view of live nodes.
func (c *Cluster) beat(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.NodeTTL)
	defer cancel()
	now := c.cfg.Now()
	self := Member{ID: c.cfg.NodeID, Addr: c.cfg.Addr, StartedAt: c.started, HeartbeatAt: now}
	if err := c.store.Heartbeat(ctx, self, now); err != nil {
		return fmt.Errorf("heartbeat: %w", err)
	}
	live, err := c.store.LiveNodes(ctx, now, c.cfg.NodeTTL)
	if err != nil {
		return fmt.Errorf("read live nodes: %w", err)
	}
	c.setMembers(live)
	return nil
}

func (c *Cluster) setMembers(live []Member) {
	ids := make([]string, len(live))
	for i, m := range live {
		ids[i] = m.ID
	}
	slices.Sort(ids)
	c.mu.Lock()
	changed := !slices.Equal(ids, c.ids)
	first := c.ids == nil
	c.members, c.ids = live, ids
	c.mu.Unlock()
	c.metrics.nodes.Set(float64(len(ids)))
	if !changed {
		return
	}
	if !first {
		c.metrics.rebalances.Inc()
		c.log.Info("cluster membership changed", "nodes", len(ids), "node_ids", strings.Join(ids, ","))
	}
	c.changed()
}

// changed calls the OnMembershipChange hooks.
// OnSubscriptionChanged registers f to be called with the id of each
// subscription another node created, changed or deleted, when its
// notification named them; a change that did not name them calls the
// OnMembershipChange hooks instead. A change costs the other nodes work
// for that subscription, not for all. f must not block. Register before
// Start.
func (c *Cluster) OnSubscriptionChanged(f func(id string)) {
	c.hookMu.Lock()
	defer c.hookMu.Unlock()
	c.subHooks = append(c.subHooks, f)
}

func (c *Cluster) hasSubHooks() bool {
	c.hookMu.Lock()
	defer c.hookMu.Unlock()
	return len(c.subHooks) > 0
}

func (c *Cluster) subsChanged(ids []string) {
	c.hookMu.Lock()
	hooks := slices.Clone(c.subHooks)
	c.hookMu.Unlock()
	for _, f := range hooks {
		for _, id := range ids {
			f(id)
		}
	}
}

func (c *Cluster) changed() {
	c.hookMu.Lock()
	hooks := slices.Clone(c.changeHooks)
	c.hookMu.Unlock()
	for _, f := range hooks {
		f()
	}
}

// deleted calls the OnTopicDeleted hooks for each topic.
func (c *Cluster) deleted(topics []string) {
	c.hookMu.Lock()
	hooks := slices.Clone(c.deleteHooks)
	c.hookMu.Unlock()
	c.delMu.Lock()
	defer c.delMu.Unlock()
	for _, topic := range topics {
		c.delGen++
		if c.resyncing > 0 {
			if c.deletedAt == nil {
				c.deletedAt = make(map[string]uint64)
			}
			c.deletedAt[topic] = c.delGen
		}
		for _, f := range hooks {
			f(topic)
		}
	}
}

func (c *Cluster) heartbeats(ctx context.Context) {
	t := time.NewTicker(c.cfg.HeartbeatInterval)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := c.beat(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			c.metrics.heartbeatErrors.Inc()
			if !failing {
				// Keep the last view: the leases decide who may write.
				c.log.Warn("cluster heartbeat failing; other nodes will take this node's subscriptions if it lasts", "err", err, "node_ttl", c.cfg.NodeTTL)
			}
			failing = true
		case failing:
			c.log.Info("cluster heartbeat recovered")
			failing = false
		}
	}
}

// Listener reconnect backoff.
const (
	minReconnectDelay = 100 * time.Millisecond
	maxReconnectDelay = 5 * time.Second
)

// listen keeps a commit listener running, reconnecting with backoff. Each
// new connection starts with a resync: commits made while it was down were
// not delivered to anyone. A reconnection also calls the
// OnMembershipChange hooks: subscriptions changed meanwhile were not
// announced either, and the dispatcher then reads them all rather than
// wait for its periodic sync.
func (c *Cluster) listen(ctx context.Context) {
	delay := minReconnectDelay
	listening := c.resync
	for {
		began := time.Now()
		err := c.bus.Listen(ctx, listening, c.deliver(ctx))
		listening = func(ctx context.Context) error {
			c.changed()
			return c.resync(ctx)
		}
		if ctx.Err() != nil {
			return
		}
		if time.Since(began) > maxReconnectDelay {
			delay = minReconnectDelay // it was up for a while: a new failure
		}
		c.metrics.reconnects.Inc()
		c.log.Warn("commit listener disconnected; reconnecting", "err", err, "retry_in", delay)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		delay = min(2*delay, maxReconnectDelay)
	}
}

func (c *Cluster) deliver(ctx context.Context) func(Commit) error {
	return func(cm Commit) error {
		if cm.Node == c.cfg.NodeID {
			return nil // this node's committer already woke its own readers
		}
		if !cm.Time.IsZero() {
			c.metrics.lag.Observe(max(c.cfg.Now().Sub(cm.Time), 0).Seconds())
		}
		switch {
		case cm.Subscriptions && len(cm.SubscriptionIDs) > 0 && c.hasSubHooks():
			c.subsChanged(cm.SubscriptionIDs)
		case cm.Subscriptions:
			c.changed()
		}
		if len(cm.DeletedTopics) > 0 {
			c.deleted(cm.DeletedTopics)
		}
		if cm.Resync {
			return c.resync(ctx)
		}
		c.announce(cm.Heads)
		return nil
	}
}

func (c *Cluster) resyncs(ctx context.Context) {
	t := time.NewTicker(c.cfg.ResyncInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := c.resync(ctx); err != nil && ctx.Err() == nil {
			c.log.Warn("cluster resync failed", "err", err)
		}
	}
}

// resync announces every topic's head from the store, except those of
// topics whose deletion was delivered while it read them: such a head may
// be the deleted topic's, and a topic created again under the name would
// then look further along than it is to the callbacks.
func (c *Cluster) resync(ctx context.Context) error {
	c.delMu.Lock()
	gen := c.delGen
	c.resyncing++
	c.delMu.Unlock()
	heads, err := c.bus.TopicHeads(ctx)
	c.delMu.Lock()
	defer c.delMu.Unlock()
	if err == nil && len(c.deletedAt) > 0 {
		heads = slices.DeleteFunc(heads, func(h Head) bool { return c.deletedAt[h.Topic] > gen })
	}
	if c.resyncing--; c.resyncing == 0 {
		c.deletedAt = nil
	}
	if err != nil {
		return fmt.Errorf("resync topic heads: %w", err)
	}
	c.metrics.resyncs.Inc()
	c.announce(heads) // under delMu: no deletion comes between the check and the hooks
	return nil
}

func (c *Cluster) announce(heads []Head) {
	c.hookMu.Lock()
	hooks := slices.Clone(c.commitHooks)
	c.hookMu.Unlock()
	for _, h := range heads {
		for _, f := range hooks {
			f(h.Topic, h.Seq)
		}
	}
}

type metrics struct {
	nodes           prometheus.Gauge
	rebalances      prometheus.Counter
	lag             prometheus.Histogram
	resyncs         prometheus.Counter
	reconnects      prometheus.Counter
	heartbeatErrors prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, leases func() int) *metrics {
	m := &metrics{
		nodes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "herald_cluster_nodes", Help: "Live nodes in this node's view of the cluster.",
		}),
		rebalances: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_cluster_rebalances_total", Help: "Changes of the set of live nodes seen by this node; each moves subscriptions between nodes.",
		}),
		lag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "herald_cluster_notify_lag_seconds", Help: "Time from another node's commit to its notification reaching this node (includes clock skew).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		resyncs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_cluster_resyncs_total", Help: "Times every topic's head was read from the store (listener reconnects, oversized batches, periodic).",
		}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_cluster_listener_reconnects_total", Help: "Times the commit listener lost its connection and reconnected.",
		}),
		heartbeatErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_cluster_heartbeat_errors_total", Help: "Heartbeats that failed.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.nodes, m.rebalances, m.lag, m.resyncs, m.reconnects, m.heartbeatErrors)
		if leases != nil {
			reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "herald_cluster_leases_held", Help: "Subscription dispatch leases this node holds.",
			}, func() float64 { return float64(leases()) }))
		}
	}
	return m
}
