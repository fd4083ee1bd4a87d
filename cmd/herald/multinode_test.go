package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/client"
	"github.com/heraldhq/herald/cluster"
)

// nodeIDOf reads the node id a process logged when it started serving.
func nodeIDOf(t *testing.T, p *proc) string {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(p.logs.String()))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var rec struct {
			Msg    string `json:"msg"`
			NodeID string `json:"node_id"`
		}
		if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == "herald serving" && rec.NodeID != "" {
			return rec.NodeID
		}
	}
	t.Fatalf("no node id in the logs:\n%s", p.logs)
	return ""
}

// waitCond polls cond until it holds, failing the test at the deadline.
func waitCond(t *testing.T, what string, timeout time.Duration, cond func() bool) time.Duration {
	t.Helper()
	took, ok := pollUntil(t, timeout, cond)
	if !ok {
		t.Fatalf("timed out after %v waiting for %s", timeout, what)
	}
	return took
}

// pollUntil polls cond until it holds or the timeout passes, and says how
// long it waited and whether cond held.
func pollUntil(t *testing.T, timeout time.Duration, cond func() bool) (time.Duration, bool) {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			return time.Since(start), false
		}
		select {
		case <-t.Context().Done():
			t.Fatal(t.Context().Err())
		case <-time.After(20 * time.Millisecond): // polling under a deadline
		}
	}
	return time.Since(start), true
}

type lease struct {
	node    string
	expires time.Time
}

// TestMultiNodeFailover runs three Herald processes on one PostgreSQL
// schema behind no balancer: publishers spread over all of them, two
// webhook subscriptions are dispatched by whichever nodes rendezvous
// hashing picks. One node holding a subscription is killed with SIGKILL
// under load and publishing goes on through the other two: its
// subscriptions must move within 10 seconds, every acknowledged event must
// reach both endpoints, and redeliveries must stay within what a dispatcher
// can have unsettled. Then the node restarts and must rejoin: live in the
// membership table and holding the subscriptions rendezvous hashing now
// gives it.
// leasesSQL reads each subscription's lease holder and end: the end of
// the node lease it rests on (ADR 0011), or its own end when an older
// version took it, or 0 when the node lease it rested on has ended.
const leasesSQL = `SELECT s.id, s.lease_node, CASE WHEN s.lease_node_epoch = 0 THEN s.lease_expires_at
		WHEN n.epoch = s.lease_node_epoch THEN n.expires_at ELSE 0 END
	FROM subscriptions s LEFT JOIN dispatch_nodes n ON n.node = s.lease_node`

func TestMultiNodeFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes; skipped with -short")
	}
	dsn := pgDSN(t)
	ctx := t.Context()
	args := []string{"--database-url", dsn, "--admin-key", testAdminKey, "--data-dir", t.TempDir()}
	procs := make([]*proc, 3)
	ids := make([]string, 3)
	for i := range procs {
		procs[i] = startProc(t, args...)
		ids[i] = nodeIDOf(t, procs[i])
	}
	db, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(context.Background())
	leases := func() map[string]lease {
		rows, err := db.Query(ctx, leasesSQL)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]lease{}
		var id, node string
		var exp int64
		if _, err := pgx.ForEachRow(rows, []any{&id, &node, &exp}, func() error {
			out[id] = lease{node, time.Unix(0, exp)}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return out
	}
	liveNodes := func() []string {
		rows, err := db.Query(ctx, `SELECT id FROM nodes WHERE heartbeat_at > $1 ORDER BY id`,
			time.Now().Add(-cluster.DefaultNodeTTL).UnixNano())
		if err != nil {
			t.Fatal(err)
		}
		out, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	waitCond(t, "all three nodes live", 10*time.Second, func() bool { return len(liveNodes()) == 3 })

	const topic = "mn.orders"
	admin := client.New(procs[0].url, client.WithKey(testAdminKey))
	if _, _, err := admin.PutTopic(ctx, topic, client.TopicSettings{}); err != nil {
		t.Fatal(err)
	}
	eps := []*endpoint{newEndpoint(t), newEndpoint(t)}
	var subIDs []string
	for _, ep := range eps {
		sub, err := admin.CreateSubscription(ctx, client.SubscriptionSpec{
			Topic: topic, URL: ep.srv.URL, Verification: herald.VerifyNone, MaxInFlight: 16,
			Retry: herald.RetryPolicy{MaxAttempts: 100, Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond},
		})
		if err != nil {
			t.Fatal(err)
		}
		ep.mu.Lock()
		ep.secrets = []string{sub.Secret}
		ep.mu.Unlock()
		subIDs = append(subIDs, sub.ID)
	}
	held := func(sub string, by []string) bool {
		l := leases()[sub]
		return slices.Contains(by, l.node) && l.expires.After(time.Now())
	}
	// settled reports whether every subscription is leased by its
	// rendezvous owner among the live nodes: the cluster has converged.
	settled := func(subs, live []string) bool {
		for _, s := range subs {
			if !held(s, []string{cluster.Owner(live, s)}) {
				return false
			}
		}
		return true
	}
	waitCond(t, "both subscriptions leased by their owners", 15*time.Second, func() bool { return settled(subIDs, ids) })

	// Publishers: round robin over the nodes they may use; a publish whose
	// answer is lost (its node died) is in doubt and is sent again at the
	// end with the same idempotency key.
	var mu sync.Mutex
	ack := map[string]acked{}
	inDoubt := map[string]bool{}
	ackTime := map[string]time.Time{}
	targets := []*client.Client{}
	for _, p := range procs {
		targets = append(targets, client.New(p.url, client.WithKey(testAdminKey)))
	}
	usable := slices.Clone(targets)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 6 {
		wg.Go(func() {
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				mu.Lock()
				c := usable[(w+n)%len(usable)]
				mu.Unlock()
				key := fmt.Sprintf("w%d-%d", w, n)
				pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				res, err := c.Publish(pctx, topic, []byte(key), client.PublishOptions{IdempotencyKey: key, ContentType: "text/plain"})
				cancel()
				mu.Lock()
				if err != nil {
					inDoubt[key] = true
				} else {
					ack[key] = acked{res.ID, res.Seq}
					ackTime[key] = time.Now()
				}
				mu.Unlock()
			}
		})
	}
	defer func() { // on an early failure
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}()
	acks := func() int { mu.Lock(); defer mu.Unlock(); return len(ack) }
	waitCond(t, "300 acknowledged publishes", 30*time.Second, func() bool { return acks() >= 300 })

	// Kill the node dispatching the first subscription.
	ls := leases()
	victim := slices.Index(ids, ls[subIDs[0]].node)
	if victim < 0 {
		t.Fatalf("subscription %s is leased by %q, not by a node of this test", subIDs[0], ls[subIDs[0]].node)
	}
	var moved []string
	for _, s := range subIDs {
		if ls[s].node == ids[victim] {
			moved = append(moved, s)
		}
	}
	survivors := slices.Delete(slices.Clone(ids), victim, victim+1)
	mu.Lock()
	usable = slices.Delete(slices.Clone(targets), victim, victim+1)
	mu.Unlock()
	admin = client.New(procs[(victim+1)%3].url, client.WithKey(testAdminKey))
	killedAt := time.Now()
	procs[victim].kill()
	t.Logf("killed node %s (dispatching %d of 2 subscriptions) with %d events acknowledged", ids[victim], len(moved), acks())

	took := waitCond(t, "the killed node's subscriptions to move", 10*time.Second, func() bool {
		for _, s := range moved {
			if !held(s, survivors) {
				return false
			}
		}
		return true
	})
	t.Logf("subscriptions moved %v after the kill", took.Round(10*time.Millisecond))
	// ... and deliver events acknowledged after the kill.
	waitCond(t, "deliveries of post-kill events by the new owner", 10*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		for i, s := range subIDs {
			if !slices.Contains(moved, s) {
				continue
			}
			ok := false
			eps[i].mu.Lock()
			for key, at := range ackTime {
				if at.After(killedAt) && eps[i].got[ack[key].id] > 0 {
					ok = true
					break
				}
			}
			eps[i].mu.Unlock()
			if !ok {
				return false
			}
		}
		return true
	})
	t.Logf("delivering again %v after the kill", time.Since(killedAt).Round(10*time.Millisecond))

	// The node restarts (a new process: a new node id) and rejoins.
	procs[victim] = startProc(t, args...)
	ids[victim] = nodeIDOf(t, procs[victim])
	waitCond(t, "the restarted node to be live", 10*time.Second, func() bool { return slices.Contains(liveNodes(), ids[victim]) })
	mu.Lock()
	targets[victim] = client.New(procs[victim].url, client.WithKey(testAdminKey))
	usable = slices.Clone(targets)
	mu.Unlock()
	// Make sure rendezvous hashing gives the new node something: add idle
	// subscriptions until one of the subscriptions is its.
	live := liveNodes()
	if len(live) != 3 {
		t.Fatalf("live nodes after the restart: %v", live)
	}
	all := slices.Clone(subIDs)
	for !slices.ContainsFunc(all, func(s string) bool { return cluster.Owner(live, s) == ids[victim] }) {
		sub, err := admin.CreateSubscription(ctx, client.SubscriptionSpec{
			Topic: "mn.idle", URL: eps[0].srv.URL, Verification: herald.VerifyNone,
		})
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, sub.ID)
	}
	// explain says, when the cluster has not converged, which lease is
	// where it should not be and what each node logged about it.
	explain := func() {
		now := time.Now()
		ls := leases()
		for _, s := range all {
			t.Logf("subscription %s: owner %s, leased by %s for %v more", s, cluster.Owner(live, s), ls[s].node, ls[s].expires.Sub(now).Round(time.Millisecond))
		}
		t.Logf("live nodes now: %v", liveNodes())
		for i, p := range procs {
			var lines []string
			for _, l := range strings.Split(p.logs.String(), "\n") {
				if strings.Contains(l, `"level":"WARN"`) || strings.Contains(l, `"level":"ERROR"`) || strings.Contains(l, "cluster") || strings.Contains(l, "lease") {
					lines = append(lines, l)
				}
			}
			t.Logf("node %s logged:\n%s", ids[i], strings.Join(lines[max(0, len(lines)-40):], "\n"))
		}
	}
	took, ok := pollUntil(t, 30*time.Second, func() bool { return settled(all, live) })
	if !ok {
		explain()
		t.Fatalf("timed out after %v waiting for every subscription leased by its rendezvous owner", took.Round(time.Millisecond))
	}
	t.Logf("rebalanced %v after the restarted node was live; it holds %d of %d subscriptions", took.Round(10*time.Millisecond),
		len(slices.DeleteFunc(slices.Clone(all), func(s string) bool { return cluster.Owner(live, s) != ids[victim] })), len(all))
	more := acks() + 300
	waitCond(t, "more publishes, through the rejoined node too", 30*time.Second, func() bool { return acks() >= more })

	close(stop)
	wg.Wait()
	c := targets[(victim+1)%3]
	for key := range inDoubt {
		res, err := c.Publish(ctx, topic, []byte(key), client.PublishOptions{IdempotencyKey: key, ContentType: "text/plain"})
		if err != nil {
			t.Fatalf("re-publish %s: %v", key, err)
		}
		ack[key] = acked{res.ID, res.Seq}
	}
	t.Logf("%d events acknowledged, %d of them re-published after being in doubt", len(ack), len(inDoubt))
	checkLog(t, c, topic, ack)

	// Every acknowledged event reached both endpoints at least once.
	for i, ep := range eps {
		missing := func() int {
			ep.mu.Lock()
			defer ep.mu.Unlock()
			n := 0
			for _, a := range ack {
				if ep.got[a.id] == 0 {
					n++
				}
			}
			return n
		}
		waitCond(t, fmt.Sprintf("every event delivered to subscription %d", i), 30*time.Second, func() bool { return missing() == 0 })
		ep.mu.Lock()
		total, dups := 0, 0
		for _, n := range ep.got {
			total += n
			dups += n - 1
		}
		bad := ep.badSig
		ep.mu.Unlock()
		if bad > 0 {
			t.Errorf("subscription %d: %d deliveries failed the signature check", i, bad)
		}
		// A dispatcher never has more than its read window (1024 events)
		// delivered but not settled, so one kill cannot repeat more.
		what := "survived"
		if slices.Contains(moved, subIDs[i]) {
			what = "moved"
		}
		t.Logf("subscription %d (%s): %d events, %d deliveries, %d duplicates", i, what, len(ack), total, dups)
		if dups > 1024 {
			t.Errorf("subscription %d: %d duplicates, more than one dispatcher window", i, dups)
		}
	}
}
