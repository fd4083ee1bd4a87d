package api

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/heraldhq/herald"
)

func TestBatchPublish(t *testing.T) {
	e := newEnv(t, Config{})
	e.putTopic("b", `{"max_event_bytes":32}`)
	raw := []byte{0, 0xfe, 0xff}
	body := `{"events":[
		{"type":"a.one","key":"k1","data":{"n": 1}},
		{"id":"given-2","data_base64":"` + base64.StdEncoding.EncodeToString(raw) + `","headers":{"X-H":"v"}},
		{"content_type":"text/plain","data_base64":"aGk","idempotency_key":"i-3"},
		{}
	]}`
	var res batchResultJSON
	e.must(http.StatusCreated, req{method: "POST", path: "/v1/topics/b/events:batch", body: []byte(body)}, &res)
	if len(res.Events) != 4 {
		t.Fatalf("%d results, want 4", len(res.Events))
	}
	for i, r := range res.Events {
		if r.Seq != int64(i+1) || r.Duplicate || r.ID == "" {
			t.Errorf("result %d: %+v", i, r)
		}
	}
	if res.Events[1].ID != "given-2" {
		t.Errorf("producer id not kept: %+v", res.Events[1])
	}

	stored, err := e.store.ReadEvents(t.Context(), "b", 0, 10)
	if err != nil || len(stored) != 4 {
		t.Fatalf("stored %d events (err %v)", len(stored), err)
	}
	checks := []struct {
		payload []byte
		ctype   string
	}{
		{[]byte(`{"n": 1}`), "application/json"},
		{raw, "application/octet-stream"},
		{[]byte("hi"), "text/plain"},
		{[]byte{}, "application/octet-stream"},
	}
	for i, c := range checks {
		if !bytes.Equal(stored[i].Payload, c.payload) || stored[i].ContentType != c.ctype {
			t.Errorf("event %d: payload %q %q, want %q %q", i, stored[i].Payload, stored[i].ContentType, c.payload, c.ctype)
		}
	}
	if stored[0].Type != "a.one" || stored[0].Key != "k1" || stored[1].Headers["X-H"] != "v" || stored[2].IdempotencyKey != "i-3" {
		t.Errorf("metadata lost: %+v", stored[:3])
	}

	// All duplicates: 200, the first events' ids and seqs.
	dup := `{"events":[{"idempotency_key":"i-3","data":1},{"idempotency_key":"i-3","data":2}]}`
	e.must(http.StatusOK, req{method: "POST", path: "/v1/topics/b/events:batch", body: []byte(dup)}, &res)
	for _, r := range res.Events {
		if !r.Duplicate || r.Seq != 3 || r.ID != stored[2].ID {
			t.Errorf("duplicate result %+v, want seq 3 id %s", r, stored[2].ID)
		}
	}
	// Some duplicates: 201, each marked.
	mixed := `{"events":[{"idempotency_key":"i-3"},{"idempotency_key":"i-5"},{"idempotency_key":"i-5"}]}`
	e.must(http.StatusCreated, req{method: "POST", path: "/v1/topics/b/events:batch", body: []byte(mixed)}, &res)
	if !res.Events[0].Duplicate || res.Events[1].Duplicate || !res.Events[2].Duplicate || res.Events[2].Seq != res.Events[1].Seq || res.Events[1].Seq != 5 {
		t.Errorf("mixed results %+v", res.Events)
	}
}

