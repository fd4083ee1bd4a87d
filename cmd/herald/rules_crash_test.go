package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/client"
)

// crashDeposit is one deposit as the crash test publishes it; ts is the
// event time (Unix seconds) the flagger's window follows.
type crashDeposit struct {
	Wallet string `json:"wallet_id"`
	Amount int64  `json:"amount"`
	TS     int64  `json:"ts"`
}

// TestRulesCrashStateEqualsModel kills the real binary with SIGKILL while
// a rule (the seed's flagger: sliding two-minute sum per wallet over
// 10,000) and two views (the balance, and the latest flag per wallet, fed
// by the rule's output) process a stream of deposits published from
// several goroutines. After the last restart it computes, from the
// deposits the log holds, what each of them must hold, and checks that
// they hold exactly that: every deposit counted once in its balance,
// every flag emitted once (none lost, none twice, on a topic without
// deduplication), each view row at the seq of its key's newest input. At-least-once in (redelivery after each
// kill), exactly-once effect on the state.
// HERALD_RULES_CRASH_KILLS sets how many kills (default 3).
func TestRulesCrashStateEqualsModel(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes; skipped with -short")
	}
	t.Parallel()
	kills := 3
	if v := os.Getenv("HERALD_RULES_CRASH_KILLS"); v != "" {
		kills, _ = strconv.Atoi(v)
	}
	dir := t.TempDir()
	args := []string{"--data-dir", dir, "--admin-key", testAdminKey}
	const workers = 4
	const walletsPerWorker = 3
	t0 := time.Now().Add(-24 * time.Hour).Unix()

	var mu sync.Mutex
	acks := 0
	inDoubt := map[string][]byte{} // idempotency key -> payload whose answer was lost
	next := make([]int, workers)   // per worker: next message number
	clock := make([]int64, workers)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 15))

	for round := 0; round <= kills; round++ {
		p := startProc(t, args...)
		c := client.New(p.url, client.WithKey(testAdminKey))
		ctx := t.Context()
		if round == 0 {
			setupCrashProcessors(t, c, 1)
		}
		for key, payload := range inDoubt {
			if _, err := c.Publish(ctx, "deposits", payload, client.PublishOptions{IdempotencyKey: key, ContentType: "application/json"}); err != nil {
				t.Fatalf("round %d: re-publish %s: %v", round, key, err)
			}
			delete(inDoubt, key)
		}
		if round == kills {
			checkCrashModel(t, c)
			break
		}
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					// One worker owns its wallets and publishes one deposit
					// at a time with a clock of its own, so each wallet's
					// event times grow with its seqs.
					mu.Lock()
					n := next[w]
					next[w]++
					clock[w] += rng.Int64N(13)
					if rng.IntN(40) == 0 {
						clock[w] += 200 // a pause: the windows empty
					}
					d := crashDeposit{Wallet: fmt.Sprintf("w%d-%d", w, n%walletsPerWorker), Amount: 100 + rng.Int64N(2900), TS: t0 + clock[w]}
					mu.Unlock()
					key := fmt.Sprintf("d%d-%d", w, n)
					payload, _ := json.Marshal(d)
					pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
					_, err := c.Publish(pctx, "deposits", payload, client.PublishOptions{IdempotencyKey: key, ContentType: "application/json"})
					cancel()
					mu.Lock()
					if err != nil {
						inDoubt[key] = payload
						mu.Unlock()
						return // the server is gone
					}
					acks++
					mu.Unlock()
				}
			})
		}
		// Kill at a random moment while the rule and the views are busy.
		mu.Lock()
		want := acks + 300 + rng.IntN(1500)
		mu.Unlock()
		deadline := time.Now().Add(60 * time.Second)
		for {
			mu.Lock()
			n := acks
			mu.Unlock()
			if n >= want || time.Now().After(deadline) {
				break
			}
			time.Sleep(time.Millisecond) // polling a counter, not waiting for an outcome
		}
		p.kill()
		close(stop)
		wg.Wait()
		t.Logf("round %d: killed with %d deposits acknowledged, %d in doubt", round, acks, len(inDoubt))
	}
	if acks < kills*300 {
		t.Fatalf("only %d deposits were acknowledged over %d rounds", acks, kills)
	}
}

