package engine

import "github.com/heraldhq/herald"

// OnRemoteCommit tells the dispatcher that events of the topic up to
// headSeq were committed elsewhere (by another node): the cluster calls it
// for every notification and resync, so it may repeat a head already seen.
// It wakes the workers whose subscriptions match the topic, as OnCommit
// does for this node's commits. It never blocks.
//
// The tail cache has none of those events. When its newest event of the
// topic is older than headSeq, the topic is dropped from it first, so
// readers go to the store instead of being told "nothing newer" by a
// cache that only ever saw this node's share of the topic.
func (d *Dispatcher) OnRemoteCommit(topic string, headSeq int64) {
	if d.tail.Head(topic) < headSeq {
		d.tail.Forget(topic)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, w := range d.workers {
		if herald.MatchTopic(w.sub.Topic, topic) {
			w.noteCommit(topic, headSeq)
		}
	}
}

// OnTopicDeleted tells the dispatcher that the topic was deleted (the
// cluster calls it for a deletion made on another node, and the server
// for its own): the tail cache drops the topic. Otherwise, once a topic of
// the same name is created again and its events are committed elsewhere,
// the cache, whose newest event of the old topic is newer than those,
// would keep answering reads with the old topic's events. It never blocks.
func (d *Dispatcher) OnTopicDeleted(topic string) {
	d.tail.Forget(topic)
}

// Rebalance makes the dispatcher bring its workers in line with the
// subscriptions and DispatcherConfig.Owns now rather than at the next
// poll: the cluster calls it when the set of live nodes changed, and when
// another node created, changed or deleted a subscription (the API
// request that creates one reaches any node; the one that owns it starts
// its worker here, within milliseconds instead of up to PollInterval
// later, while events published meanwhile wait). Workers
// of subscriptions this node no longer owns stop and release their leases;
// subscriptions it now owns start once their previous owner's lease is
// released or expired. It never blocks.
func (d *Dispatcher) Rebalance() {
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// Dispatching returns how many subscriptions this node runs a worker for,
// each under a dispatch lease it holds.
func (d *Dispatcher) Dispatching() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.workers)
}
