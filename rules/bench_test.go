package rules

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/channel"
	"github.com/heraldhq/herald/engine"
	"github.com/heraldhq/herald/store/sqlite"
)

// countingPublisher stands in for the engine's publisher: the benchmark
// measures the rule (decode, window, CEL, the state transaction), and the
// flagger emits rarely, so it counts the emits and commits the state.
type countingPublisher struct {
	st herald.StateStore
	n  int
}

func (p *countingPublisher) CommitState(ctx context.Context, params engine.PublishParams, b herald.StateBatch) ([]herald.AppendResult, error) {
	p.n += len(params.Events)
	if _, err := p.st.CommitStateBatch(ctx, b); err != nil {
		return nil, err
	}
	return make([]herald.AppendResult, len(params.Events)), nil
}

// BenchmarkFlaggerSQLite runs the seed's flagger (sliding 2m sum per
// wallet, "value > 10000") over 100,000 wallets on a SQLite store, in the
// batches the engine hands a rule (1,000 events, one state transaction
// each). Reported: input events per second and state bytes per key.
//
//	go test -run '^$' -bench FlaggerSQLite -benchtime 200000x ./rules/
func BenchmarkFlaggerSQLite(b *testing.B) {
	st, err := sqlite.Open(b.Context(), filepath.Join(b.TempDir(), "bench.db"), sqlite.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	pub := &countingPublisher{st: st}
	ruleCh, _ := NewChannels(Deps{State: st, Publisher: pub})
	spec := `{"input":"deposits","key":"wallet_id","window":{"kind":"sliding","size":"2m"},
		"aggregate":{"op":"sum","field":"amount"},"when":"value > 10000","emit":{"topic":"wallets.flagged"}}`
	sub := &herald.Subscription{ID: RulePrefix + "flagger", Channel: ChannelRule, Config: []byte(spec)}
	sink, err := ruleCh.Open(b.Context(), sub)
	if err != nil {
		b.Fatal(err)
	}
	batcher := sink.(channel.Batcher)
	const keys = 100000
	t0 := time.Now()
	batch := make([]channel.Delivery, 0, batchEvents)
	flush := func() {
		for _, r := range batcher.DeliverBatch(b.Context(), batch) {
			if r.Outcome != herald.Delivered {
				b.Fatalf("batch failed: %+v", r)
			}
		}
		batch = batch[:0]
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		w := i % keys
		ev := &herald.Event{Topic: "deposits", Seq: int64(i + 1), Key: fmt.Sprint(w),
			Time:    t0.Add(time.Duration(i) * time.Millisecond),
			Payload: fmt.Appendf(nil, `{"wallet_id":"w%d","amount":%d}`, w, 1000+i%7000), ContentType: "application/json"}
		batch = append(batch, channel.Delivery{Event: ev, Attempt: 1})
		if len(batch) == batchEvents {
			flush()
		}
	}
	if len(batch) > 0 {
		flush()
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	entries, err := st.ListState(b.Context(), Owner(ChannelRule, "flagger"), "", 1000)
	if err != nil || len(entries) == 0 {
		b.Fatalf("state: %d, %v", len(entries), err)
	}
	var bytes int
	for _, e := range entries {
		bytes += len(e.Key) + len(e.Value) + 16
	}
	b.ReportMetric(float64(bytes)/float64(len(entries)), "state-bytes/key")
	b.ReportMetric(float64(pub.n), "emitted")
}