// setupCrashProcessors puts the deposits topic, the flagger (in the given
// partitions), and the balance and flagged views.
func setupCrashProcessors(t *testing.T, c *client.Client, partitions int) {
	t.Helper()
	ctx := t.Context()
	if _, _, err := c.PutTopic(ctx, "deposits", client.TopicSettings{}); err != nil {
		t.Fatal(err)
	}
	// No deduplication on the flags: only the rule's transaction (state,
	// emitted events and cursor at once) keeps a flag from being emitted
	// twice after a kill.
	if _, _, err := c.PutTopic(ctx, "wallets.flagged", client.TopicSettings{DedupWindow: new(time.Duration(0))}); err != nil {
		t.Fatal(err)
	}
	defs := []struct{ kind, name, def string }{
		{"rule", "flagger", `{"input": "deposits", "key": "wallet_id", "time": "ts",
			"window": {"kind": "sliding", "size": "2m"}, "aggregate": {"op": "sum", "field": "amount"},
			"when": "value > 10000", "emit": {"topic": "wallets.flagged", "type": "wallet.flagged"},
			"partitions": ` + strconv.Itoa(partitions) + `}`},
		{"view", "balance", `{"input": "deposits", "key": "wallet_id", "aggregate": {"op": "sum", "field": "amount"}}`},
		{"view", "flagged", `{"input": "wallets.flagged", "key": "wallet_id"}`},
	}
	for _, d := range defs {
		var err error
		if d.kind == "rule" {
			_, err = c.PutRule(ctx, d.name, json.RawMessage(d.def))
		} else {
			_, err = c.PutView(ctx, d.name, json.RawMessage(d.def))
		}
		if err != nil {
			t.Fatalf("put %s %s: %v", d.kind, d.name, err)
		}
	}
}

// readTopic returns every event of a topic, in seq order.
func readTopic(t *testing.T, c *client.Client, topic string) []client.Event {
	t.Helper()
	var out []client.Event
	var after int64
	for {
		page, err := c.ListEvents(t.Context(), topic, after, 1000)
		if err != nil {
			t.Fatalf("list %s: %v", topic, err)
		}
		out = append(out, page.Events...)
		if len(page.Events) < 1000 {
			return out
		}
		after = page.Events[len(page.Events)-1].Seq
	}
}

// crashFlag is a wallet.flagged event's payload, the members checked.
type crashFlag struct {
	Wallet string  `json:"wallet_id"`
	Value  float64 `json:"value"`
	Event  struct {
		Seq int64 `json:"seq"`
	} `json:"event"`
}

