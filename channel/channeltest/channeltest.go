// Package channeltest is the conformance suite every channel passes
// against its real service, as store/storetest is for stores: what a
// Delivered result promises (the message is at the destination, payload
// byte for byte, with the event's id and key), how failures are
// classified (an unreachable or hung destination is Failed, within the
// deadline, never Gone), batching (one result per event, in order), per-key
// order, secrets kept out of Public, config validation, and Close.
//
// A channel's test calls Run with a Harness that knows how to make a fresh
// destination on the service and read back what reached it.
package channeltest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/channel"
)

// Message is what a destination received, as the harness reads it back.
type Message struct {
	EventID string // the Herald event id the message carries (header, property, field)
	Key     string // the event key it carries, "" when none
	Payload []byte
}

// Harness describes a channel under test and its service.
type Harness struct {
	// Channel is the channel under test, able to reach the service (and
	// the loopback listeners the suite opens: private destinations
	// allowed).
	Channel channel.Channel
	// Config returns a caller's config for a fresh destination on the
	// service (a new topic, queue, stream, subject or endpoint), so tests
	// running in parallel never see each other's messages.
	Config func(t *testing.T) json.RawMessage
	// ConfigAt returns a caller's config like Config's but pointing at
	// the service address addr ("127.0.0.1:port"), where the suite runs a
	// listener that accepts connections and never answers, or none at all.
	ConfigAt func(t *testing.T, addr string) json.RawMessage
	// ChannelAt, for a channel whose service address is its own setting
	// rather than a config's (a mail server, an SMS provider), returns a
	// channel like Channel's sending to addr; the suite then uses it with
	// Config's config instead of ConfigAt. Set one of the two.
	ChannelAt func(t *testing.T, addr string) channel.Channel
	// Received returns what the destination of a validated config holds
	// so far, in arrival order. The suite polls it until what it waits
	// for is there.
	Received func(t *testing.T, config json.RawMessage) []Message
	// Secrets are the config members Public must remove ("password").
	// SecretConfig returns a caller's config that sets each of them
	// (nil when the channel has no secrets).
	Secrets      []string
	SecretConfig func(t *testing.T) json.RawMessage
	// Timeout is the subscription timeout the suite gives deliveries to
	// an unresponsive service; default 2s.
	Timeout time.Duration
}

// Run runs the suite.
func Run(t *testing.T, h Harness) {
	if h.Timeout <= 0 {
		h.Timeout = 2 * time.Second
	}
	t.Run("ValidateIsStable", func(t *testing.T) { t.Parallel(); testValidate(t, h) })
	t.Run("UnknownMemberRefused", func(t *testing.T) { t.Parallel(); testUnknownMember(t, h) })
	t.Run("PublicHidesSecrets", func(t *testing.T) { t.Parallel(); testSecrets(t, h) })
	t.Run("DeliveredMeansReceived", func(t *testing.T) { t.Parallel(); testDelivered(t, h) })
	t.Run("BatchOneResultPerEvent", func(t *testing.T) { t.Parallel(); testBatch(t, h) })
	t.Run("PerKeyOrder", func(t *testing.T) { t.Parallel(); testOrder(t, h) })
	t.Run("UnreachableIsFailed", func(t *testing.T) { t.Parallel(); testUnreachable(t, h) })
	t.Run("HungReturnsByDeadline", func(t *testing.T) { t.Parallel(); testHung(t, h) })
	t.Run("CloseAndReopen", func(t *testing.T) { t.Parallel(); testReopen(t, h) })
}

// validate returns the channel's canonical form of a caller's config.
func validate(t *testing.T, h Harness, config json.RawMessage) json.RawMessage {
	t.Helper()
	canon, err := h.Channel.Validate(t.Context(), channel.ValidateParams{Config: config, Admin: true})
	if err != nil {
		t.Fatalf("Validate(%s): %v", config, err)
	}
	return canon
}

// sub returns an active subscription over the config, as the engine opens.
func sub(t *testing.T, h Harness, config json.RawMessage) *herald.Subscription {
	return &herald.Subscription{
		ID: "sub_" + strings.ToLower(strings.ReplaceAll(t.Name(), "/", "_")), Topic: "conformance.>",
		Channel: h.Channel.Name(), Config: validate(t, h, config), State: herald.StateActive,
		Retry: herald.DefaultRetryPolicy, Timeout: h.Timeout, MaxInFlight: 16,
	}
}

// open opens a sink and closes it when the test ends.
func open(t *testing.T, h Harness, s *herald.Subscription) channel.Sink {
	t.Helper()
	sink, err := h.Channel.Open(t.Context(), s)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := sink.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return sink
}

