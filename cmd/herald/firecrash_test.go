package main

import (
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/client"
)

// TestCrashAroundFireTime kills the real binary with SIGKILL while delayed
// events are coming due and a schedule is ticking, restarts it, and does
// it again (HERALD_FIRE_KILLS times, default 3). At the end every delayed
// event acknowledged is in its topic's log exactly once, with its id (the
// topic has no dedup window to hide a repeated promotion), and
// reached the webhook subscriber (redeliveries after a kill are allowed:
// at least once, deduplicated by webhook-id); every tick of the schedule,
// the downtimes' included (missed "all"), is in the log once, in order,
// and was delivered; nothing is left pending.
func TestCrashAroundFireTime(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes; skipped with -short")
	}
	t.Parallel()
	kills := 3
	if v := os.Getenv("HERALD_FIRE_KILLS"); v != "" {
		kills, _ = strconv.Atoi(v)
	}
	const (
		delayed = "fire.delayed"
		ticks   = "fire.ticks"
		perKill = 400 // delayed events due around each kill
	)
	dir := t.TempDir()
	args := []string{"--data-dir", dir, "--admin-key", testAdminKey}
	ep := newEndpoint(t)
	ctx := t.Context()
	acked := map[string]time.Time{} // delayed event id -> due time

	for round := 0; ; round++ {
		p := startProc(t, args...)
		c := client.New(p.url, client.WithKey(testAdminKey))
		if round == 0 {
			var secrets []string
			for _, topic := range []string{delayed, ticks} {
				settings := client.TopicSettings{}
				if topic == delayed {
					// No dedup by id: a promotion repeated after a kill
					// would show in the log as a second copy.
					settings.DedupWindow = new(time.Duration(0))
				}
				if _, _, err := c.PutTopic(ctx, topic, settings); err != nil {
					t.Fatal(err)
				}
				sub, err := c.CreateSubscription(ctx, client.SubscriptionSpec{
					Topic: topic, URL: ep.srv.URL, Verification: herald.VerifyNone,
					Retry: herald.RetryPolicy{MaxAttempts: 100, Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond},
				})
				if err != nil {
					t.Fatal(err)
				}
				secrets = append(secrets, sub.Secret)
			}
			ep.mu.Lock()
			ep.secrets = secrets
			ep.mu.Unlock()
			if _, _, err := c.PutSchedule(ctx, "beat", client.Schedule{Every: "1s", Missed: herald.MissedAll,
				Event: client.ScheduleEvent{Topic: ticks, Data: []byte(`{"beat":true}`)}}); err != nil {
				t.Fatal(err)
			}
		}
		if round == kills {
			checkFired(t, c, ep, acked)
			return
		}
		// Events due over the next second, from 1.5 s on, so the kill
		// below lands while they are being promoted.
		first := time.Now().Add(1500 * time.Millisecond)
		for b := 0; b < perKill; b += 100 {
			events := make([]client.BatchEvent, 100)
			for i := range events {
				n := round*perKill + b + i
				events[i] = client.BatchEvent{ContentType: "text/plain", Payload: []byte(strconv.Itoa(n)),
					DeliverAt: first.Add(time.Duration(b+i) * time.Second / perKill)}
			}
			res, err := c.PublishBatch(ctx, delayed, events)
			if err != nil {
				t.Fatalf("round %d: publish delayed: %v", round, err)
			}
			for i, r := range res {
				acked[r.ID] = events[i].DeliverAt
			}
		}
		// Kill at a random moment from just before the first due time to
		// just after the last.
		at := first.Add(time.Duration(rand.IntN(1300)-150) * time.Millisecond)
		waitCond(t, "the moment to kill", 10*time.Second, func() bool { return !time.Now().Before(at) })
		p.kill()
		t.Logf("round %d: killed %s after the first due time", round, time.Since(first).Round(time.Millisecond))
	}
}

// checkFired waits for every delayed event and every tick to be in the
// log and at the endpoint, and checks each is in the log once.
func checkFired(t *testing.T, c *client.Client, ep *endpoint, acked map[string]time.Time) {
	t.Helper()
	ctx := t.Context()
	readLog := func(topic string) []client.Event {
		var all []client.Event
		for after := int64(0); ; {
			page, err := c.ListEvents(ctx, topic, after, 1000)
			if err != nil {
				t.Fatalf("list %s: %v", topic, err)
			}
			all = append(all, page.Events...)
			if len(page.Events) == 0 {
				return all
			}
			after = page.NextAfterSeq
		}
	}
	waitCond(t, "every delayed event in the log", 60*time.Second, func() bool {
		tp, err := c.GetTopic(ctx, "fire.delayed")
		return err == nil && tp.HeadSeq >= int64(len(acked))
	})
	logged := readLog("fire.delayed")
	seen := map[string]int64{}
	for _, e := range logged {
		if prev, dup := seen[e.ID]; dup {
			t.Fatalf("delayed event %s is in the log twice, at seqs %d and %d", e.ID, prev, e.Seq)
		}
		seen[e.ID] = e.Seq
		due, ok := acked[e.ID]
		if !ok {
			t.Fatalf("event %s in the log was never acknowledged", e.ID)
		}
		if e.Time.Before(due.Truncate(time.Millisecond)) {
			t.Errorf("event %s joined the log at %s, before its due time %s", e.ID, e.Time, due)
		}
	}
	if len(seen) != len(acked) {
		t.Fatalf("%d of %d acknowledged delayed events are in the log", len(seen), len(acked))
	}
	if page, err := c.ListScheduled(ctx, "fire.delayed", "", 10); err != nil || len(page.Events) != 0 {
		t.Fatalf("pending after promotion: %+v, %v; want none", page, err)
	}
	// The schedule: ticks through the downtimes, each once, one a second,
	// up to one after this restart.
	up := time.Now().UTC().Format(time.RFC3339)
	waitCond(t, "a tick after the last restart", 20*time.Second, func() bool {
		ticks := ticksOf(t, c, "fire.ticks")
		return len(ticks) > 0 && ticks[len(ticks)-1] > up
	})
	tickLog := readLog("fire.ticks")
	var tickTimes []string
	for _, e := range tickLog {
		tickTimes = append(tickTimes, e.Headers["Herald-Tick"])
	}
	contiguous(t, tickTimes, time.Second)
	if len(tickLog) < 3 {
		t.Fatalf("ticks %v: want the schedule to have fired through the run", tickTimes)
	}
	want := append(logged, tickLog...)
	waitCond(t, "every event at the subscriber", 90*time.Second, func() bool {
		ep.mu.Lock()
		defer ep.mu.Unlock()
		for _, e := range want {
			if ep.got[e.ID] == 0 {
				return false
			}
		}
		return true
	})
	ep.mu.Lock()
	defer ep.mu.Unlock()
	if ep.badSig > 0 {
		t.Fatalf("%d deliveries failed the signature check", ep.badSig)
	}
	total := 0
	for _, n := range ep.got {
		total += n
	}
	t.Logf("%d delayed events and %d ticks, each in the log once and delivered; %d deliveries accepted (%.1f%% redelivered)",
		len(logged), len(tickLog), total, 100*float64(total-len(ep.got))/float64(len(ep.got)))
}