func TestBatchAllOrNothing(t *testing.T) {
	e := newEnv(t, Config{})
	e.putTopic("b", `{"max_event_bytes":8}`)
	events := func(n int, ev string) string {
		return `{"events":[` + strings.TrimSuffix(strings.Repeat(ev+",", n), ",") + `]}`
	}
	big := `{"data_base64":"` + base64.StdEncoding.EncodeToString(make([]byte, 9)) + `"}`
	cases := []struct {
		name, body string
		code       herald.Code
		field      string
	}{
		{"no events member", `{}`, herald.CodeInvalid, "events"},
		{"zero events", `{"events":[]}`, herald.CodeInvalid, "events"},
		{"too many events", events(maxBatchEvents+1, `{}`), herald.CodeInvalid, "events"},
		{"data and data_base64", `{"events":[{},{"data":1,"data_base64":"AA=="}]}`, herald.CodeInvalid, "events[1].data"},
		{"bad base64", `{"events":[{},{},{"data_base64":"@@"}]}`, herald.CodeInvalid, "events[2].data_base64"},
		{"bad type", `{"events":[{"type":"has space"}]}`, herald.CodeInvalid, "events[0].type"},
		{"bad header", `{"events":[{},{"headers":{"":"v"}}]}`, herald.CodeInvalid, "events[1].headers"},
		{"wrong type", `{"events":[{"key":5}]}`, herald.CodeInvalid, "events[0].key"},
		{"unknown field", `{"events":[{},{},{},{"bogus":1}]}`, herald.CodeInvalid, "events[3].bogus"},
		{"null event", `{"events":[null]}`, herald.CodeInvalid, "events[0]"},
		{"event not an object", `{"events":[{},7]}`, herald.CodeInvalid, "events[1]"},
		{"unknown top-level field", `{"events":[{}],"extra":1}`, herald.CodeInvalid, "extra"},
		{"malformed", `{"events":[{`, herald.CodeInvalid, ""},
		{"payload over topic limit", `{"events":[{"data":1},` + big + `]}`, herald.CodeTooLarge, "events[1].data_base64"},
		{"data over topic limit", `{"events":[{"data":"12345678"}]}`, herald.CodeTooLarge, "events[0].data"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e.with(t).problem(c.code, c.field, req{method: "POST", path: "/v1/topics/b/events:batch", body: []byte(c.body)})
		})
	}
	e.problem(herald.CodeUnsupported, "", req{method: "POST", path: "/v1/topics/b/events:batch", body: []byte(`{}`),
		header: map[string]string{"Content-Type": "text/plain"}})

	// Over the whole-body limit, with and without a Content-Length.
	huge := []byte(`{"events":[{"data":"` + strings.Repeat("x", maxBatchBody) + `"}]}`)
	e.problem(herald.CodeTooLarge, "", req{method: "POST", path: "/v1/topics/b/events:batch", body: huge})
	e.problem(herald.CodeTooLarge, "", req{method: "POST", path: "/v1/topics/b/events:batch", body: huge, chunked: true})

	if n := len(e.events("b")); n != 0 {
		t.Fatalf("%d events stored by refused batches, want 0", n)
	}

	// Exactly the limits pass: 1000 events of the topic's largest payload.
	var res batchResultJSON
	e.must(http.StatusCreated, req{method: "POST", path: "/v1/topics/b/events:batch", body: []byte(events(maxBatchEvents, `{"data":"123456"}`))}, &res)
	if len(res.Events) != maxBatchEvents || res.Events[maxBatchEvents-1].Seq != maxBatchEvents {
		t.Errorf("%d results, last %+v", len(res.Events), res.Events[len(res.Events)-1])
	}
}

// TestDecodeBatchTable covers the batch decoder without a server.
func TestDecodeBatchTable(t *testing.T) {
	now := mustTime(t, "2026-03-04T05:06:07.089Z")
	evs, err := decodeBatch([]byte(`{"events":[{"data": [1, 2] },{"data":null}]}`), 100, now)
	if err != nil {
		t.Fatal(err)
	}
	if string(evs[0].Payload) != "[1, 2]" {
		t.Errorf("data kept as %q, want the raw JSON bytes", evs[0].Payload)
	}
	if string(evs[1].Payload) != "null" || evs[1].ContentType != "application/json" {
		t.Errorf("data null gives %q %q", evs[1].Payload, evs[1].ContentType)
	}
	for _, e := range evs {
		if !e.Time.Equal(now) || e.ID != "" {
			t.Errorf("event %+v: want time %v and no id (the store assigns one)", e, now)
		}
	}
	if _, err := decodeBatch([]byte(fmt.Sprintf(`{"events":[{"data":%q}]}`, strings.Repeat("x", 99))), 100, now); err == nil {
		t.Error("payload of 101 JSON bytes accepted under a limit of 100")
	}
}
