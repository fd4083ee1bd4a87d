package channel_test

import (
	"strings"
	"sync/atomic"
	"testing"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/channel"
)

func TestTemplate(t *testing.T) {
	ev := &herald.Event{Topic: "orders.eu", Key: "k 1", Type: "order.created"}
	upper := func(name, v string) string { return name + "=" + strings.ToUpper(v) }
	for _, tc := range []struct{ text, want string }{
		{"fixed", "fixed"},
		{"", ""},
		{"{topic}", "topic=ORDERS.EU"},
		{"a/{key}/{type}/z", "a/key=K 1/type=ORDER.CREATED/z"},
		{"{topic}{key}", "topic=ORDERS.EUkey=K 1"},
	} {
		tpl, err := channel.ParseTemplate(tc.text)
		if err != nil {
			t.Fatalf("%q: %v", tc.text, err)
		}
		if got := tpl.Expand(ev, upper); got != tc.want {
			t.Errorf("%q expands to %q; want %q", tc.text, got, tc.want)
		}
		if tpl.String() != tc.text {
			t.Errorf("String %q; want %q", tpl.String(), tc.text)
		}
	}
	for _, bad := range []string{"{", "}", "a{b", "a}b", "{id}", "{}", "{topic"} {
		if _, err := channel.ParseTemplate(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
	tpl, _ := channel.ParseTemplate("a.{key}.b")
	if lits := tpl.Literals(); len(lits) != 2 || lits[0] != "a." || lits[1] != ".b" {
		t.Errorf("Literals %q", lits)
	}
}

func TestKeepKeyOrder(t *testing.T) {
	ev := func(key string) channel.Delivery { return channel.Delivery{Event: &herald.Event{Topic: "t", Key: key}} }
	batch := []channel.Delivery{ev("a"), ev("b"), ev("a"), ev(""), ev("b"), ev("a"), ev("")}
	ok, bad := herald.DeliveryResult{Outcome: herald.Delivered}, herald.DeliveryResult{Outcome: herald.Failed, Err: "timeout"}
	res := []herald.DeliveryResult{ok, ok, bad, bad, ok, ok, ok}
	channel.KeepKeyOrder(batch, res)
	want := []herald.DeliveryOutcome{herald.Delivered, herald.Delivered, herald.Failed, herald.Failed, herald.Delivered, herald.Failed, herald.Delivered}
	for i := range res {
		if res[i].Outcome != want[i] {
			t.Errorf("event %d (key %q): %v; want %v", i, batch[i].Event.Key, res[i].Outcome, want[i])
		}
	}
	if res[5].Err != channel.ReasonOrder || res[2].Err != "timeout" {
		t.Errorf("reasons %q, %q", res[5].Err, res[2].Err)
	}
}

func TestPoolSharesAndCloses(t *testing.T) {
	var opened, closed atomic.Int32
	p := channel.NewPool(func(int32) { closed.Add(1) })
	open := func() (int32, error) { return opened.Add(1), nil }
	a, relA, _ := p.Acquire("x", open)
	b, relB, _ := p.Acquire("x", open)
	c, relC, _ := p.Acquire("y", open)
	if a != b || a == c || opened.Load() != 2 {
		t.Fatalf("clients %d %d %d, opened %d: want x shared, y apart", a, b, c, opened.Load())
	}
	relA()
	relA() // twice is once
	if closed.Load() != 0 || len(p.Clients()) != 2 {
		t.Fatalf("closed %d with a reference left", closed.Load())
	}
	relB()
	relC()
	if closed.Load() != 2 || len(p.Clients()) != 0 {
		t.Fatalf("closed %d, holding %d; want both closed", closed.Load(), len(p.Clients()))
	}
	if d, rel, _ := p.Acquire("x", open); d == a {
		t.Error("a closed client was handed out again")
	} else {
		rel()
	}
}