// events returns n events of the topic with the keys (cycled; none when
// keys is empty) and payloads that differ, binary bytes included.
func events(topic string, n int, keys ...string) []*herald.Event {
	now := time.Now().UTC()
	out := make([]*herald.Event, n)
	for i := range out {
		out[i] = &herald.Event{
			ID: herald.NewID(now), Topic: topic, Seq: int64(i + 1), Type: "conformance.test", Time: now,
			ContentType: "application/json", Payload: fmt.Appendf(nil, `{"n":%d,"s":"é\u2028"}`, i),
		}
		if len(keys) > 0 {
			out[i].Key = keys[i%len(keys)]
		}
	}
	return out
}

// deliver sends the events, as one batch when the sink takes batches, and
// requires every one Delivered.
func deliver(t *testing.T, sink channel.Sink, evs []*herald.Event) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if b, ok := sink.(channel.Batcher); ok {
		batch := make([]channel.Delivery, len(evs))
		for i, e := range evs {
			batch[i] = channel.Delivery{Event: e, Attempt: 1}
		}
		res := b.DeliverBatch(ctx, batch)
		if len(res) != len(evs) {
			t.Fatalf("DeliverBatch of %d events answered %d results", len(evs), len(res))
		}
		for i, r := range res {
			if r.Outcome != herald.Delivered {
				t.Fatalf("event %d of the batch: outcome %v (%s %s)", i, r.Outcome, r.Err, r.Detail)
			}
		}
		return
	}
	for i, e := range evs {
		if r := sink.Deliver(ctx, e, 1); r.Outcome != herald.Delivered {
			t.Fatalf("event %d: outcome %v (%s %s)", i, r.Outcome, r.Err, r.Detail)
		}
	}
}

// waitReceived polls the destination until it holds every event (by id)
// and returns what it holds.
func waitReceived(t *testing.T, h Harness, config json.RawMessage, evs []*herald.Event) []Message {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := h.Received(t, config)
		missing := 0
		for _, e := range evs {
			if !slices.ContainsFunc(got, func(m Message) bool { return m.EventID == e.ID }) {
				missing++
			}
		}
		if missing == 0 {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 20s the destination holds %d messages; %d of the %d delivered events are missing", len(got), missing, len(evs))
		}
		time.Sleep(20 * time.Millisecond) // polling an outside service: no event to wait on
	}
}

func testValidate(t *testing.T, h Harness) {
	canon := validate(t, h, h.Config(t))
	again, err := h.Channel.Validate(t.Context(), channel.ValidateParams{Config: h.Channel.Public(canon), Previous: canon, Admin: true})
	if err != nil {
		t.Fatalf("Validate of the public form against the stored one: %v", err)
	}
	if !bytes.Equal(again, canon) {
		t.Errorf("an update with the public form changed the config:\n was %s\n now %s", canon, again)
	}
	if got := h.Channel.Destination(canon); strings.Contains(got, "?") {
		t.Errorf("Destination %q holds a query: it is shown in system events", got)
	}
}

func testUnknownMember(t *testing.T, h Harness) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(h.Config(t), &m); err != nil {
		t.Fatal(err)
	}
	m["no_such_member"] = json.RawMessage(`1`)
	bad, _ := json.Marshal(m)
	_, err := h.Channel.Validate(t.Context(), channel.ValidateParams{Config: bad, Admin: true})
	if he, ok := err.(*herald.Error); !ok || he.Code != herald.CodeInvalid || he.Field != "no_such_member" {
		t.Errorf("a config with an unknown member: %v; want invalid naming no_such_member", err)
	}
}

func testSecrets(t *testing.T, h Harness) {
	if h.SecretConfig == nil {
		t.Skip("the channel has no secrets")
	}
	canon := validate(t, h, h.SecretConfig(t))
	var public map[string]json.RawMessage
	if err := json.Unmarshal(h.Channel.Public(canon), &public); err != nil {
		t.Fatalf("Public is not a JSON object: %v", err)
	}
	var raw map[string]json.RawMessage
	_ = json.Unmarshal(canon, &raw)
	for _, name := range h.Secrets {
		if _, ok := public[name]; ok {
			t.Errorf("Public shows secret %q", name)
		}
		if v, ok := raw[name]; ok && bytes.Contains(h.Channel.Public(canon), bytes.Trim(v, `"`)) {
			t.Errorf("Public holds the value of secret %q", name)
		}
	}
	// An update that leaves the secrets out keeps them.
	again, err := h.Channel.Validate(t.Context(), channel.ValidateParams{Config: h.Channel.Public(canon), Previous: canon, Admin: true})
	if err != nil || !bytes.Equal(again, canon) {
		t.Errorf("an update without the secrets: %s, %v; want the stored config, secrets kept", again, err)
	}
}

func testDelivered(t *testing.T, h Harness) {
	config := h.Config(t)
	s := sub(t, h, config)
	sink := open(t, h, s)
	evs := events("conformance.one", 3, "k1", "")
	deliver(t, sink, evs)
	got := waitReceived(t, h, s.Config, evs)
	for _, e := range evs {
		i := slices.IndexFunc(got, func(m Message) bool { return m.EventID == e.ID })
		if !bytes.Equal(got[i].Payload, e.Payload) {
			t.Errorf("event %s arrived with payload %q, want %q byte for byte", e.ID, got[i].Payload, e.Payload)
		}
		if got[i].Key != e.Key {
			t.Errorf("event %s arrived with key %q, want %q", e.ID, got[i].Key, e.Key)
		}
	}
}

