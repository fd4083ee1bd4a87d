package rules

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/channel"
	"github.com/heraldhq/herald/engine"
	"github.com/heraldhq/herald/store/sqlite"
)

// failingStore fails the next state commits it is told to, before
// writing anything: a crash or a store error at the worst moment.
type failingStore struct {
	herald.Store
	fail int
}

func (f *failingStore) CommitStateBatch(ctx context.Context, b herald.StateBatch) ([]herald.AppendResult, error) {
	if f.fail > 0 {
		f.fail--
		return nil, errors.New("the disk is gone")
	}
	return f.Store.CommitStateBatch(ctx, b)
}

// TestEmitCommitsWithState delivers a batch that makes the flagger emit
// through the engine's real publisher and committer, to an emit topic
// without deduplication (dedup_window 0). The first commit fails: then
// neither the state nor the event may exist, and the batch delivered
// again emits the event exactly once. Delivered a third time (a
// redelivery after the commit) it emits nothing. A sink whose lease has
// moved (a stale epoch) commits nothing at all.
func TestEmitCommitsWithState(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "e.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, name := range []string{"deposits", "wallets.flagged"} {
		tp := herald.Topic{Name: name}.WithDefaults()
		tp.DedupWindow = 0
		if _, _, err := st.PutTopic(ctx, tp); err != nil {
			t.Fatal(err)
		}
	}
	sub := herald.Subscription{ID: RulePrefix + "flagger", Topic: "deposits", Channel: ChannelRule, State: herald.StateActive,
		Config: []byte(`{"input":"deposits","key":"wallet_id","window":{"kind":"sliding","size":"2m"},
			"aggregate":{"op":"sum","field":"amount"},"when":"value > 10000","emit":{"topic":"wallets.flagged"}}`),
		Retry: herald.DefaultRetryPolicy, Timeout: time.Minute, MaxInFlight: 1, CreatedAt: time.Now(), UpdatedAt: time.Now()}
	if err := st.CreateSubscription(ctx, sub, herald.StartPosition{Earliest: true}); err != nil {
		t.Fatal(err)
	}
	epoch, err := st.AcquireLease(ctx, sub.ID, "node-a", time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	fs := &failingStore{Store: st}
	committer := engine.NewCommitter(fs, engine.CommitterConfig{}, nil, nil)
	if err := committer.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer committer.Stop(context.WithoutCancel(ctx))
	pub := engine.NewPublisher(engine.NewTopics(fs, engine.TopicsConfig{}), committer, engine.PublisherConfig{}, nil, nil)
	ruleCh, _ := NewChannels(Deps{State: fs, Publisher: pub})

	var batch []channel.Delivery
	now := time.Now().UTC()
	for _, amount := range []string{"6000", "5000"} {
		evs := []*herald.Event{{Topic: "deposits", Time: now, ContentType: "application/json",
			Payload: []byte(`{"wallet_id":"w1","amount":` + amount + `}`)}}
		if _, err := st.Append(ctx, evs); err != nil {
			t.Fatal(err)
		}
		batch = append(batch, channel.Delivery{Event: evs[0], Attempt: 1})
	}
	deliver := func(p channel.Progress) herald.DeliveryOutcome {
		t.Helper()
		sink, err := ruleCh.Open(ctx, &sub) // a fresh sink: the state comes from the store, as after a crash
		if err != nil {
			t.Fatal(err)
		}
		defer sink.Close(ctx)
		res := sink.(channel.ProgressBatcher).DeliverBatchAt(ctx, batch, p)
		for _, r := range res[1:] {
			if r.Outcome != res[0].Outcome {
				t.Fatalf("a batch partly delivered: %+v", res)
			}
		}
		return res[0].Outcome
	}
	flags := func() int {
		t.Helper()
		evs, err := st.ReadEvents(ctx, "wallets.flagged", 0, 10)
		if err != nil {
			t.Fatal(err)
		}
		return len(evs)
	}
	cursor := func() int64 {
		t.Helper()
		cs, err := st.Cursors(ctx, sub.ID)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cs {
			if c.Topic == "deposits" {
				return c.Seq
			}
		}
		return 0
	}
	progress := channel.Progress{SubscriptionID: sub.ID, Epoch: epoch, Cursors: []herald.Cursor{{Topic: "deposits", Seq: 2}}}

	// The lease moved: nothing commits, whatever the batch computes.
	stale := progress
	stale.Epoch = epoch + 1
	if o := deliver(stale); o != herald.Failed {
		t.Fatalf("a stale epoch: %v, want failed", o)
	}
	fs.fail = 1
	if o := deliver(progress); o != herald.Failed {
		t.Fatalf("a failing commit: %v, want failed", o)
	}
	if n := flags(); n != 0 {
		t.Fatalf("%d events emitted by batches that did not commit", n)
	}
	if _, err := st.GetState(ctx, Owner(ChannelRule, "flagger"), "w1"); !herald.IsCode(err, herald.CodeNotFound) {
		t.Fatalf("state written by batches that did not commit: %v", err)
	}
	if c := cursor(); c != 0 {
		t.Fatalf("cursor %d moved by batches that did not commit", c)
	}
	for range 2 { // the commit, then a redelivery of the committed batch
		if o := deliver(progress); o != herald.Delivered {
			t.Fatalf("delivery: %v", o)
		}
		if n := flags(); n != 1 {
			t.Fatalf("%d flags emitted, want exactly 1", n)
		}
		if c := cursor(); c != 2 {
			t.Fatalf("cursor at %d, want 2: it commits with the state", c)
		}
	}
}
