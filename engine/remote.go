package engine

import "github.com/heraldhq/herald"

// OnRemoteCommit tells the dispatcher that events of the topic up to
// headSeq were committed elsewhere (by another node): the cluster calls it
// for every notification and resync, so it may repeat a head already seen.
// It wakes the workers whose subscriptions match the topic, as OnCommit
// does for this node's commits. It never blocks. The tail cache has none of
// those events: in a Feed, it has dropped the topic before the dispatcher
// hears of the commit (Tail.Listener), so workers read the store.
func (d *Dispatcher) OnRemoteCommit(topic string, headSeq int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.newHead(topic, headSeq) {
		d.matching(topic, func(w *worker) { w.noteCommit(topic, headSeq) })
	}
}

// OnTopicDeleted tells the dispatcher that the topic was deleted (the
// cluster calls it for a deletion made on another node, and the server
// for its own), once the deletion has committed. It never blocks.
//
// In a Feed, the tail cache has dropped the topic before (Tail.Listener).
// Otherwise, once a topic of the same name is created again and its events
// are committed elsewhere, the cache, whose newest event of the old topic
// is newer than those, would keep answering reads with the old topic's
// events.
//
// Every worker whose subscription matches the topic drops its state of
// the topic and restarts: a worker keeps its position in each topic in
// memory, and the old topic's position (next seq 6, say) would make it
// skip the first events of a topic created again under the name. The
// worker lets its sends in flight finish and writes its progress in its
// other topics (a pattern subscription loses and repeats nothing there);
// its replacement starts once it has exited, under a new lease epoch,
// from the cursors the deletion left, so the topic created again is
// delivered from its first event. Whatever the old worker still settles
// of the topic, the store leaves out (DeleteTopic fenced the topic under
// its epoch). A worker that never hears of the deletion (its node missed
// the notification) is restarted by its next lease renewal, which the
// fence gives a new epoch; its unsettled progress is then repeated.
func (d *Dispatcher) OnTopicDeleted(topic string) {
	d.forgetHead(topic)
	d.mu.Lock()
	var stop []*worker
	d.matching(topic, func(w *worker) {
		stop = append(stop, w)
	})
	for _, w := range stop {
		w.topicDeleted(topic)
		d.removeWorker(w.id, w)
		d.stopping[w.id] = w
	}
	for _, w := range d.stopping {
		// Already stopping for another reason: its final settlement must
		// leave the topic out too.
		if herald.MatchTopic(w.topic, topic) {
			w.topicDeleted(topic)
		}
	}
	d.mu.Unlock()
	for _, w := range stop {
		w.stop()
	}
	if len(stop) > 0 {
		d.log.Info("topic deleted; restarting its subscriptions' dispatch", "topic", topic, "subscriptions", len(stop))
	}
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

// Listener is the dispatcher's part in a Feed, at StageConsumer: commits
// here and elsewhere wake matching workers, a deleted topic restarts them,
// and subscription or membership changes are acted on at once.
func (d *Dispatcher) Listener() Listener {
	return Listener{
		Committed:       d.OnCommit,
		RemoteCommitted: d.OnRemoteCommit,
		TopicDeleted:    d.OnTopicDeleted,
		SubscriptionChanged: func(id string) {
			if id == "" {
				d.Rebalance()
			} else {
				d.Changed(id)
			}
		},
	}
}

// Cold returns how many of the subscriptions this node dispatches are
// parked cold: caught up, with no goroutine, sink or live state, only
// their cursors (see worker.coolDown).
func (d *Dispatcher) Cold() int { return int(d.cold.Load()) }

// Dispatching returns how many subscriptions this node runs a worker for,
// each under a dispatch lease it holds.
func (d *Dispatcher) Dispatching() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.workers)
}