// checkCrashModel computes the model from the deposits log and compares
// the views and the rule's output with it.
func checkCrashModel(t *testing.T, c *client.Client) {
	t.Helper()
	log := readTopic(t, c, "deposits")
	if len(log) == 0 {
		t.Fatal("no deposits")
	}
	last := log[len(log)-1].Seq

	// The model: balances, the newest seq per wallet, and the flags the
	// sliding window raises (the sum over (ts-120s, ts] first above 10,000,
	// again only after it fell back).
	balance := map[string]int64{}
	newest := map[string]int64{}
	window := map[string][]crashDeposit{}
	above := map[string]bool{}
	var flags []string // "wallet@seq value"
	for _, e := range log {
		var d crashDeposit
		if err := json.Unmarshal(e.Payload, &d); err != nil {
			t.Fatalf("deposit %d: %v", e.Seq, err)
		}
		balance[d.Wallet] += d.Amount
		newest[d.Wallet] = e.Seq
		win := append(window[d.Wallet], d)
		var sum int64
		for _, x := range win {
			if x.TS > d.TS-120 {
				sum += x.Amount
			}
		}
		window[d.Wallet] = win
		hit := sum > 10000
		if hit && !above[d.Wallet] {
			flags = append(flags, fmt.Sprintf("%s@%d %d", d.Wallet, e.Seq, sum))
		}
		above[d.Wallet] = hit
	}

	// The balance view, once it has applied every deposit.
	waitProcessor(t, c, "view", "balance", last)
	rows := readViewRows(t, c, "balance")
	if len(rows) != len(balance) {
		t.Errorf("balance view has %d rows, the model %d", len(rows), len(balance))
	}
	for w, want := range balance {
		r, ok := rows[w]
		if !ok {
			t.Errorf("balance of %s missing", w)
			continue
		}
		var got float64
		_ = json.Unmarshal(r.Value, &got)
		if int64(got) != want || r.Seq != newest[w] {
			t.Errorf("balance of %s = %v at seq %d; the model says %d at seq %d", w, got, r.Seq, want, newest[w])
		}
	}

	// The flagger, once it has applied every deposit: each flag once.
	waitProcessor(t, c, "rule", "flagger", last)
	out := readTopic(t, c, "wallets.flagged")
	var got []string
	lastFlag := map[string]int64{}    // wallet -> seq in wallets.flagged of its newest flag
	lastTrigger := map[string]int64{} // wallet -> the deposit seq of its newest flag
	for _, e := range out {
		var f crashFlag
		if err := json.Unmarshal(e.Payload, &f); err != nil {
			t.Fatalf("flag %d: %v", e.Seq, err)
		}
		got = append(got, fmt.Sprintf("%s@%d %d", f.Wallet, f.Event.Seq, int64(f.Value)))
		lastFlag[f.Wallet], lastTrigger[f.Wallet] = e.Seq, f.Event.Seq
	}
	slices.Sort(got)
	slices.Sort(flags)
	if !slices.Equal(got, flags) {
		t.Errorf("the flagger emitted %d events, the model %d:\n got  %v\n want %v", len(got), len(flags), got, flags)
	}

	// The flagged view: each wallet's newest flag.
	if len(out) > 0 {
		waitProcessor(t, c, "view", "flagged", out[len(out)-1].Seq)
	}
	frows := readViewRows(t, c, "flagged")
	if len(frows) != len(lastFlag) {
		t.Errorf("flagged view has %d rows, want %d", len(frows), len(lastFlag))
	}
	for w, seq := range lastFlag {
		r := frows[w]
		var f crashFlag
		_ = json.Unmarshal(r.Value, &f)
		if r.Seq != seq || f.Event.Seq != lastTrigger[w] {
			t.Errorf("flagged row of %s at seq %d for deposit %d; want seq %d for deposit %d", w, r.Seq, f.Event.Seq, seq, lastTrigger[w])
		}
	}
	if !t.Failed() {
		t.Logf("%d deposits over %d wallets, %d flags: the views and the rule's output equal the model", len(log), len(balance), len(flags))
	}
}

type viewRow struct {
	Key   string          `json:"key"`
	Value json.RawMessage `json:"value"`
	Seq   int64           `json:"seq"`
}

func readViewRows(t *testing.T, c *client.Client, view string) map[string]viewRow {
	t.Helper()
	out := map[string]viewRow{}
	cursor := ""
	for {
		raw, err := c.ListViewRows(t.Context(), view, cursor)
		if err != nil {
			t.Fatalf("list view %s: %v", view, err)
		}
		var page struct {
			Items      []viewRow `json:"items"`
			NextCursor string    `json:"next_cursor"`
		}
		if err := json.Unmarshal(raw, &page); err != nil {
			t.Fatal(err)
		}
		for _, r := range page.Items {
			out[r.Key] = r
		}
		if page.NextCursor == "" {
			return out
		}
		cursor = page.NextCursor
	}
}

// waitProcessor waits until the rule or view has committed the effect of
// its input up to seq.
func waitProcessor(t *testing.T, c *client.Client, kind, name string, seq int64) {
	t.Helper()
	deadline := time.Now().Add(120 * time.Second)
	for {
		raw, err := c.GetProcessor(t.Context(), kind, name)
		if err != nil {
			t.Fatalf("get %s %s: %v", kind, name, err)
		}
		var p struct {
			Position int64 `json:"position"`
		}
		if err := json.Unmarshal(raw, &p); err != nil {
			t.Fatal(err)
		}
		if p.Position >= seq {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s %s is at seq %d, not %d, after 120s", kind, name, p.Position, seq)
		}
		select {
		case <-t.Context().Done():
			t.Fatal(t.Context().Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