func testBatch(t *testing.T, h Harness) {
	config := h.Config(t)
	s := sub(t, h, config)
	sink := open(t, h, s)
	b, ok := sink.(channel.Batcher)
	if !ok {
		t.Skip("the channel takes one event at a time")
	}
	if l := b.BatchLimits(); l.MaxEvents < 1 {
		t.Errorf("BatchLimits %+v: MaxEvents must be at least 1", l)
	}
	evs := events("conformance.batch", min(50, b.BatchLimits().MaxEvents), "a", "b", "c")
	deliver(t, sink, evs)
	waitReceived(t, h, s.Config, evs)
}

func testOrder(t *testing.T, h Harness) {
	config := h.Config(t)
	s := sub(t, h, config)
	sink := open(t, h, s)
	evs := events("conformance.order", 30, "x", "y", "z")
	deliver(t, sink, evs)
	got := waitReceived(t, h, s.Config, evs)
	seqOf := map[string]int64{}
	for _, e := range evs {
		seqOf[e.ID] = e.Seq
	}
	last := map[string]int64{}
	for _, m := range got {
		seq, ok := seqOf[m.EventID]
		if !ok {
			continue
		}
		if seq < last[m.Key] {
			t.Errorf("key %q: seq %d arrived after %d", m.Key, seq, last[m.Key])
		}
		last[m.Key] = seq
	}
}

func testUnreachable(t *testing.T, h Harness) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close() // nothing listens there now
	ch, s := at(t, h, addr)
	sink, err := ch.Open(t.Context(), s)
	if err != nil {
		t.Fatalf("Open must not wait for the service, and must not fail for an unreachable one: %v", err)
	}
	defer func() { _ = sink.Close(context.Background()) }()
	expectFailedBy(t, sink, events("conformance.down", 2), h.Timeout+10*time.Second)
}

func testHung(t *testing.T, h Harness) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c) // accepted, never answered
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	ch, s := at(t, h, ln.Addr().String())
	sink, err := ch.Open(t.Context(), s)
	if err != nil {
		t.Fatalf("Open must not wait for the service: %v", err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = sink.Close(ctx)
	}()
	expectFailedBy(t, sink, events("conformance.hung", 1), h.Timeout+5*time.Second)
}

// at returns the channel and a subscription whose deliveries go to the
// service address addr.
func at(t *testing.T, h Harness, addr string) (channel.Channel, *herald.Subscription) {
	t.Helper()
	if h.ChannelAt != nil {
		ch := h.ChannelAt(t, addr)
		hc := h
		hc.Channel = ch
		return ch, sub(t, hc, h.Config(t))
	}
	return h.Channel, sub(t, h, h.ConfigAt(t, addr))
}

// expectFailedBy delivers under a deadline of the subscription timeout, as
// the engine does, and requires every result Failed (to retry), returned
// by the bound.
func expectFailedBy(t *testing.T, sink channel.Sink, evs []*herald.Event, bound time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), bound-3*time.Second)
	defer cancel()
	start := time.Now()
	var res []herald.DeliveryResult
	if b, ok := sink.(channel.Batcher); ok {
		batch := make([]channel.Delivery, len(evs))
		for i, e := range evs {
			batch[i] = channel.Delivery{Event: e, Attempt: 1}
		}
		res = b.DeliverBatch(ctx, batch)
	} else {
		for _, e := range evs {
			res = append(res, sink.Deliver(ctx, e, 1))
		}
	}
	if took := time.Since(start); took > bound {
		t.Errorf("the delivery returned after %v, past its deadline", took)
	}
	if len(res) != len(evs) {
		t.Fatalf("%d results for %d events", len(res), len(evs))
	}
	for i, r := range res {
		if r.Outcome != herald.Failed || r.Err == "" {
			t.Errorf("event %d: outcome %v, reason %q; want Failed with a reason", i, r.Outcome, r.Err)
		}
	}
}

func testReopen(t *testing.T, h Harness) {
	config := h.Config(t)
	s := sub(t, h, config)
	first, err := h.Channel.Open(t.Context(), s)
	if err != nil {
		t.Fatal(err)
	}
	second := open(t, h, s) // two sinks of one destination share what they pool
	a := events("conformance.reopen", 1)
	deliver(t, first, a)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := first.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	b := events("conformance.reopen", 1)
	deliver(t, second, b) // the other sink still works
	third := open(t, h, s)
	c := events("conformance.reopen", 1)
	deliver(t, third, c) // and a sink opened after a close
	waitReceived(t, h, s.Config, append(append(a, b...), c...))
}
