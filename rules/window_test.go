package rules

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/channel"
	"github.com/heraldhq/herald/engine"
	"github.com/heraldhq/herald/store/sqlite"
)

// runRule feeds events (key, amount, seconds after t0) to a rule one by one
// and returns the triggering seqs of what it emitted.
func runRule(t *testing.T, window string, in [][3]any) []int64 {
	t.Helper()
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "w.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	pub := &recordingPublisher{st: st}
	ruleCh, _ := NewChannels(Deps{State: st, Publisher: pub})
	spec := `{"input":"in","window":` + window + `,"aggregate":{"op":"count"},"when":"value >= 3","emit":{"topic":"out"}}`
	sink, err := ruleCh.Open(t.Context(), &herald.Subscription{ID: RulePrefix + "w", Channel: ChannelRule, Config: []byte(spec)})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i, e := range in {
		ev := &herald.Event{Topic: "in", Seq: int64(i + 1), Key: e[0].(string), Time: t0.Add(time.Duration(e[2].(int)) * time.Second),
			Payload: fmt.Appendf(nil, `{"amount":%d}`, e[1].(int))}
		// Every event twice: a redelivery must change nothing.
		for range 2 {
			if r := sink.(channel.Batcher).DeliverBatch(t.Context(), []channel.Delivery{{Event: ev, Attempt: 1}}); r[0].Outcome != herald.Delivered {
				t.Fatalf("event %d: %+v", i, r[0])
			}
		}
	}
	return pub.seqs
}

// recordingPublisher records the triggering seqs of what a rule emits and
// commits the state (the emit topic is none of the store's).
type recordingPublisher struct {
	st   herald.StateStore
	seqs []int64
}

func (p *recordingPublisher) CommitState(ctx context.Context, params engine.PublishParams, b herald.StateBatch) ([]herald.AppendResult, error) {
	if _, err := p.st.CommitStateBatch(ctx, b); err != nil {
		return nil, err
	}
	for _, e := range params.Events {
		var body struct {
			Event struct {
				Seq int64 `json:"seq"`
			} `json:"event"`
		}
		_ = json.Unmarshal(e.Payload, &body)
		p.seqs = append(p.seqs, body.Event.Seq)
	}
	return make([]herald.AppendResult, len(params.Events)), nil
}

func TestWindows(t *testing.T) {
	in := [][3]any{{"a", 1, 0}, {"a", 1, 10}, {"a", 1, 59}, {"a", 1, 61}, {"a", 1, 62}, {"a", 1, 200}, {"a", 1, 210}, {"a", 1, 215}}
	cases := []struct {
		window string
		want   string
	}{
		// tumbling 1m: [0,60) has 3 events (fires at seq 3); [60,120) has 2; [180,240) has 3 (seq 8).
		{`{"kind":"tumbling","size":"1m"}`, "[3 8]"},
		// sliding 1m: 3 events within any minute at seq 3 (0,10,59); still true at 4 (10,59,61) and 5; false at 6; true again at 8.
		{`{"kind":"sliding","size":"1m"}`, "[3 8]"},
		// session gap 100s: 0..62 is one session (fires at 3); 200.. a new one (fires at 8).
		{`{"kind":"session","gap":"100s"}`, "[3 8]"},
		// session gap 30s: 0,10 | 59,61,62 (fires at 5) | 200,210,215 (fires at 8).
		{`{"kind":"session","gap":"30s"}`, "[5 8]"},
	}
	for _, tc := range cases {
		if got := fmt.Sprint(runRule(t, tc.window, in)); got != tc.want {
			t.Errorf("window %s emitted at seqs %s, want %s", tc.window, got, tc.want)
		}
	}
}
