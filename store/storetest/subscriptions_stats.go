package storetest

import (
	"testing"
	"time"

	"github.com/heraldhq/herald"
)

// runDeliveryStats checks what settlements keep of successful deliveries
// in place of an attempt-log row each (ADR 0009): totals add up, the
// histogram adds bucket by bucket, the sample keeps the newest attempts up
// to the limit across settlements, a rejected item adds nothing, and the
// stats go with the subscription.
func runDeliveryStats(t *testing.T, open func(t *testing.T) SubscriptionTestStore) {
	t.Parallel()
	s := open(t)
	subTopic(t, s, "orders", 0)
	const id = "sub_stats"
	createSub(t, s, plainSub(id, "orders"), herald.StartPosition{})
	if st, err := s.DeliveryStats(t.Context(), id); err != nil || st.Delivered != 0 || len(st.Sample) != 0 || !st.UpdatedAt.IsZero() {
		t.Fatalf("DeliveryStats before any settlement = %+v, %v; want zero", st, err)
	}
	epoch := lease(t, s, id)

	success := func(seq int, latency time.Duration) herald.Attempt {
		return herald.Attempt{Topic: "orders", Seq: int64(seq), EventID: "e" + string(rune('a'+seq)), Attempt: 1, Time: at(seq),
			Outcome: herald.OutcomeSuccess, StatusCode: 204, Latency: latency, Response: "ok\x00" + string(rune('a'+seq))}
	}
	delta := func(limit int, failed int64, from, to int, latency time.Duration, when time.Time) *herald.StatsDelta {
		d := &herald.StatsDelta{Failed: failed, At: when}
		for i := from; i <= to; i++ {
			d.Success(success(i, latency), limit)
		}
		return d
	}
	settleOK(t, s, id, epoch, herald.Settlement{Stats: delta(3, 2, 1, 2, 3*time.Millisecond, at(10))})
	settleOK(t, s, id, epoch, herald.Settlement{Stats: delta(3, 1, 3, 4, 700*time.Millisecond, at(11))})

	// A stale epoch's stats are not added.
	if errs := settle(t, s, herald.SettleItem{SubscriptionID: id, Epoch: epoch + 1,
		Settlement: herald.Settlement{Stats: delta(3, 5, 5, 9, time.Millisecond, at(12))}}); errs[0] == nil {
		t.Fatal("a settlement with an epoch ahead of the lease was applied")
	}

	st, err := s.DeliveryStats(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	if st.Delivered != 4 || st.Failed != 3 || !st.UpdatedAt.Equal(at(11)) {
		t.Fatalf("stats = delivered %d, failed %d, updated %v; want 4, 3, %v", st.Delivered, st.Failed, st.UpdatedAt, at(11))
	}
	var want herald.LatencyHistogram
	for range 2 {
		want.Observe(3 * time.Millisecond)
		want.Observe(700 * time.Millisecond)
	}
	if st.Latency != want {
		t.Fatalf("latency histogram = %v, want %v", st.Latency, want)
	}
	if len(st.Sample) != 3 {
		t.Fatalf("sample holds %d attempts, want the newest 3: %+v", len(st.Sample), st.Sample)
	}
	for i, a := range st.Sample {
		w := success(i+2, 3*time.Millisecond)
		if i > 0 {
			w.Latency = 700 * time.Millisecond
		}
		w.SubscriptionID, w.Response = id, "ok"+string(rune('a'+i+2)) // NUL bytes are dropped
		if a != w {
			t.Errorf("sample[%d] = %+v, want %+v", i, a, w)
		}
	}

	// A smaller limit trims the stored sample too; 0 keeps none.
	settleOK(t, s, id, epoch, herald.Settlement{Stats: delta(1, 0, 5, 5, time.Millisecond, at(12))})
	if st, _ := s.DeliveryStats(t.Context(), id); len(st.Sample) != 1 || st.Sample[0].Seq != 5 || st.Delivered != 5 {
		t.Fatalf("after a delta with limit 1: delivered %d, sample %+v; want 5 and seq 5 alone", st.Delivered, st.Sample)
	}
	settleOK(t, s, id, epoch, herald.Settlement{Stats: delta(0, 0, 6, 6, time.Millisecond, at(13))})
	if st, _ := s.DeliveryStats(t.Context(), id); len(st.Sample) != 0 || st.Delivered != 6 {
		t.Fatalf("after a delta with limit 0: delivered %d, sample %+v; want 6 and none", st.Delivered, st.Sample)
	}

	if err := s.DeleteSubscription(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	createSub(t, s, plainSub(id, "orders"), herald.StartPosition{})
	if st, err := s.DeliveryStats(t.Context(), id); err != nil || st.Delivered != 0 {
		t.Fatalf("a subscription created again with the same id has stats %+v, %v; want none", st, err)
	}
}
