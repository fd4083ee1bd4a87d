package sqlite_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/store/sqlite"
)

// benchPayload is a ~200-byte JSON document, the size the targets in
// docs/benchmarks.md are stated for.
var benchPayload = []byte(`{"order_id":"ord_01HZX3","customer":"cus_8812","amount":12999,"currency":"EUR",` +
	`"items":[{"sku":"SKU-1","qty":2},{"sku":"SKU-7","qty":1}],"status":"created","note":"` +
	strings.Repeat("x", 40) + `"}`)

func benchStore(b *testing.B, dedup time.Duration) *sqlite.Store {
	s := openTemp(b)
	tp := herald.Topic{Name: "bench", DedupWindow: dedup}.WithDefaults()
	tp.DedupWindow = dedup
	if _, _, err := s.PutTopic(b.Context(), tp); err != nil {
		b.Fatal(err)
	}
	return s
}

// benchWith names what the events of a benchmark carry besides a payload.
type benchWith int

const (
	withNothing        benchWith = iota // the store assigns ids, nothing is looked up
	withIdempotencyKey                  // a new idempotency key each
	withProducerID                      // a new id chosen by the producer each
)

func benchEvents(n int, with benchWith, serial *int) []*herald.Event {
	now := time.Now()
	evs := make([]*herald.Event, n)
	for i := range evs {
		evs[i] = &herald.Event{Topic: "bench", Type: "order.created",
			ContentType: "application/json", Payload: benchPayload, Time: now}
		switch with {
		case withIdempotencyKey:
			*serial++
			evs[i].IdempotencyKey = fmt.Sprintf("req-%d", *serial)
		case withProducerID:
			evs[i].ID = herald.NewID(now)
		}
	}
	return evs
}

// BenchmarkAppend commits batches of events of ~200 B, each batch one
// durable transaction (synchronous=FULL), as the group committer does.
// Idempotency keys and producer ids each cost a lookup per event.
func BenchmarkAppend(b *testing.B) {
	for _, n := range []int{1, 10, 100, 1000} {
		for with, suffix := range []string{"", "/idempotency_keys", "/producer_ids"} {
			b.Run(fmt.Sprintf("events=%d%s", n, suffix), func(b *testing.B) {
				s := benchStore(b, 24*time.Hour)
				b.SetBytes(int64(n * len(benchPayload)))
				serial := 0
				cpu := cpuTime()
				for b.Loop() {
					if _, err := s.Append(b.Context(), benchEvents(n, benchWith(with), &serial)); err != nil {
						b.Fatal(err)
					}
				}
				reportEvents(b, n, cpu)
			})
		}
	}
}

// BenchmarkAppendSourceBatch commits what a source hands the publisher: a
// batch of 500 events of ~200 B, each with the deterministic idempotency
// key of its message (here a Kafka record's, six partitions read in turn),
// an event key and a type, into a topic with a 24h dedup window. Besides
// the CPU per event it reports the bytes the process wrote per event (the
// WAL and its checkpoints), which load does not change.
func BenchmarkAppendSourceBatch(b *testing.B) {
	const n, partitions = 500, 6
	s := benchStore(b, 24*time.Hour)
	b.SetBytes(int64(n * len(benchPayload)))
	var offsets [partitions]int64
	batch := func() []*herald.Event {
		now := time.Now()
		evs := make([]*herald.Event, n)
		for i := range evs {
			p := i * partitions / n
			offsets[p]++
			evs[i] = &herald.Event{Topic: "bench", Type: "order.created", Key: fmt.Sprintf("cus_%d", i%97),
				ContentType: "application/json", Payload: benchPayload, Time: now,
				IdempotencyKey: fmt.Sprintf("src:src_bench:orders/%d@%d", p, offsets[p])}
		}
		return evs
	}
	// Like the engine's committer, whose context cannot be canceled: with
	// a cancelable one the cgo driver runs every statement and row on a
	// goroutine of its own, to interrupt it.
	ctx := context.WithoutCancel(b.Context())
	cpu, written := cpuTime(), writtenBytes()
	for b.Loop() {
		if _, err := s.Append(ctx, batch()); err != nil {
			b.Fatal(err)
		}
	}
	reportEvents(b, n, cpu)
	b.ReportMetric(float64(writtenBytes()-written)/float64(n*b.N), "written-B/event")
}

// writtenBytes is what the process has written so far (its wchar in
// /proc/self/io), or 0 where that is not known.
func writtenBytes() int64 {
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "wchar: "); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return 0
}

