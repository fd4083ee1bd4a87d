package engine

import (
	"sync"

	"github.com/heraldhq/herald"
)

// Stage orders a Feed's listeners: every listener of an earlier stage has
// heard a notice before any listener of a later stage hears it.
type Stage int

// The stages.
const (
	// StageCache is for what other listeners read: the tail cache and the
	// topic cache. A consumer woken by a commit finds the events in the
	// tail; a consumer told of a deletion no longer finds the topic cached.
	StageCache Stage = iota
	// StageConsumer is for what acts on notices: the dispatcher, the
	// stream hub, rules. Consumers must not rely on each other's order.
	StageConsumer
	numStages
)

// Listener is what a component wants to hear from a Feed; a nil func is a
// notice it ignores. Every func must return quickly and never block: hand
// the notice to a bounded queue or wake a waiter. Funcs are called from the
// goroutine that reported the notice (the committer, the cluster's
// listener, an API request), so a listener that keeps state guards it.
type Listener struct {
	// Committed: these events were committed on this node, in commit
	// order (seq order per topic), after the commit is durable.
	Committed func(events []*herald.Event)
	// RemoteCommitted: another node committed events of the topic up to
	// head. Notices may repeat a head, or come after a newer one: heads
	// only grow, so take the largest.
	RemoteCommitted func(topic string, head int64)
	// TopicDeleted: the topic was deleted (here or on another node) and
	// the deletion has committed.
	TopicDeleted func(topic string)
	// KeyRevoked: the API key was deleted or has expired, here or on
	// another node; whatever it opened must end.
	KeyRevoked func(keyID string)
	// SubscriptionChanged: the subscription was created, changed or
	// deleted (through this node's API), or, with id "", subscriptions
	// may have changed on another node or the set of live nodes changed:
	// re-read what this node should dispatch.
	SubscriptionChanged func(id string)
	// TenantChanged: the tenant was created, changed or deleted through
	// this node's API (its limits may differ).
	TenantChanged func(id string)
}

// Feed is the one owner of the notices that cross components: commits,
// local and remote; topic deletions; key revocations; subscription and
// membership changes. Sources of notices (the committer, the cluster, the
// API) report to it; components listen to it. Nothing calls one component
// from another's callback, and the order in which listeners hear a notice
// is the documented order of stages, not the order of registration.
//
// Register listeners before the sources start reporting; Listen after
// that is safe but may miss notices, and a listener must not call Listen.
// A Feed is safe for concurrent use.
type Feed struct {
	mu        sync.RWMutex
	listeners [numStages][]Listener
}

// NewFeed returns a feed with no listeners.
func NewFeed() *Feed { return &Feed{} }

// Listen adds l to the stage.
func (f *Feed) Listen(stage Stage, l Listener) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.listeners[stage] = append(f.listeners[stage], l)
}

// each calls fn with every listener, stage by stage.
func (f *Feed) each(fn func(*Listener)) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	for s := range f.listeners {
		for i := range f.listeners[s] {
			fn(&f.listeners[s][i])
		}
	}
}

// Committed reports events committed on this node. The committer calls
// it after each durable commit; it is a Committer hook.
func (f *Feed) Committed(events []*herald.Event) {
	f.each(func(l *Listener) {
		if l.Committed != nil {
			l.Committed(events)
		}
	})
}

// RemoteCommitted reports that another node committed events of the topic
// up to head.
func (f *Feed) RemoteCommitted(topic string, head int64) {
	f.each(func(l *Listener) {
		if l.RemoteCommitted != nil {
			l.RemoteCommitted(topic, head)
		}
	})
}

// TopicDeleted reports a committed deletion of the topic.
func (f *Feed) TopicDeleted(topic string) {
	f.each(func(l *Listener) {
		if l.TopicDeleted != nil {
			l.TopicDeleted(topic)
		}
	})
}

// KeyRevoked reports that the key was deleted or expired.
func (f *Feed) KeyRevoked(keyID string) {
	f.each(func(l *Listener) {
		if l.KeyRevoked != nil {
			l.KeyRevoked(keyID)
		}
	})
}

// SubscriptionChanged reports a change of the subscription, or with id ""
// that the subscriptions this node should dispatch may have changed.
func (f *Feed) SubscriptionChanged(id string) {
	f.each(func(l *Listener) {
		if l.SubscriptionChanged != nil {
			l.SubscriptionChanged(id)
		}
	})
}

// TenantChanged reports a change of the tenant.
func (f *Feed) TenantChanged(id string) {
	f.each(func(l *Listener) {
		if l.TenantChanged != nil {
			l.TenantChanged(id)
		}
	})
}

// SubscriptionsChanged is SubscriptionChanged(""): the cluster's hook for
// membership and remote subscription changes.
func (f *Feed) SubscriptionsChanged() { f.SubscriptionChanged("") }
