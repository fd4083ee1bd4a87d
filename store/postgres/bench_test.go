package postgres

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/heraldhq/herald"
)

// benchEvents returns n events of about 200 bytes of payload on topic.
func benchEvents(topic string, n int) []*herald.Event {
	payload := []byte(`{"order_id":"ord_0123456789","amount":1999,"currency":"EUR","customer":"cus_0123456789",` +
		`"items":[{"sku":"sku-1","qty":1},{"sku":"sku-2","qty":3}],"note":"` + strings.Repeat("x", 40) + `"}`)
	now := time.Now()
	evs := make([]*herald.Event, n)
	for i := range evs {
		evs[i] = &herald.Event{
			ID: herald.NewID(now), Topic: topic, Time: now, Type: "order.created",
			Key: fmt.Sprintf("cus_%d", i%10), ContentType: "application/json", Payload: payload,
		}
	}
	return evs
}

// renew clears the ids the last Append gave the events, so the store
// assigns new ones, as for a publish without a producer's id (appending
// them again stores them again rather than finding them duplicates), and
// stamps them with the present, as a publish is, so those ids grow.
func renew(evs []*herald.Event) {
	now := time.Now()
	for _, e := range evs {
		e.ID, e.Time = "", now
	}
}

// BenchmarkAppend measures one Append call of n events on one connection:
// the latency a committer sees per batch. "insert" writes the rows with
// INSERT ... SELECT FROM unnest(...) in the round trip that allocates the
// seqs and commits; "copy" sends them with COPY in a round trip of its own
// (and the COMMIT in another).
//
// On a machine shared with other work the wall time is noisy, so it also
// reports CPU time per call: the client process's (getrusage) and, when
// the server runs on this machine, the server backend's
// (/proc/<pid>/schedstat), which other load barely moves.
func BenchmarkAppend(b *testing.B) {
	dsn, _ := testDSN(b)
	s, err := Open(context.Background(), dsn, Options{MaxConns: 1}) // one backend to measure
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	putTopic(b, s, "bench")
	var backend int
	if err := s.pool.QueryRow(b.Context(), `SELECT pg_backend_pid()`).Scan(&backend); err != nil {
		b.Fatal(err)
	}
	for _, n := range []int{1, 100, 300, 1000} {
		for _, mode := range []string{"insert", "copy"} {
			b.Run(fmt.Sprintf("events=%d/%s", n, mode), func(b *testing.B) {
				s.copyFrom = 0
				if mode == "copy" {
					s.copyFrom = 1
				}
				defer func() { s.copyFrom = defaultCopyFrom }()
				evs := benchEvents("bench", n)
				b.SetBytes(int64(n * len(evs[0].Payload)))
				srv0, srvOK := runNanos(backend)
				cli0 := clientCPU()
				for b.Loop() {
					renew(evs)
					if _, err := s.Append(b.Context(), evs); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "events/s")
				b.ReportMetric(float64(clientCPU()-cli0)/1e3/float64(b.N), "client-cpu-µs/op")
				if srv1, ok := runNanos(backend); ok && srvOK {
					b.ReportMetric(float64(srv1-srv0)/1e3/float64(b.N), "server-cpu-µs/op")
				}
			})
		}
	}
}

// runNanos returns the CPU time the process pid has run, if this machine
// shows it.
func runNanos(pid int) (int64, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/schedstat", pid))
	if err != nil {
		return 0, false
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0, false
	}
	n, err := strconv.ParseInt(f[0], 10, 64)
	return n, err == nil
}

// clientCPU returns the user and system CPU time of this process.
func clientCPU() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// BenchmarkAppendParallel measures single-event appends from 8 goroutines,
// all to one topic (they queue on its row lock) or each to its own.
func BenchmarkAppendParallel(b *testing.B) {
	s := newTestStore(b)
	const topics = 8
	for i := range topics {
		putTopic(b, s, fmt.Sprintf("par.%d", i))
	}
	for _, spread := range []bool{false, true} {
		name := "one-topic"
		if spread {
			name = "own-topic"
		}
		b.Run(name, func(b *testing.B) {
			var next atomic.Int64
			b.SetParallelism(max(1, 8/runtime.GOMAXPROCS(0))) // 8 goroutines in all
			b.RunParallel(func(pb *testing.PB) {
				topic := "par.0"
				if spread {
					topic = fmt.Sprintf("par.%d", next.Add(1)%topics)
				}
				evs := benchEvents(topic, 1)
				for pb.Next() {
					renew(evs)
					if _, err := s.Append(b.Context(), evs); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// BenchmarkSettle measures one Settle call the way the dispatcher's group
// commit makes them: 50 subscriptions, each moving its cursor, appending 20
// attempts (1,000 attempt rows per call) and recording its last success
// and activity. As BenchmarkAppend, it also reports the CPU time of the
// client and of the server backend per call, which other load on the
// machine barely moves.
func BenchmarkSettle(b *testing.B) {
	dsn, _ := testDSN(b)
	s, err := Open(context.Background(), dsn, Options{MaxConns: 1}) // one backend to measure
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	ctx := b.Context()
	var backend int
	if err := s.pool.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&backend); err != nil {
		b.Fatal(err)
	}
	now := time.Now().UTC()
	const subs, perSub = 50, 20
	items := make([]herald.SettleItem, subs)
	for i := range items {
		id := fmt.Sprintf("sub_%03d", i)
		sub := herald.Subscription{ID: id, Topic: "orders", State: herald.StateActive}
		if err := s.CreateSubscription(ctx, sub, herald.StartPosition{}); err != nil {
			b.Fatal(err)
		}
		epoch, err := s.AcquireLease(ctx, id, "bench", now, time.Hour)
		if err != nil {
			b.Fatal(err)
		}
		items[i] = herald.SettleItem{SubscriptionID: id, Epoch: epoch}
	}
	seq := int64(0)
	srv0, srvOK := runNanos(backend)
	cli0 := clientCPU()
	for b.Loop() {
		at := now.Add(time.Duration(seq) * time.Millisecond) // event ids and times move on as they would
		for i := range items {
			it := &items[i]
			it.Attempts = it.Attempts[:0]
			for j := range perSub {
				it.Attempts = append(it.Attempts, herald.Attempt{
					Topic: "orders", Seq: seq + int64(j) + 1, EventID: herald.NewID(at), Attempt: 1, Time: at,
					Outcome: herald.OutcomeSuccess, StatusCode: 200, Latency: 3 * time.Millisecond, Response: `{"ok":true}`,
				})
			}
			it.Cursors = []herald.Cursor{{Topic: "orders", Seq: seq + perSub}}
			it.LastSuccess, it.Activity = at, at
		}
		seq += perSub
		errs, err := s.Settle(ctx, items)
		if err != nil {
			b.Fatal(err)
		}
		for _, err := range errs {
			if err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(subs*b.N)/b.Elapsed().Seconds(), "settlements/s")
	b.ReportMetric(float64(subs*perSub*b.N)/b.Elapsed().Seconds(), "attempts/s")
	b.ReportMetric(float64(clientCPU()-cli0)/1e3/float64(b.N), "client-cpu-µs/op")
	if srv1, ok := runNanos(backend); ok && srvOK {
		b.ReportMetric(float64(srv1-srv0)/1e3/float64(b.N), "server-cpu-µs/op")
	}
}