// BenchmarkGroupCommit publishes single events from 64 concurrent
// publishers through a minimal group committer: one goroutine takes what
// is queued (up to 1000 events) and commits it with one Append, then
// answers each publisher. It shows the single-event publish rate the store
// enables; the engine's committer is the real thing.
func BenchmarkGroupCommit(b *testing.B) {
	type publish struct {
		e    *herald.Event
		done chan error
	}
	s := benchStore(b, 0)
	queue := make(chan publish, 1024)
	var commits atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		batch := make([]publish, 0, 1000)
		evs := make([]*herald.Event, 0, 1000)
		for p := range queue {
			batch = append(batch[:0], p)
		drain:
			for len(batch) < cap(batch) {
				select {
				case p, ok := <-queue:
					if !ok {
						break drain
					}
					batch = append(batch, p)
				default:
					break drain
				}
			}
			evs = evs[:0]
			for _, p := range batch {
				evs = append(evs, p.e)
			}
			_, err := s.Append(b.Context(), evs)
			commits.Add(1)
			for _, p := range batch {
				p.done <- err
			}
		}
	})
	b.SetParallelism(32) // 32 publishers per core
	cpu := cpuTime()
	b.RunParallel(func(pb *testing.PB) {
		done := make(chan error, 1)
		serial := 0
		for pb.Next() {
			queue <- publish{e: benchEvents(1, withNothing, &serial)[0], done: done}
			if err := <-done; err != nil {
				b.Error(err)
				return
			}
		}
	})
	close(queue)
	wg.Wait()
	reportEvents(b, 1, cpu)
	b.ReportMetric(float64(b.N)/float64(commits.Load()), "events/commit")
}

// BenchmarkReadEvents reads pages of 100 events from a 10,000-event topic.
func BenchmarkReadEvents(b *testing.B) {
	const total, page = 10_000, 100
	s := benchStore(b, 0)
	serial := 0
	for range total / 1000 {
		if _, err := s.Append(b.Context(), benchEvents(1000, withNothing, &serial)); err != nil {
			b.Fatal(err)
		}
	}
	var after int64
	cpu := cpuTime()
	for b.Loop() {
		evs, err := s.ReadEvents(b.Context(), "bench", after, page)
		if err != nil || len(evs) != page {
			b.Fatalf("ReadEvents = %d events, %v", len(evs), err)
		}
		after = (after + page) % (total - page)
	}
	reportEvents(b, page, cpu)
}

// reportEvents reports events per second of wall time and the process CPU
// time per event since start. The machine the figures come from is shared,
// so CPU time per event is the steadier figure; wall time includes fsync.
func reportEvents(b *testing.B, perOp int, start time.Duration) {
	events := float64(perOp) * float64(b.N)
	b.ReportMetric(events/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(cpuTime()-start)/events, "cpu-ns/event")
}

// cpuTime is the user and system CPU time of the process so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkSettle writes what the dispatcher's group-commit settler writes
// under load: one Settle call (one durable transaction) carrying the
// settlements of 50 subscriptions, each 20 successful delivery attempts, a
// cursor move and the success and activity times.
func BenchmarkSettle(b *testing.B) {
	const subs, perSub = 50, 20
	s := openTemp(b)
	ctx := b.Context()
	if _, _, err := s.PutTopic(ctx, herald.Topic{Name: "bench"}.WithDefaults()); err != nil {
		b.Fatal(err)
	}
	now := time.Now().UTC()
	items := make([]herald.SettleItem, subs)
	for i := range items {
		id := fmt.Sprintf("sub_%03d", i)
		sub := herald.Subscription{ID: id, Topic: "bench", State: herald.StateActive,
			Retry: herald.DefaultRetryPolicy, Timeout: herald.DefaultTimeout, MaxInFlight: herald.DefaultMaxInFlight,
			CreatedAt: now, UpdatedAt: now}
		if err := s.CreateSubscription(ctx, sub, herald.StartPosition{}); err != nil {
			b.Fatal(err)
		}
		epoch, err := s.AcquireLease(ctx, id, "node-1", now, time.Hour)
		if err != nil {
			b.Fatal(err)
		}
		items[i] = herald.SettleItem{SubscriptionID: id, Epoch: epoch}
	}
	var seq int64
	cpu := cpuTime()
	for b.Loop() {
		at := time.Now().UTC()
		for i := range items {
			it := &items[i]
			it.Attempts = it.Attempts[:0]
			for j := range perSub {
				it.Attempts = append(it.Attempts, herald.Attempt{Topic: "bench", Seq: seq + int64(j) + 1,
					EventID: herald.NewID(at), Attempt: 1, Time: at, Outcome: herald.OutcomeSuccess,
					StatusCode: 200, Latency: 3 * time.Millisecond, Response: `{"ok":true}`})
			}
			it.Cursors = append(it.Cursors[:0], herald.Cursor{Topic: "bench", Seq: seq + perSub})
			it.LastSuccess, it.Activity = at, at
		}
		seq += perSub
		// Like the engine's settler, whose context cannot be canceled:
		// with a cancelable one the cgo driver runs every statement on a
		// goroutine of its own, to interrupt it.
		errs, err := s.Settle(context.WithoutCancel(ctx), items)
		if err != nil {
			b.Fatal(err)
		}
		for _, err := range errs {
			if err != nil {
				b.Fatal(err)
			}
		}
	}
	attempts := float64(subs * perSub * b.N)
	b.ReportMetric(attempts/b.Elapsed().Seconds(), "attempts/s")
	b.ReportMetric(float64(cpuTime()-cpu)/attempts, "cpu-ns/attempt")
}
