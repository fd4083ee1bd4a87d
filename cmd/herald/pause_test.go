package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/client"
	"github.com/heraldhq/herald/cluster"
)

// holdingReceiver is a webhook endpoint that, while holding, keeps every
// request waiting unanswered; afterwards it answers 204 at once. It counts
// the 2xx answers per event (webhook-id).
type holdingReceiver struct {
	srv *httptest.Server

	mu      sync.Mutex
	release chan struct{} // open while holding
	held    int           // requests waiting now
	got     map[string]int
}

func newHoldingReceiver(t *testing.T) *holdingReceiver {
	r := &holdingReceiver{release: make(chan struct{}), got: map[string]int{}}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	t.Cleanup(r.answer) // before the server closes
	return r
}

func (r *holdingReceiver) serve(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	release := r.release
	if release != nil {
		r.held++
		r.mu.Unlock()
		select {
		case <-release:
		case <-req.Context().Done():
			r.mu.Lock()
			r.held--
			r.mu.Unlock()
			return
		}
		r.mu.Lock()
		r.held--
	}
	r.got[req.Header.Get("webhook-id")]++
	r.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// answer stops holding: the requests held are answered, and every later one
// at once.
func (r *holdingReceiver) answer() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.release != nil {
		close(r.release)
		r.release = nil
	}
}

func (r *holdingReceiver) holding() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.held
}

// deliveries returns how many events were answered 2xx, and how many times.
func (r *holdingReceiver) deliveries() (distinct, total int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, n := range r.got {
		total += n
	}
	return len(r.got), total
}

