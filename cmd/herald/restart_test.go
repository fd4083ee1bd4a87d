package main

import (
	"net/http"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/client"
)

// TestRestartAfterKillDeliversAtOnce kills a lone node with SIGKILL while
// it dispatches a subscription, starts it again on the same data, and
// publishes as soon as /readyz answers 200: the event must arrive within a
// second of readiness, though the killed process's dispatch lease is still
// live then (issue 12 d: nothing was delivered for about 10 s after a
// restart on SQLite while /readyz said 200). On SQLite the restarted
// process holds the database's lock, so it ends every lease at once,
// whoever held it; on PostgreSQL it takes back the leases held under its
// node id, kept in data-dir or set by node-id.
func TestRestartAfterKillDeliversAtOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes; skipped with -short")
	}
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		restartAfterKill(t, []string{"--data-dir", dir}, []string{"--data-dir", dir})
	})
	t.Run("sqlite, another node id", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		restartAfterKill(t, []string{"--data-dir", dir, "--node-id", "before"}, []string{"--data-dir", dir, "--node-id", "after"})
	})
	t.Run("postgres, id kept in data-dir", func(t *testing.T) {
		t.Parallel()
		db, dir := pgDSN(t), t.TempDir()
		restartAfterKill(t, []string{"--database-url", db, "--data-dir", dir}, []string{"--database-url", db, "--data-dir", dir})
	})
	t.Run("postgres, node-id set", func(t *testing.T) {
		t.Parallel()
		db := pgDSN(t)
		restartAfterKill(t, []string{"--database-url", db, "--data-dir", t.TempDir(), "--node-id", "n1"},
			[]string{"--database-url", db, "--data-dir", t.TempDir(), "--node-id", "n1"})
	})
}

// restartAfterKill runs the node with the first args, kills it, and runs
// it again with the second.
func restartAfterKill(t *testing.T, first, second []string) {
	ctx := t.Context()
	ep := newEndpoint(t)
	delivered := func(id string) func() bool {
		return func() bool { ep.mu.Lock(); defer ep.mu.Unlock(); return ep.got[id] > 0 }
	}
	p := startProc(t, append(first, "--admin-key", testAdminKey)...)
	c := client.New(p.url, client.WithKey(testAdminKey))
	if _, _, err := c.PutTopic(ctx, "restart.orders", client.TopicSettings{}); err != nil {
		t.Fatal(err)
	}
	sub, err := c.CreateSubscription(ctx, client.SubscriptionSpec{Topic: "restart.orders", URL: ep.srv.URL, Verification: herald.VerifyNone})
	if err != nil {
		t.Fatal(err)
	}
	ep.mu.Lock()
	ep.secrets = []string{sub.Secret}
	ep.mu.Unlock()
	ev1, err := c.Publish(ctx, "restart.orders", []byte(`{"n":1}`), client.PublishOptions{ContentType: "application/json"})
	if err != nil {
		t.Fatal(err)
	}
	waitCond(t, "the first event delivered", 10*time.Second, delivered(ev1.ID))
	p.kill()

	p = startProc(t, append(second, "--admin-key", testAdminKey)...)
	c = client.New(p.url, client.WithKey(testAdminKey))
	waitCond(t, "/readyz to answer 200", 10*time.Second, func() bool {
		resp, err := http.Get(p.url + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	ready := time.Now()
	ev2, err := c.Publish(ctx, "restart.orders", []byte(`{"n":2}`), client.PublishOptions{ContentType: "application/json"})
	if err != nil {
		t.Fatal(err)
	}
	waitCond(t, "the event published after the restart delivered", 30*time.Second, delivered(ev2.ID))
	took := time.Since(ready)
	t.Logf("delivered %v after /readyz answered 200", took.Round(time.Millisecond))
	if took > time.Second {
		t.Fatalf("the first delivery after the restart came %v after the node was ready; want it within 1s", took.Round(time.Millisecond))
	}
}
