package main

import (
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/client"
)

// TestRulePartitionsThreeNodesKill runs the flagger in three partitions
// on three Herald processes sharing PostgreSQL, kills (SIGKILL) a process
// running one or more of them while deposits flow, and checks that the
// survivors take its partitions over and that the rule's output and the
// views equal the model computed from the deposits log: every flag
// emitted exactly once (the flags' topic has no deduplication), none lost.
// A partition's state commits under its lease, so the node that died
// cannot have written over its successor.
func TestRulePartitionsThreeNodesKill(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes; skipped with -short")
	}
	dsn := pgDSN(t)
	args := []string{"--database-url", dsn, "--admin-key", testAdminKey, "--data-dir", t.TempDir()}
	procs := make([]*proc, 3)
	for i := range procs {
		procs[i] = startProc(t, args...)
	}
	ctx := t.Context()
	c := client.New(procs[0].url, client.WithKey(testAdminKey))
	setupCrashProcessors(t, c, 3)

	// Deposits from three publishers, each with wallets and a clock of
	// its own, so each wallet's event times grow with its seqs.
	const publishers, wallets = 3, 4
	var mu sync.Mutex
	acks := 0
	stop := make(chan struct{})
	var wg sync.WaitGroup
	t0 := time.Now().Add(-24 * time.Hour).Unix()
	for w := range publishers {
		wg.Go(func() {
			clock := int64(0)
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				clock += int64(n*7919%13) + 1
				if n%37 == 0 {
					clock += 200 // a pause: the windows empty
				}
				d := crashDeposit{Wallet: fmt.Sprintf("w%d-%d", w, n%wallets), Amount: 100 + int64(n*104729%2900), TS: t0 + clock}
				payload, _ := json.Marshal(d)
				if _, err := c.Publish(ctx, "deposits", payload, client.PublishOptions{
					IdempotencyKey: fmt.Sprintf("d%d-%d", w, n), ContentType: "application/json"}); err != nil {
					if ctx.Err() == nil {
						t.Errorf("publish: %v", err)
					}
					return
				}
				mu.Lock()
				acks++
				mu.Unlock()
			}
		})
	}
	acked := func() int { mu.Lock(); defer mu.Unlock(); return acks }

	// The victim: a node other than the one published to that runs a
	// partition holding keys.
	victim := -1
	waitCond(t, "a partition with keys on node 1 or 2", 60*time.Second, func() bool {
		for i := 1; i < len(procs); i++ {
			if scrapeCount(t, procs[i].url, `herald_rule_state_keys\{kind="rule"\} (\d+)`) > 0 {
				victim = i
				return true
			}
		}
		return false
	})
	before := acked()
	waitCond(t, "more deposits", 60*time.Second, func() bool { return acked() >= before+300 })
	procs[victim].kill()
	t.Logf("killed node %d with %d deposits acknowledged", victim, acked())
	waitCond(t, "deposits after the kill", 60*time.Second, func() bool { return acked() >= before+900 })
	close(stop)
	wg.Wait()
	checkCrashModel(t, c)
}
