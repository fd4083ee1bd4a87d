package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/heraldhq/herald/client"
	sourceoutbox "github.com/heraldhq/herald/source/outbox"
	"github.com/heraldhq/herald/store/postgres/pgtest"
)

// TestSourcesThreeNodesKill runs an outbox source of six shards on three
// Herald processes sharing PostgreSQL, kills (SIGKILL) the process running
// shards while rows are being written, and checks that the survivors take
// its shards and every outbox row ends up as exactly one event, in order
// per key: rows the dead node published but did not delete are read again
// and absorbed as duplicates (counted and logged).
func TestSourcesThreeNodesKill(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes; skipped with -short")
	}
	dsn := pgDSN(t)
	outDSN, _ := pgtest.Schema(t, "herald_outbox_mn")
	ctx := t.Context()
	odb, err := pgx.Connect(ctx, outDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer odb.Close(context.Background())
	if _, err := odb.Exec(ctx, sourceoutbox.PostgresDDL); err != nil {
		t.Fatal(err)
	}
	args := []string{"--database-url", dsn, "--admin-key", testAdminKey, "--data-dir", t.TempDir()}
	procs := make([]*proc, 3)
	ids := map[string]int{}
	for i := range procs {
		procs[i] = startProc(t, args...)
		ids[nodeIDOf(t, procs[i])] = i
	}
	admin := client.New(procs[0].url, client.WithKey(testAdminKey))
	const topic = "mn.payments"
	if _, _, err := admin.PutTopic(ctx, topic, client.TopicSettings{}); err != nil {
		t.Fatal(err)
	}
	src, err := admin.CreateSource(ctx, client.SourceSpec{Kind: "outbox", Topic: topic, Shards: 6,
		Config: json.RawMessage(fmt.Sprintf(`{"dsn": %q, "poll_interval": "50ms", "batch_size": 100}`, outDSN))})
	if err != nil {
		t.Fatal(err)
	}

	// Wait until the shards are spread, so the victim holds some.
	var victim int
	waitCond(t, "the shards running", 30*time.Second, func() bool {
		s, err := admin.GetSource(ctx, src.ID)
		if err != nil || len(s.ShardStatus) != 6 {
			return false
		}
		held := map[int]int{}
		for _, sh := range s.ShardStatus {
			if sh.Node == "" {
				return false
			}
			held[ids[sh.Node]]++
		}
		for i := range procs {
			if held[i] > 0 && i != 0 {
				victim = i
				return true
			}
		}
		return false
	})

	const rows, perTx, keys = 3000, 20, 30
	var wg sync.WaitGroup
	written := make(chan int, rows/perTx)
	wg.Go(func() {
		for b := range rows / perTx {
			tx, err := odb.Begin(ctx)
			if err != nil {
				t.Error(err)
				return
			}
			for i := range perTx {
				n := b*perTx + i
				if _, err := tx.Exec(ctx, `INSERT INTO herald_outbox (topic, key, payload) VALUES ('x', $1, $2)`,
					fmt.Sprintf("k%d", n%keys), fmt.Appendf(nil, `{"n":%d}`, n)); err != nil {
					t.Error(err)
					return
				}
			}
			if err := tx.Commit(ctx); err != nil {
				t.Error(err)
				return
			}
			written <- b
			time.Sleep(2 * time.Millisecond) // spread the writes over the kill
		}
	})
	for b := range written {
		if b == rows/perTx/3 {
			procs[victim].kill()
			t.Logf("killed node %d after %d rows", victim, (b+1)*perTx)
			break
		}
	}
	wg.Wait()
	survivor := client.New(procs[(victim+1)%3].url, client.WithKey(testAdminKey))
	took := waitCond(t, "every row published and deleted", 60*time.Second, func() bool {
		var left int
		_ = odb.QueryRow(ctx, `SELECT count(*) FROM herald_outbox`).Scan(&left)
		return left == 0
	})
	evs := allEvents(t, survivor, topic)
	seen := map[int]bool{}
	for _, e := range evs {
		var p struct{ N int }
		_ = json.Unmarshal(e.Payload, &p)
		if seen[p.N] {
			t.Fatalf("row %d is two events", p.N)
		}
		seen[p.N] = true
	}
	if len(seen) != rows || len(evs) != rows {
		t.Fatalf("%d events for %d distinct rows; want %d", len(evs), len(seen), rows)
	}
	checkKeyOrder(t, evs)
	var dups int
	for i, p := range procs {
		if i == victim {
			continue
		}
		dups += scrapeCount(t, p.url, `herald_source_duplicates_total\{kind="outbox",source="`+src.ID+`"\} (\d+)`)
	}
	t.Logf("3 nodes, 6 shards, node %d killed: %d rows, %d events, %d duplicates absorbed; drained %s after the last write",
		victim, rows, len(evs), dups, took)
}

func scrapeCount(t *testing.T, url, pattern string) int {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(pattern).FindSubmatch(b)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}