// TestPausedNodeSendsNothingAfterItsLease runs two nodes on PostgreSQL and
// pauses (SIGSTOP) the one dispatching the most subscriptions while it has
// deliveries in flight and many more queued for send slots. The other node
// takes the subscriptions over and delivers everything. When the paused
// node resumes (SIGCONT) its lease has long lapsed by its own clock: it must
// send nothing more, so each subscription gets at most the deliveries that
// were in flight at the pause twice (issue 12 c: a resumed node sent up to
// 90 queued deliveries per subscription the new owner had made 24 s
// before).
func TestPausedNodeSendsNothingAfterItsLease(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes; skipped with -short")
	}
	dsn := pgDSN(t)
	ctx := t.Context()
	// 16 send slots: 4 per subscription, so with max_in_flight 16 each
	// subscription has 4 requests in flight and 12 waiting for a slot.
	args := []string{"--database-url", dsn, "--admin-key", testAdminKey, "--webhook.max-concurrency", "16"}
	procs := []*proc{
		startProc(t, append(args, "--data-dir", t.TempDir())...),
		startProc(t, append(args, "--data-dir", t.TempDir())...),
	}
	ids := []string{nodeIDOf(t, procs[0]), nodeIDOf(t, procs[1])}
	db, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(context.Background())
	holders := func() map[string]string {
		rows, err := db.Query(ctx, `SELECT id, lease_node FROM (`+leasesSQL+`) l(id, lease_node, expires_at) WHERE expires_at > $1`, time.Now().UnixNano())
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]string{}
		var id, node string
		if _, err := pgx.ForEachRow(rows, []any{&id, &node}, func() error { out[id] = node; return nil }); err != nil {
			t.Fatal(err)
		}
		return out
	}
	waitCond(t, "both nodes live", 10*time.Second, func() bool {
		var n int
		err := db.QueryRow(ctx, `SELECT count(*) FROM nodes WHERE heartbeat_at > $1`, time.Now().Add(-cluster.DefaultNodeTTL).UnixNano()).Scan(&n)
		return err == nil && n == 2
	})

	const topic, events = "pause.orders", 40
	admin := client.New(procs[0].url, client.WithKey(testAdminKey))
	if _, _, err := admin.PutTopic(ctx, topic, client.TopicSettings{}); err != nil {
		t.Fatal(err)
	}
	recv := map[string]*holdingReceiver{}
	for range 4 {
		r := newHoldingReceiver(t)
		sub, err := admin.CreateSubscription(ctx, client.SubscriptionSpec{
			Topic: topic, URL: r.srv.URL, Verification: herald.VerifyNone, MaxInFlight: 16, Timeout: 30 * time.Second,
			Retry: herald.RetryPolicy{MaxAttempts: 100, Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond},
		})
		if err != nil {
			t.Fatal(err)
		}
		recv[sub.ID] = r
	}
	subs := slices.Sorted(maps.Keys(recv))
	waitCond(t, "every subscription leased by its owner", 15*time.Second, func() bool {
		h := holders()
		for _, s := range subs {
			if h[s] != cluster.Owner(ids, s) {
				return false
			}
		}
		return true
	})
	h := holders()
	count := func(node string) (n int) {
		for _, s := range subs {
			if h[s] == node {
				n++
			}
		}
		return n
	}
	victim := 0
	if count(ids[1]) > count(ids[0]) {
		victim = 1
	}
	paused := slices.DeleteFunc(slices.Clone(subs), func(s string) bool { return h[s] != ids[victim] })
	other := client.New(procs[1-victim].url, client.WithKey(testAdminKey))
	for i := range events {
		if _, err := other.Publish(ctx, topic, []byte(`{}`), client.PublishOptions{IdempotencyKey: fmt.Sprint("e", i), ContentType: "application/json"}); err != nil {
			t.Fatal(err)
		}
	}
	waitCond(t, "the node to be delivering", 10*time.Second, func() bool {
		for _, s := range paused {
			if recv[s].holding() == 0 {
				return false
			}
		}
		return true
	})

	p := procs[victim]
	if err := p.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.cmd.Process.Signal(syscall.SIGCONT) })
	// What the paused node had in flight: the requests held once they have
	// all arrived (the count is the same twice running) while it still
	// holds the leases, so none of them is the other node's.
	inFlight := map[string]int{}
	waitCond(t, "the paused node's requests counted", 5*time.Second, func() bool {
		before := map[string]int{}
		for _, s := range paused {
			before[s] = recv[s].holding()
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(50 * time.Millisecond): // two readings apart
		}
		h := holders()
		for _, s := range paused {
			if recv[s].holding() != before[s] || h[s] != ids[victim] {
				return false
			}
		}
		inFlight = before
		return true
	})
	for _, r := range recv {
		r.answer()
	}
	t.Logf("paused node %s with %d subscriptions; in flight: %v", ids[victim], len(paused), inFlight)

	took := waitCond(t, "the other node to deliver every event", 30*time.Second, func() bool {
		for _, s := range paused {
			if d, _ := recv[s].deliveries(); d < events {
				return false
			}
		}
		return true
	})
	t.Logf("the other node delivered every event %v after the pause", took.Round(10*time.Millisecond))

	resumed := len(p.logs.String())
	if err := p.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	// The resumed node finds out, one way or the other, that its leases are
	// gone; then it stops, finishing whatever it still sends.
	waitCond(t, "the resumed node to drop its subscriptions", 15*time.Second, func() bool {
		seen := map[string]bool{}
		sc := bufio.NewScanner(strings.NewReader(p.logs.String()[resumed:]))
		for sc.Scan() {
			var rec struct {
				Msg string `json:"msg"`
				Sub string `json:"subscription_id"`
			}
			if json.Unmarshal(sc.Bytes(), &rec) == nil && strings.Contains(rec.Msg, "lease") {
				seen[rec.Sub] = true
			}
		}
		for _, s := range paused {
			if !seen[s] {
				return false
			}
		}
		return true
	})
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatal("the resumed node did not stop within 30s of SIGTERM")
	}

	for _, s := range paused {
		distinct, total := recv[s].deliveries()
		t.Logf("subscription %s: %d events, %d deliveries, %d in flight at the pause", s, distinct, total, inFlight[s])
		if distinct != events {
			t.Errorf("subscription %s: %d of %d events delivered", s, distinct, events)
		}
		if dups := total - distinct; dups > inFlight[s] {
			t.Errorf("subscription %s: %d duplicates; only the %d deliveries in flight at the pause may be repeated", s, dups, inFlight[s])
		}
	}
}
