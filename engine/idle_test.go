package engine_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/webhook"
)

// An idle subscription costs nothing: once its events are delivered and
// settled, its worker parks (no goroutine), holds no timer and never wakes
// up until something happens to it (issue 21). The dispatcher counts its workers' wake-ups;
// at rest the count stands still, whatever the number of subscriptions.
func TestIdleSubscriptionsDoNotWakeUp(t *testing.T) {
	t.Parallel()
	e := startEnv(t, dbPath(t))
	r := newReceiver(t, nil)
	const subs, topics = 100, 10
	for i := range topics {
		e.topic(fmt.Sprintf("idle.%d", i))
	}
	r.secret = webhook.NewSecret() // one for all: the receiver checks one
	for i := range subs {
		e.subscribe(herald.Subscription{ID: fmt.Sprintf("sub_idle_%03d", i), Topic: fmt.Sprintf("idle.%d", i%topics),
			Config: webhook.Config{URL: r.URL, Secret: r.secret}.Encode()})
	}
	for i := range topics {
		e.publish(fmt.Sprintf("idle.%d", i), 1, nil)
	}
	waitFor(t, "every subscription's event delivered", 20*time.Second, func() bool { _, n := r.count(); return n == subs })

	// At rest once the settlements are written: the count stops moving.
	last, since := e.dispatcher.Wakeups(), time.Now()
	waitFor(t, "the workers at rest", 20*time.Second, func() bool {
		if n := e.dispatcher.Wakeups(); n != last {
			last, since = n, time.Now()
			return false
		}
		return time.Since(since) >= 500*time.Millisecond
	})
	if n := e.dispatcher.Dispatching(); n != subs {
		t.Fatalf("%d subscriptions dispatched, want %d", n, subs)
	}
	// Caught up, each worker parked: no goroutine for an idle one.
	waitFor(t, "every worker parked", 10*time.Second, func() bool { return e.dispatcher.Running() == 0 })
	// A window of several poll intervals and settle intervals (50 ms and
	// 5 ms here): a worker with a timer of its own would wake in it.
	before := e.dispatcher.Wakeups()
	time.Sleep(time.Second)
	if woke := e.dispatcher.Wakeups() - before; woke != 0 {
		t.Fatalf("%d idle subscriptions woke up %d times in a second with nothing to do", subs, woke)
	}

	// And they are woken by what concerns them: one event, one topic.
	e.publish("idle.3", 1, nil)
	waitFor(t, "the new event delivered", 20*time.Second, func() bool { _, n := r.count(); return n == subs+subs/topics })
}
