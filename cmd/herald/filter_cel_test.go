package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/client"
	"github.com/heraldhq/herald/schema"
)

// TestCELFiltersOnSubscriptions: a webhook subscription and streams filter
// with CEL over the event, protobuf payloads included (read through their
// topic's schema); a filtered event shows as "filtered" in the delivery
// status API; a CEL filter that does not compile or type-check is refused
// when written, naming the field; streams in the json format get protobuf
// payloads as JSON (issue 15).
func TestCELFiltersOnSubscriptions(t *testing.T) {
	t.Parallel()
	m, _ := testServer(t, t.TempDir(), nil)
	c := adminClient(m)
	ctx := t.Context()
	def, _ := json.Marshal(depositProto)
	mustAdmin(t, m, "PUT", "/v1/topics/deposits/schema", "application/json",
		`{"type":"protobuf","message":"deposits.v1.Deposit","proto":`+string(def)+`}`, 201)
	if _, _, err := c.PutTopic(ctx, "orders", client.TopicSettings{}); err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	got := map[string][]string{} // path -> event ids received
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		mu.Lock()
		got[r.URL.Path] = append(got[r.URL.Path], r.Header.Get("webhook-id"))
		mu.Unlock()
		w.WriteHeader(204)
	}))
	t.Cleanup(rcv.Close)
	received := func(path string) []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), got[path]...)
	}

	// Bad filters are refused at write time, naming the field.
	for _, tc := range []struct{ filter, field, detail string }{
		{`"event.sq > 1"`, "filter", "undefined field 'sq'"},
		{`"event.seq > 'a'"`, "filter", "no matching overload"},
		{`"event.seq + 1"`, "filter", "must give a bool"},
		{`"event.data.amount >"`, "filter", "does not compile"},
		{`{"types":["order.*"],"cel":"event.type.size() +"}`, "filter.cel", "does not compile"},
		{`{"cel":5}`, "filter.cel", "must be a string"},
	} {
		status, p := adminDo(t, m, "POST", "/v1/subscriptions", "application/json",
			`{"topic":"orders","url":"`+rcv.URL+`/bad","verification":"none","filter":`+tc.filter+`}`)
		if status != 400 || !strings.Contains(p, `"field":"`+tc.field+`"`) || !strings.Contains(p, tc.detail) ||
			!strings.Contains(p, "/problems/invalid") {
			t.Errorf("filter %s = %d %s; want 400 naming %s (%q)", tc.filter, status, p, tc.field, tc.detail)
		}
	}

	// The examples of docs/webhooks.md, pasted.
	out := runDocScript(t, m, docExamples(t, webhooksDoc)["cel-filter-curl"])
	if strings.Count(out, `"id":"sub_`) != 2 || strings.Contains(out, "/problems/") || !strings.Contains(out, `"cel":`) {
		t.Fatalf("the documented CEL filters: %s", out)
	}

	// A JSON topic: CEL over the payload and the metadata, with the
	// filter language beside it in one filter.
	big, err := c.CreateSubscription(ctx, client.SubscriptionSpec{
		Topic: "orders", URL: rcv.URL + "/big", Verification: herald.VerifyNone,
		Filter: json.RawMessage(`"event.data.amount > 100 && event.type.startsWith('order.') && event.key != 'test'"`),
	})
	if err != nil {
		t.Fatal(err)
	}
	var src string
	if json.Unmarshal(big.Filter, &src) != nil || src != "event.data.amount > 100 && event.type.startsWith('order.') && event.key != 'test'" {
		t.Fatalf("a CEL filter reads back as %s", big.Filter)
	}
	both, err := c.CreateSubscription(ctx, client.SubscriptionSpec{
		Topic: "orders", URL: rcv.URL + "/both", Verification: herald.VerifyNone,
		Filter: json.RawMessage(`{"types":["order.created"],"cel":"event.data.items.exists(i, i.sku == 'A-1')"}`),
	})
	if err != nil {
		t.Fatal(err)
	}
	publish := func(topic, id, typ, key, contentType, body string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, "POST", m.URL()+"/v1/topics/"+topic+"/events", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+testAdminKey)
		req.Header.Set("Content-Type", contentType)
		req.Header.Set("Herald-Event-Id", id)
		req.Header.Set("Herald-Event-Type", typ)
		if key != "" {
			req.Header.Set("Herald-Event-Key", key)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != 201 {
			t.Fatalf("publish %s: %d", id, res.StatusCode)
		}
	}
	publish("orders", "o-small", "order.created", "", "application/json", `{"amount":50,"items":[{"sku":"A-1"}]}`)
	publish("orders", "o-big", "order.created", "", "application/json", `{"amount":150,"items":[{"sku":"B-2"}]}`)
	publish("orders", "o-test", "order.created", "test", "application/json", `{"amount":500}`)
	publish("orders", "o-other", "refund.created", "", "application/json", `{"amount":900,"items":[{"sku":"A-1"}]}`)
	publish("orders", "o-text", "order.created", "", "text/plain", `amount 1000`)

	status := func(subID, eventID string) string {
		t.Helper()
		var s struct {
			Status string `json:"status"`
		}
		_ = json.Unmarshal([]byte(mustAdmin(t, m, "GET", "/v1/subscriptions/"+subID+"/events/"+eventID, "", "", 200)), &s)
		return s.Status
	}
	settled := func(subID string, ids ...string) func() bool {
		return func() bool {
			for _, id := range ids {
				if s := status(subID, id); s == "pending" {
					return false
				}
			}
			return true
		}
	}
	ids := []string{"o-small", "o-big", "o-test", "o-other", "o-text"}
	eventually(t, "every order settled at /big", settled(big.ID, ids...))
	eventually(t, "every order settled at /both", settled(both.ID, ids...))
	want := map[string]map[string]string{
		big.ID:  {"o-small": "filtered", "o-big": "delivered", "o-test": "filtered", "o-other": "filtered", "o-text": "filtered"},
		both.ID: {"o-small": "delivered", "o-big": "filtered", "o-test": "filtered", "o-other": "filtered", "o-text": "filtered"},
	}
	for sub, byID := range want {
		for id, w := range byID {
			if s := status(sub, id); s != w {
				t.Errorf("subscription %s, event %s: %s, want %s", sub, id, s, w)
			}
		}
	}
	eventually(t, "the matching orders received", func() bool {
		return len(received("/big")) == 1 && len(received("/both")) == 1
	})

	// A protobuf topic: CEL reads the fields through the schema.
	c2, err := schema.Compile(herald.Schema{Kind: herald.SchemaProtobuf, Format: "proto", Message: "deposits.v1.Deposit", Definition: []byte(depositProto)})
	if err != nil {
		t.Fatal(err)
	}
	deposit := func(wallet string, amount float64) string {
		msg := dynamicpb.NewMessage(c2.Descriptor())
		msg.Set(c2.Descriptor().Fields().ByName("wallet_id"), protoString(wallet))
		msg.Set(c2.Descriptor().Fields().ByName("amount"), protoDouble(amount))
		b, err := proto.Marshal(msg)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	large, err := c.CreateSubscription(ctx, client.SubscriptionSpec{
		Topic: "deposits", URL: rcv.URL + "/large", Verification: herald.VerifyNone,
		Filter: json.RawMessage(`"event.data.amount >= 10000 && event.data.wallet_id.startsWith('w')"`),
	})
	if err != nil {
		t.Fatal(err)
	}
	small := deposit("w1", 20) // dynamicpb's field order varies: keep the bytes
	publish("deposits", "d-small", "deposit", "", "application/protobuf", small)
	publish("deposits", "d-large", "deposit", "", "application/protobuf", deposit("w1", 25000))
	publish("deposits", "d-other", "deposit", "", "application/protobuf", deposit("x9", 25000))
	eventually(t, "every deposit settled", settled(large.ID, "d-small", "d-large", "d-other"))
	for id, w := range map[string]string{"d-small": "filtered", "d-large": "delivered", "d-other": "filtered"} {
		if s := status(large.ID, id); s != w {
			t.Errorf("deposit %s: %s, want %s", id, s, w)
		}
	}
	eventually(t, "the large deposit received", func() bool { return len(received("/large")) == 1 })

	// Streams: the same CEL filter, and the json format renders the
	// protobuf payloads as JSON (WebSocket through the Go client, SSE).
	ws, err := c.Stream(ctx, "deposits", 0, client.StreamOptions{
		Filter: json.RawMessage(`"event.data.amount >= 10000"`), Format: "json"})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	for _, wallet := range []string{"w1", "x9"} {
		nctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		ev, err := ws.Next(nctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		var d struct {
			WalletID string  `json:"wallet_id"`
			Amount   float64 `json:"amount"`
		}
		if err := json.Unmarshal(ev.Payload, &d); err != nil || d.WalletID != wallet || d.Amount != 25000 {
			t.Fatalf("websocket event %d = %q (%v); want the JSON of %s's deposit of 25000", ev.Seq, ev.Payload, err, wallet)
		}
	}
	raw, err := c.Stream(ctx, "deposits", 0, client.StreamOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	nctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	ev, err := raw.Next(nctx)
	cancel()
	if err != nil || string(ev.Payload) != small {
		t.Fatalf("without a format, the payload is the protobuf bytes: %q, %v; want %q", ev.Payload, err, small)
	}
	if _, err := c.Stream(ctx, "deposits", 0, client.StreamOptions{Format: "xml"}); err == nil || !strings.Contains(err.Error(), "format") {
		t.Fatalf("format xml: %v, want a refusal naming format", err)
	}
	if _, err := c.Stream(ctx, "deposits", 0, client.StreamOptions{Filter: json.RawMessage(`"event.nope"`)}); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("a bad CEL filter on a stream: %v, want a refusal", err)
	}

	sseCtx, cancelSSE := context.WithCancel(ctx)
	defer cancelSSE()
	q := url.Values{"since": {"0"}, "format": {"json"}, "filter": {`"event.data.amount < 100"`}}
	sreq, _ := http.NewRequestWithContext(sseCtx, "GET", m.URL()+"/v1/topics/deposits/stream?"+q.Encode(), nil)
	sreq.Header.Set("Authorization", "Bearer "+testAdminKey)
	sresp, err := http.DefaultClient.Do(sreq)
	if err != nil {
		t.Fatal(err)
	}
	defer sresp.Body.Close()
	if sresp.StatusCode != 200 {
		b, _ := io.ReadAll(sresp.Body)
		t.Fatalf("SSE = %d %s", sresp.StatusCode, b)
	}
	sc := bufio.NewScanner(sresp.Body)
	for sc.Scan() {
		d, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		var e struct {
			Seq  int64           `json:"seq"`
			Data json.RawMessage `json:"data"`
		}
		if err := json.Unmarshal([]byte(d), &e); err != nil || e.Seq != 1 || !strings.Contains(string(e.Data), `"wallet_id":"w1"`) {
			t.Fatalf("SSE json event = %s; want seq 1 with the deposit as JSON", d)
		}
		break
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
}
