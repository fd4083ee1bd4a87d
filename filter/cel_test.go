package filter

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald"
)

// pbDecoder stands in for the schema registry: it renders the payloads of
// topic "pb" (here, any bytes) as the JSON it was given.
type pbDecoder map[string]string

func (d pbDecoder) JSON(_ context.Context, topic string, payload []byte, _ string) ([]byte, error) {
	if js, ok := d[string(payload)]; ok && topic == "pb" {
		return []byte(js), nil
	}
	return payload, nil
}

func TestCEL(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	ev := func(typ, ct, payload string) *herald.Event {
		return &herald.Event{Topic: "orders", Seq: 7, ID: "e1", Type: typ, Key: "k1", Time: at, ContentType: ct, Payload: []byte(payload)}
	}
	dec := pbDecoder{"\x08\x01": `{"amount":"5000","wallet_id":"w1"}`}
	for _, tc := range []struct {
		filter string
		ev     *herald.Event
		want   bool
	}{
		{`"event.data.amount > 100"`, ev("t", "application/json", `{"amount":150}`), true},
		{`"event.data.amount > 100"`, ev("t", "application/json", `{"amount":50}`), false},
		{`"event.data.amount > 100"`, ev("t", "application/json", `{}`), false}, // a missing member: no match
		{`"event.data.amount > 100"`, ev("t", "text/plain", `{"amount":150}`), false},
		{`"event.data == null"`, ev("t", "application/octet-stream", "\x00"), true},
		{`"event.topic == 'orders' && event.seq == 7 && event.id == 'e1' && event.key == 'k1'"`, ev("t", "", ``), true},
		{`"event.time == timestamp('2026-12-07T12:00:00Z')"`, ev("t", "", ``), true},
		{`"event.type.startsWith('order.')"`, ev("order.created", "", ``), true},
		{`"event.data.tags.exists(t, t == 'vip')"`, ev("t", "application/json", `{"tags":["new","vip"]}`), true},
		{`{"types":["order.*"],"cel":"event.data.n == 1"}`, ev("refund.x", "application/json", `{"n":1}`), false},
		{`{"types":["order.*"],"cel":"event.data.n == 1"}`, ev("order.x", "application/json", `{"n":1}`), true},
		{`{"payload":{"n":[1]},"cel":"event.key == 'k1'"}`, ev("t", "application/json", `{"n":1}`), true},
		{`{"payload":{"n":[1]},"cel":"event.key == 'k2'"}`, ev("t", "application/json", `{"n":1}`), false},
		// A runaway expression stops at the cost limit and does not match.
		{`"[1,2,3,4,5,6,7,8,9,10].all(a, [1,2,3,4,5,6,7,8,9,10].all(b, [1,2,3,4,5,6,7,8,9,10].all(c, [1,2,3,4,5,6,7,8,9,10].all(d, [1,2,3,4,5,6,7,8,9,10].all(e, a > 0)))))"`, ev("t", "", ``), false},
	} {
		f, err := Parse([]byte(tc.filter))
		if err != nil {
			t.Fatalf("%s: %v", tc.filter, err)
		}
		if got := f.MatchEvent(t.Context(), tc.ev, nil); got != tc.want {
			t.Errorf("%s over %s %q: %v, want %v", tc.filter, tc.ev.ContentType, tc.ev.Payload, got, tc.want)
		}
	}

	// Protobuf payloads are read through the decoder, by CEL and by
	// payload policies alike; without one they have no data.
	pb := &herald.Event{Topic: "pb", Type: "deposit", ContentType: "application/protobuf", Payload: []byte("\x08\x01")}
	for _, src := range []string{`"double(event.data.amount) >= 5000.0 && event.data.wallet_id == 'w1'"`, `{"payload":{"wallet_id":["w1"]}}`} {
		f, err := Parse([]byte(src))
		if err != nil {
			t.Fatal(err)
		}
		if !f.MatchEvent(t.Context(), pb, dec) {
			t.Errorf("%s does not match the protobuf deposit read through its schema", src)
		}
		if f.MatchEvent(t.Context(), pb, nil) {
			t.Errorf("%s matches the protobuf deposit without a decoder", src)
		}
	}
}

func TestCELErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ filter, field, detail string }{
		{`"event.sq > 1"`, "filter", "undefined field 'sq'"},
		{`"event.seq > 'a'"`, "filter", "no matching overload"},
		{`"event.seq"`, "filter", "gives int"},
		{`"nope > 1"`, "filter", "undeclared reference"},
		{`""`, "filter", "empty"},
		{`"` + strings.Repeat("a", MaxCELLen+1) + `"`, "filter", "limit"},
		{`{"cel":"event.type +"}`, "filter.cel", "does not compile"},
		{`{"cel":["x"]}`, "filter.cel", "must be a string"},
		{`7`, "filter", "CEL expression"},
	} {
		_, err := Parse([]byte(tc.filter))
		e, ok := errors.AsType[*herald.Error](err)
		if !ok || e.Code != herald.CodeInvalid || e.Field != tc.field || !strings.Contains(e.Message, tc.detail) {
			t.Errorf("Parse(%.60s) = %v; want CodeInvalid on %s saying %q", tc.filter, err, tc.field, tc.detail)
		}
	}
}

func TestCELCanonical(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		` "event.seq > 1" `:                              `"event.seq \u003e 1"`,
		`{"cel":"event.seq > 1","types":["b","a"]}`:      `{"types":["a","b"],"cel":"event.seq \u003e 1"}`,
		`{"payload":{"n":[1]},"cel":"event.key == 'k'"}`: `{"payload":{"n":[1]},"cel":"event.key == 'k'"}`,
	} {
		f, err := Parse([]byte(in))
		if err != nil {
			t.Fatal(err)
		}
		if f.String() != want {
			t.Errorf("canonical of %s = %s, want %s", in, f, want)
		}
		again, err := Parse([]byte(f.String()))
		if err != nil || again.String() != want {
			t.Errorf("canonical %s parses to %v, %v", f, again, err)
		}
	}
}

// BenchmarkCEL is a CEL filter over a small JSON payload: what a
// subscription with one pays per event.
func BenchmarkCEL(b *testing.B) {
	f, err := Parse([]byte(`"event.data.amount > 100 && event.type.startsWith('order.')"`))
	if err != nil {
		b.Fatal(err)
	}
	ev := &herald.Event{Topic: "orders", Seq: 1, Type: "order.created", ContentType: "application/json",
		Payload: []byte(`{"amount":150,"currency":"EUR","customer":{"id":"c1","tier":"gold"}}`)}
	ctx := context.Background()
	for b.Loop() {
		if !f.MatchEvent(ctx, ev, nil) {
			b.Fatal("no match")
		}
	}
}
