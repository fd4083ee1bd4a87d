package engine_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/engine"
	"github.com/heraldhq/herald/store/postgres"
	"github.com/heraldhq/herald/webhook"
)

// An idle subscription costs nothing: once its events are delivered and
// settled, its worker parks (no goroutine), holds no timer, keeps only its
// cursors and never wakes up until something happens to it (issue 21). The dispatcher counts its workers' wake-ups;
// at rest the count stands still, whatever the number of subscriptions.
func TestIdleSubscriptionsDoNotWakeUp(t *testing.T) {
	t.Parallel()
	e := startEnv(t, dbPath(t), func(c *engine.DispatcherConfig) { c.ColdAfter = 50 * time.Millisecond })
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
	// And cold, soon: a parked webhook subscription keeps its cursors,
	// not its worker's state (sink, filter, subscription, context).
	waitFor(t, "every parked worker cold", 20*time.Second, func() bool { return e.dispatcher.Cold() == subs })
	// A window of several poll intervals and settle intervals (50 ms and
	// 5 ms here): a worker with a timer of its own would wake in it. In
	// it, a cluster resync announces every topic's head again (every 10 s
	// on PostgreSQL): heads the workers have delivered must wake none of
	// them, nor rebuild a cold one from the store.
	before := e.dispatcher.Wakeups()
	for i := range topics {
		e.dispatcher.OnRemoteCommit(fmt.Sprintf("idle.%d", i), 1)
	}
	time.Sleep(time.Second)
	if woke := e.dispatcher.Wakeups() - before; woke != 0 || e.dispatcher.Cold() != subs {
		t.Fatalf("%d idle subscriptions woke up %d times in a second with nothing to do but heads announced again; %d still cold",
			subs, woke, e.dispatcher.Cold())
	}

	// And they are woken by what concerns them: one event, one topic.
	e.publish("idle.3", 1, nil)
	waitFor(t, "the new event delivered", 20*time.Second, func() bool { _, n := r.count(); return n == subs+subs/topics })
}

// A subscription parked cold is the same subscription when it wakes: a
// change made while it was cold (a new URL, a pause) is what the next
// event meets, and a deletion ends it.
func TestColdSubscriptionWakesAsStored(t *testing.T) {
	t.Parallel()
	e := startEnv(t, dbPath(t), func(c *engine.DispatcherConfig) { c.ColdAfter = 20 * time.Millisecond })
	e.topic("cold")
	first, second := newReceiver(t, nil), newReceiver(t, nil)
	s := e.subscribe(herald.Subscription{Topic: "cold", Config: hookConfig(first.URL)})
	first.secret = secretOf(s)
	e.publish("cold", 1, nil)
	waitFor(t, "the first event delivered", 20*time.Second, func() bool { _, n := first.count(); return n == 1 })
	waitFor(t, "the worker cold", 20*time.Second, func() bool { return e.dispatcher.Cold() == 1 })

	// Woken from cold by a commit: delivered from its cursor, once.
	e.publish("cold", 2, nil)
	waitFor(t, "two more delivered", 20*time.Second, func() bool { _, n := first.count(); return n == 3 })
	waitFor(t, "the worker cold again", 20*time.Second, func() bool { return e.dispatcher.Cold() == 1 })

	// Changed while cold: the next events go to the new URL only.
	e.change(s.ID, func(s *herald.Subscription) {
		s.Config = webhook.Config{URL: second.URL, Secret: first.secret}.Encode()
		s.UpdatedAt = time.Now().UTC() // as the API does
	})
	second.secret = first.secret
	e.publish("cold", 1, nil)
	waitFor(t, "the event at the new URL", 20*time.Second, func() bool { _, n := second.count(); return n == 1 })
	if _, n := first.count(); n != 3 {
		t.Fatalf("the old URL got %d events, want 3", n)
	}

	// Deleted while cold: the worker ends and gives its lease back.
	waitFor(t, "the new worker cold", 20*time.Second, func() bool { return e.dispatcher.Cold() == 1 })
	if err := e.store.DeleteSubscription(context.Background(), s.ID); err != nil {
		t.Fatal(err)
	}
	e.dispatcher.Changed(s.ID)
	waitFor(t, "the worker gone", 20*time.Second, func() bool { return e.dispatcher.Dispatching() == 0 })
}

// A node starting with many subscriptions takes their leases and reads
// their cursors in bulk, and starts those with nothing to do parked cold:
// no goroutine, no store reads of their own (issue 21). Those whose topic
// moved on while no node ran them are woken and deliver what they missed,
// once; the cold ones deliver the next event.
func TestStartParksCaughtUpSubscriptionsCold(t *testing.T) {
	runOnBackends(t, testStartParksCaughtUpSubscriptionsCold)
}

func testStartParksCaughtUpSubscriptionsCold(t *testing.T) {
	path := dbPath(t)
	cool := func(c *engine.DispatcherConfig) { c.ColdAfter = 20 * time.Millisecond }
	e := startEnv(t, path, cool)
	e.topic("moved")
	e.topic("still")
	type sub struct {
		topic string
		r     *receiver
	}
	subs := []sub{{"moved", newReceiver(t, nil)}, {"still", newReceiver(t, nil)}, {"moved", newReceiver(t, nil)}}
	for _, s := range subs {
		stored := e.subscribe(herald.Subscription{Topic: s.topic, Config: hookConfig(s.r.URL)})
		s.r.secret = secretOf(stored)
	}
	e.publish("moved", 2, nil)
	e.publish("still", 2, nil)
	delivered := func(want ...int) func() bool {
		return func() bool {
			for i, s := range subs {
				if _, n := s.r.count(); n != want[i] {
					return false
				}
			}
			return true
		}
	}
	waitFor(t, "two events to each", 20*time.Second, delivered(2, 2, 2))
	e.stop()

	// One more event in "moved" while no dispatcher runs.
	ctx := context.Background()
	var st engine.DispatchStore
	var err error
	if strings.HasPrefix(path, "postgres") {
		st, err = postgres.Open(ctx, path, postgres.Options{})
	} else {
		st, err = openSQLite(ctx, path)
	}
	if err != nil {
		t.Fatal(err)
	}
	c := engine.NewCommitter(st, engine.CommitterConfig{}, nil, nil)
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	if _, err := c.Append(ctx, []*herald.Event{{ID: herald.NewID(now), Topic: "moved", Type: "test.event",
		ContentType: "application/json", Payload: []byte(`{"i":2}`), Time: now}}); err != nil {
		t.Fatal(err)
	}
	_ = c.Stop(ctx)
	_ = st.Close()

	e = startEnv(t, path, cool)
	waitFor(t, "the missed event delivered to both subscriptions of its topic", 20*time.Second, delivered(3, 2, 3))
	waitFor(t, "every subscription cold", 20*time.Second, func() bool { return e.dispatcher.Cold() == len(subs) })
	e.publish("still", 1, nil)
	waitFor(t, "the next event delivered to the cold one", 20*time.Second, delivered(3, 3, 3))
	for i, s := range subs {
		if distinct, total := s.r.count(); distinct != total {
			t.Fatalf("subscription %d: %d deliveries of %d events: some twice", i, total, distinct)
		}
	}
}
