package rules

import (
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/channel"
	"github.com/heraldhq/herald/store/sqlite"
)

// TestPartitionsSplitKeys runs the flagger in three partitions, each sink
// fed the whole input as each partition's subscription is: every key's
// state lives in exactly one partition, and together they emit what the
// rule in one partition emits.
func TestPartitionsSplitKeys(t *testing.T) {
	t.Parallel()
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "p.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	const keys = 10
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var batch []channel.Delivery
	for i := range 400 {
		batch = append(batch, channel.Delivery{Attempt: 1, Event: &herald.Event{Topic: "deposits", Seq: int64(i + 1),
			Time: t0.Add(time.Duration(i) * time.Second), ContentType: "application/json",
			Payload: fmt.Appendf(nil, `{"wallet_id":"w%d","amount":%d}`, i%keys, 1000+(i*7919)%4000)}})
	}
	run := func(name string, parts int) ([]int64, []string) {
		t.Helper()
		pub := &recordingPublisher{st: st}
		ruleCh, _ := NewChannels(Deps{State: st, Publisher: pub})
		spec := fmt.Sprintf(`{"input":"deposits","key":"wallet_id","window":{"kind":"sliding","size":"30s"},
			"aggregate":{"op":"sum","field":"amount"},"when":"value > 9000","emit":{"topic":"flags"},"partitions":%d}`, parts)
		var owners []string
		for i := range parts {
			sink, err := ruleCh.Open(t.Context(), &herald.Subscription{ID: PartitionID(name, i), Channel: ChannelRule, Config: []byte(spec)})
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range sink.(channel.Batcher).DeliverBatch(t.Context(), batch) {
				if r.Outcome != herald.Delivered {
					t.Fatalf("partition %d: %+v", i, r)
				}
			}
			_ = sink.Close(t.Context())
			owners = append(owners, PartitionOwner(name, i))
		}
		slices.Sort(pub.seqs)
		return pub.seqs, owners
	}
	want, _ := run("one", 1)
	got, owners := run("three", 3)
	if len(want) == 0 || !slices.Equal(got, want) {
		t.Fatalf("three partitions emitted for %v; one emits for %v", got, want)
	}
	held := map[string]int{}
	for i, owner := range owners {
		rows, err := st.ListState(t.Context(), owner, "", 100)
		if err != nil {
			t.Fatal(err)
		}
		if len(rows) == 0 || len(rows) == keys {
			t.Errorf("partition %d holds %d of %d keys", i, len(rows), keys)
		}
		for _, r := range rows {
			held[r.Key]++
		}
	}
	for k, n := range held {
		if n != 1 {
			t.Errorf("key %s is held by %d partitions", k, n)
		}
	}
	if len(held) != keys {
		t.Errorf("%d keys held, want %d", len(held), keys)
	}
	if _, err := ParseSpec([]byte(`{"input":"a","when":"true","aggregate":{"op":"count"},"emit":{"topic":"b"},"partitions":65}`)); !herald.IsCode(err, herald.CodeInvalid) {
		t.Errorf("65 partitions: %v, want invalid", err)
	}
}
