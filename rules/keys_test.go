package rules

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/channel"
	"github.com/heraldhq/herald/store/sqlite"
)

// TestMaxKeysRefusesNewKeysOnly fills a view to its max_keys, then checks
// that events of new keys are refused (counted in the metric, no row)
// while known keys go on, across a reopen of the sink (the count comes
// from the store), and that the gauge shows the keys held.
func TestMaxKeysRefusesNewKeysOnly(t *testing.T) {
	t.Parallel()
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "k.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	reg := prometheus.NewRegistry()
	_, viewCh := NewChannels(Deps{State: st, Publisher: &recordingPublisher{st: st}, Registry: reg})
	sub := &herald.Subscription{ID: ViewPrefix + "bal", Channel: ChannelView,
		Config: []byte(`{"input":"in","aggregate":{"op":"sum","field":"amount"},"max_keys":3}`)}
	seq := int64(0)
	feed := func(keys ...string) {
		t.Helper()
		sink, err := viewCh.Open(t.Context(), sub)
		if err != nil {
			t.Fatal(err)
		}
		var batch []channel.Delivery
		for _, k := range keys {
			seq++
			batch = append(batch, channel.Delivery{Event: &herald.Event{Topic: "in", Seq: seq, Key: k, Payload: []byte(`{"amount":1}`)}})
		}
		for _, r := range sink.(channel.Batcher).DeliverBatch(t.Context(), batch) {
			if r.Outcome != herald.Delivered {
				t.Fatalf("batch: %+v", r)
			}
		}
		if got := testutil.ToFloat64(viewCh.m.keys.WithLabelValues("view")); got != 3 {
			t.Fatalf("herald_rule_state_keys = %v, want 3", got)
		}
		_ = sink.Close(t.Context())
	}
	feed("a", "b", "c", "d", "a", "e") // d and e are refused; a counts twice
	feed("f", "b", "c")                // after a reopen: f refused, b and c go on
	rows, err := st.ListState(t.Context(), Owner(ChannelView, "bal"), "", 10)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]any{}
	for _, e := range rows {
		r, _ := ViewRow("sum", e)
		got[r.Key] = r.Value
	}
	if fmt.Sprint(got) != "map[a:2 b:2 c:2]" {
		t.Fatalf("rows %v", got)
	}
	if n := testutil.ToFloat64(viewCh.m.events.WithLabelValues("view", "refused")); n != 3 {
		t.Fatalf("refused events = %v, want 3", n)
	}
	if _, err := ParseViewSpec(json.RawMessage(`{"input":"in","max_keys":-1}`)); !herald.IsCode(err, herald.CodeInvalid) {
		t.Fatalf("max_keys -1: %v", err)
	}
}
