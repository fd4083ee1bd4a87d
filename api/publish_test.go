package api

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/heraldhq/herald"
)

// allBytes is a payload holding every byte value, invalid UTF-8 included.
func allBytes() []byte {
	b := make([]byte, 512)
	for i := range b {
		b[i] = byte(i)
	}
	return b
}

func payloadOf(t *testing.T, ev eventJSON) []byte {
	t.Helper()
	if ev.DataBase64 == nil {
		t.Fatalf("event %s has inline data, want data_base64", ev.ID)
	}
	b, err := base64.StdEncoding.DecodeString(*ev.DataBase64)
	if err != nil {
		t.Fatalf("data_base64 of %s: %v", ev.ID, err)
	}
	return b
}

func jsonEqual(t *testing.T, a, b []byte) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatalf("unmarshal %s: %v", a, err)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		t.Fatalf("unmarshal %s: %v", b, err)
	}
	return reflect.DeepEqual(x, y)
}

func TestPublishReadBackByteForByte(t *testing.T) {
	e := newEnv(t, Config{})
	e.putTopic("bin", "")

	payload := allBytes()
	var res publishResultJSON
	r := e.must(http.StatusCreated, req{method: "POST", path: "/v1/topics/bin/events", body: payload,
		header: map[string]string{"Content-Type": "application/x-protobuf"}}, &res)
	if res.Topic != "bin" || res.Seq != 1 || res.Duplicate || res.ID == "" {
		t.Fatalf("publish result %+v", res)
	}
	if loc := r.header.Get("Location"); loc != "/v1/topics/bin/events/"+res.ID {
		t.Errorf("Location %q", loc)
	}

	evs := e.events("bin")
	if len(evs) != 1 {
		t.Fatalf("%d events, want 1", len(evs))
	}
	ev := evs[0]
	if ev.ID != res.ID || ev.Seq != 1 || ev.Topic != "bin" || ev.ContentType != "application/x-protobuf" {
		t.Errorf("event %+v", ev)
	}
	if got := payloadOf(t, ev); !bytes.Equal(got, payload) {
		t.Errorf("payload read back differs: %d bytes, want %d", len(got), len(payload))
	}
	var one eventJSON
	e.must(http.StatusOK, req{method: "GET", path: "/v1/topics/bin/events/" + res.ID}, &one)
	if !bytes.Equal(payloadOf(t, one), payload) || one.ID != res.ID {
		t.Errorf("GET by id: %+v", one)
	}
	// And the store holds exactly the bytes, whatever the rendering.
	stored, err := e.store.GetEvent(t.Context(), "bin", res.ID)
	if err != nil || !bytes.Equal(stored.Payload, payload) {
		t.Errorf("stored payload differs (err %v)", err)
	}
	e.problem(herald.CodeNotFound, anyField, req{method: "GET", path: "/v1/topics/bin/events/nope"})
}

func TestPublishPayloadRendering(t *testing.T) {
	e := newEnv(t, Config{})
	e.putTopic("r", "")
	cases := []struct {
		name, ctype string
		body        []byte
		wantCT      string
		inline      bool
	}{
		{"json inline", "application/json", []byte(`{"a": 1, "b": [true, null]}`), "application/json", true},
		{"json with charset", "application/json; charset=utf-8", []byte(`[1,2]`), "application/json; charset=utf-8", true},
		{"+json inline", "application/vnd.example+json", []byte(`"s"`), "application/vnd.example+json", true},
		{"json type, invalid bytes", "application/json", []byte(`{oops`), "application/json", false},
		{"json type, invalid utf-8", "application/json", []byte("\"\xff\""), "application/json", false},
		{"text", "text/plain", []byte(`{"looks":"json"}`), "text/plain", false},
		{"no content type", "", []byte("raw"), "application/octet-stream", false},
		{"empty body", "application/json", nil, "application/json", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := e.with(t)
			r := req{method: "POST", path: "/v1/topics/r/events", body: c.body, header: map[string]string{}}
			if c.body == nil {
				r.body = []byte{}
			}
			if c.ctype != "" {
				r.header["Content-Type"] = c.ctype
			}
			var res publishResultJSON
			e.must(http.StatusCreated, r, &res)
			var ev eventJSON
			e.must(http.StatusOK, req{method: "GET", path: "/v1/topics/r/events/" + res.ID}, &ev)
			if ev.ContentType != c.wantCT {
				t.Errorf("content_type %q, want %q", ev.ContentType, c.wantCT)
			}
			if c.inline {
				if ev.Data == nil || ev.DataBase64 != nil || !jsonEqual(t, ev.Data, c.body) {
					t.Errorf("want inline data equal to %s, got data %s base64 %v", c.body, ev.Data, ev.DataBase64)
				}
				return
			}
			if ev.Data != nil || !bytes.Equal(payloadOf(t, ev), c.body) {
				t.Errorf("want data_base64 of %q, got data %s", c.body, ev.Data)
			}
		})
	}
}

func TestPublishProducerHeaders(t *testing.T) {
	e := newEnv(t, Config{})
	e.putTopic("h", "")
	var res publishResultJSON
	e.must(http.StatusCreated, req{method: "POST", path: "/v1/topics/h/events", body: []byte("x"), header: map[string]string{
		"Herald-Event-Type":      "order.created",
		"Herald-Event-Key":       "customer 42",
		"Herald-Event-Id":        "order-1001",
		"Idempotency-Key":        "idem-1",
		"Herald-Header-Trace-Id": "abc",
		"herald-header-x-lower":  "v",
	}}, &res)
	if res.ID != "order-1001" {
		t.Errorf("id %q, want the producer's", res.ID)
	}
	ev := e.events("h")[0]
	want := map[string]string{"Trace-Id": "abc", "X-Lower": "v"}
	if ev.ID != "order-1001" || ev.Type != "order.created" || ev.Key != "customer 42" || ev.IdempotencyKey != "idem-1" || !reflect.DeepEqual(ev.Headers, want) {
		t.Errorf("event %+v", ev)
	}

	headers := map[string]string{}
	for i := range herald.MaxHeaders + 1 {
		headers[fmt.Sprintf("Herald-Header-H%d", i)] = "v"
	}
	cases := []struct {
		name   string
		header map[string]string
		field  string
	}{
		{"type with space", map[string]string{"Herald-Event-Type": "a b"}, "type"},
		{"type too long", map[string]string{"Herald-Event-Type": strings.Repeat("t", herald.MaxEventTypeLen+1)}, "type"},
		{"id too long", map[string]string{"Herald-Event-Id": strings.Repeat("i", herald.MaxEventIDLen+1)}, "id"},
		{"key too long", map[string]string{"Herald-Event-Key": strings.Repeat("k", herald.MaxEventKeyLen+1)}, "key"},
		{"idempotency key too long", map[string]string{"Idempotency-Key": strings.Repeat("k", herald.MaxIdempotencyKeyLen+1)}, "idempotency_key"},
		{"content type too long", map[string]string{"Content-Type": "text/" + strings.Repeat("p", herald.MaxContentTypeLen)}, "content_type"},
		{"header value too long", map[string]string{"Herald-Header-Big": strings.Repeat("v", herald.MaxHeaderValueLen+1)}, "headers"},
		{"too many headers", headers, "headers"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e.with(t).problem(herald.CodeInvalid, c.field, req{method: "POST", path: "/v1/topics/h/events", body: []byte("x"), header: c.header})
		})
	}
	if n := len(e.events("h")); n != 1 {
		t.Errorf("%d events after refused publishes, want 1", n)
	}
}

func TestPublishCloudEventsBinary(t *testing.T) {
	e := newEnv(t, Config{})
	e.putTopic("ce", "")
	body := []byte(`{"amount":12}`)
	var res publishResultJSON
	e.must(http.StatusCreated, req{method: "POST", path: "/v1/topics/ce/events", body: body, header: map[string]string{
		"Content-Type":   "application/json",
		"ce-specversion": "1.0",
		"ce-id":          "ce-1",
		"ce-type":        "com.example.paid",
		"ce-source":      "/payments",
		"ce-subject":     "wallet-7",
		"ce-time":        "2026-01-02T03:04:05Z",
		"ce-traceparent": "a%20b%25",
	}}, &res)
	if res.ID != "ce-1" {
		t.Errorf("id %q, want ce-id", res.ID)
	}
	ev := e.events("ce")[0]
	wantHeaders := map[string]string{
		"ce-specversion": "1.0", "ce-source": "/payments", "ce-time": "2026-01-02T03:04:05Z", "ce-traceparent": "a b%",
	}
	if ev.Type != "com.example.paid" || ev.Key != "wallet-7" || ev.ContentType != "application/json" || !reflect.DeepEqual(ev.Headers, wantHeaders) {
		t.Errorf("event %+v", ev)
	}
	if !jsonEqual(t, ev.Data, body) {
		t.Errorf("data %s", ev.Data)
	}

	// Herald-Event-Key wins over ce-subject.
	e.must(http.StatusCreated, req{method: "POST", path: "/v1/topics/ce/events", body: body, header: map[string]string{
		"ce-specversion": "1.0", "ce-id": "ce-2", "ce-source": "/payments", "ce-type": "t",
		"ce-subject": "from-ce", "Herald-Event-Key": "from-herald",
	}}, &res)
	var ev2 eventJSON
	e.must(http.StatusOK, req{method: "GET", path: "/v1/topics/ce/events/ce-2"}, &ev2)
	if ev2.Key != "from-herald" {
		t.Errorf("key %q, want Herald-Event-Key's", ev2.Key)
	}

	e.problem(herald.CodeInvalid, "ce-source", req{method: "POST", path: "/v1/topics/ce/events", body: body, header: map[string]string{"ce-source": "%zz"}})
}

func TestPublishCloudEventsStructured(t *testing.T) {
	e := newEnv(t, Config{})
	e.putTopic("ce", `{"max_event_bytes":64}`)
	structured := map[string]string{"Content-Type": "application/cloudevents+json; charset=utf-8"}

	data := `{"a": 1,  "list": [1, 2]}`
	body := `{"specversion":"1.0","id":"s-1","source":"/shop","type":"order.paid","subject":"cust-1",
		"time":"2026-01-02T03:04:05Z","data":` + data + `,"count":5,"obj":{"x": [1, 2]},"nothing":null}`
	var res publishResultJSON
	e.must(http.StatusCreated, req{method: "POST", path: "/v1/topics/ce/events", body: []byte(body), header: structured}, &res)
	if res.ID != "s-1" {
		t.Errorf("id %q", res.ID)
	}
	stored, err := e.store.GetEvent(t.Context(), "ce", "s-1")
	if err != nil {
		t.Fatal(err)
	}
	if string(stored.Payload) != data {
		t.Errorf("payload %q, want the raw JSON %q", stored.Payload, data)
	}
	wantHeaders := map[string]string{
		"ce-specversion": "1.0", "ce-source": "/shop", "ce-time": "2026-01-02T03:04:05Z", "ce-count": "5", "ce-obj": `{"x":[1,2]}`,
	}
	if stored.Type != "order.paid" || stored.Key != "cust-1" || stored.ContentType != "application/json" || !reflect.DeepEqual(stored.Headers, wantHeaders) {
		t.Errorf("stored %+v", stored)
	}

	raw := []byte{0, 1, 2, 0xff}
	b64 := `{"specversion":"1.0","id":"s-2","source":"/s","type":"t","datacontenttype":"application/x-thing","data_base64":"` + base64.StdEncoding.EncodeToString(raw) + `"}`
	e.must(http.StatusCreated, req{method: "POST", path: "/v1/topics/ce/events", body: []byte(b64), header: structured}, nil)
	stored, err = e.store.GetEvent(t.Context(), "ce", "s-2")
	if err != nil || !bytes.Equal(stored.Payload, raw) || stored.ContentType != "application/x-thing" {
		t.Errorf("data_base64 event %+v (err %v)", stored, err)
	}

	const required = `"specversion":"1.0","id":"x","source":"/s","type":"t"`
	cases := []struct {
		name, body string
		code       herald.Code
		field      string
	}{
		{"data and data_base64", `{` + required + `,"data":1,"data_base64":"AA=="}`, herald.CodeInvalid, "data"},
		{"id not a string", `{"id":7}`, herald.CodeInvalid, "id"},
		{"type with space", `{"specversion":"1.0","id":"x","source":"/s","type":"a b"}`, herald.CodeInvalid, "type"},
		{"bad base64", `{` + required + `,"data_base64":"***"}`, herald.CodeInvalid, "data_base64"},
		{"not an object", `[1]`, herald.CodeInvalid, ""},
		{"malformed", `{"id":`, herald.CodeInvalid, ""},
		{"bad attribute name", `{"Bad-Name":"x"}`, herald.CodeInvalid, "Bad-Name"},
		{"data over the topic limit", `{` + required + `,"data":"` + strings.Repeat("x", 64) + `"}`, herald.CodeTooLarge, "data"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e.with(t).problem(c.code, c.field, req{method: "POST", path: "/v1/topics/ce/events", body: []byte(c.body), header: structured})
		})
	}
	// The envelope has its own bound: room for the payload as base64 and
	// some attributes, no more.
	envelope := `{"ext":"` + strings.Repeat("e", int(ceStructuredLimit(64))) + `"}`
	e.problem(herald.CodeTooLarge, "", req{method: "POST", path: "/v1/topics/ce/events", body: []byte(envelope), header: structured})
	e.problem(herald.CodeUnsupported, "", req{method: "POST", path: "/v1/topics/ce/events", body: []byte(`[]`),
		header: map[string]string{"Content-Type": "application/cloudevents-batch+json"}})
	if n := len(e.events("ce")); n != 2 {
		t.Errorf("%d events, want 2", n)
	}
}

func TestPublishDedup(t *testing.T) {
	e := newEnv(t, Config{})
	e.putTopic("d", "")
	idem := map[string]string{"Idempotency-Key": "pay-1"}
	var first, second publishResultJSON
	e.must(http.StatusCreated, req{method: "POST", path: "/v1/topics/d/events", body: []byte("one"), header: idem}, &first)
	r := e.must(http.StatusOK, req{method: "POST", path: "/v1/topics/d/events", body: []byte("two"), header: idem}, &second)
	if !second.Duplicate || second.ID != first.ID || second.Seq != first.Seq || first.Duplicate {
		t.Errorf("first %+v, second %+v: want the second a duplicate of the first", first, second)
	}
	if r.header.Get("Location") != "" {
		t.Error("a duplicate answer carries Location")
	}
	evs := e.events("d")
	if len(evs) != 1 || !bytes.Equal(payloadOf(t, evs[0]), []byte("one")) {
		t.Errorf("events %+v, want only the first", evs)
	}
	if got := metricValue(t, e.reg, "herald_events_duplicate_total", nil); got != 1 {
		t.Errorf("herald_events_duplicate_total %v, want 1", got)
	}
	if got := metricValue(t, e.reg, "herald_events_published_total", nil); got != 1 {
		t.Errorf("herald_events_published_total %v, want 1", got)
	}
}

func TestPublishTooLargeStoresNothing(t *testing.T) {
	e := newEnv(t, Config{})
	e.putTopic("small", `{"max_event_bytes":16}`)
	over := bytes.Repeat([]byte("x"), 17)
	e.problem(herald.CodeTooLarge, "", req{method: "POST", path: "/v1/topics/small/events", body: over})
	e.problem(herald.CodeTooLarge, "", req{method: "POST", path: "/v1/topics/small/events", body: over, chunked: true})
	e.must(http.StatusCreated, req{method: "POST", path: "/v1/topics/small/events", body: over[:16], chunked: true}, nil)
	evs := e.events("small")
	if len(evs) != 1 || len(payloadOf(t, evs[0])) != 16 {
		t.Errorf("events %+v, want only the 16-byte one", evs)
	}
}

func TestPublishUnknownAndReservedTopics(t *testing.T) {
	e := newEnv(t, Config{})
	e.problem(herald.CodeNotFound, anyField, req{method: "POST", path: "/v1/topics/nope/events", body: []byte("x")})
	e.problem(herald.CodeNotFound, anyField, req{method: "POST", path: "/v1/topics/nope/events:batch", body: []byte(`{"events":[{}]}`)})
	e.problem(herald.CodeNotFound, anyField, req{method: "GET", path: "/v1/topics/nope/events"})
	e.problem(herald.CodeInvalid, "topic", req{method: "POST", path: "/v1/topics/herald.x/events", body: []byte("x")})
	e.problem(herald.CodeInvalid, "topic", req{method: "POST", path: "/v1/topics/bad..name/events", body: []byte("x")})

	auto := newEnvAuto(t, Config{}, true)
	_, pub := auto.createKey("publish:auto.>")
	auto.must(http.StatusCreated, req{method: "POST", path: "/v1/topics/auto.made/events", body: []byte("x"), key: pub}, nil)
	var tp topicJSON
	auto.must(http.StatusOK, req{method: "GET", path: "/v1/topics/auto.made"}, &tp)
	if tp.MaxEventBytes != herald.DefaultMaxEventBytes || tp.HeadSeq != 1 {
		t.Errorf("auto-created topic %+v", tp)
	}
	auto.problem(herald.CodeInvalid, "topic", req{method: "POST", path: "/v1/topics/herald.x/events", body: []byte("x")})
	auto.problem(herald.CodeForbidden, "", req{method: "POST", path: "/v1/topics/other/events", body: []byte("x"), key: pub})
	auto.problem(herald.CodeNotFound, anyField, req{method: "GET", path: "/v1/topics/other"})
}

func TestReadEventsPaging(t *testing.T) {
	e := newEnv(t, Config{})
	e.putTopic("log", "")
	for i := range 5 {
		e.must(http.StatusCreated, req{method: "POST", path: "/v1/topics/log/events", body: []byte{byte('a' + i)}}, nil)
	}
	var page eventListJSON
	e.must(http.StatusOK, req{method: "GET", path: "/v1/topics/log/events?after_seq=1&limit=2"}, &page)
	if len(page.Events) != 2 || page.Events[0].Seq != 2 || page.Events[1].Seq != 3 || page.NextAfterSeq != 3 {
		t.Fatalf("page %+v", page)
	}
	if got := payloadOf(t, page.Events[1]); string(got) != "c" {
		t.Errorf("seq 3 payload %q", got)
	}
	e.must(http.StatusOK, req{method: "GET", path: "/v1/topics/log/events?after_seq=5"}, &page)
	if len(page.Events) != 0 || page.NextAfterSeq != 5 {
		t.Errorf("past the head: %+v", page)
	}
	e.problem(herald.CodeInvalid, "after_seq", req{method: "GET", path: "/v1/topics/log/events?after_seq=-1"})
	e.problem(herald.CodeInvalid, "limit", req{method: "GET", path: "/v1/topics/log/events?limit=1001"})
}

// Concurrent publishes through the committer are all acknowledged, each
// with its own seq, and read back without gaps.
func TestPublishConcurrent(t *testing.T) {
	e := newEnv(t, Config{})
	e.putTopic("busy", "")
	const workers, each = 16, 20
	ids := make(chan publishResultJSON, workers*each)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			// Not e.must: only the test goroutine may stop the test.
			for i := range each {
				hr, _ := http.NewRequestWithContext(t.Context(), "POST", e.srv.URL+"/v1/topics/busy/events", bytes.NewReader(fmt.Appendf(nil, "%d-%d", w, i)))
				hr.Header.Set("Authorization", "Bearer "+e.admin)
				res, err := e.srv.Client().Do(hr)
				if err != nil {
					t.Error(err)
					return
				}
				var out publishResultJSON
				err = json.NewDecoder(res.Body).Decode(&out)
				res.Body.Close()
				if err != nil || res.StatusCode != http.StatusCreated {
					t.Errorf("publish: status %d, err %v", res.StatusCode, err)
					return
				}
				ids <- out
			}
		})
	}
	wg.Wait()
	close(ids)
	seqs := map[int64]string{}
	for res := range ids {
		if prev, dup := seqs[res.Seq]; dup {
			t.Fatalf("seq %d acknowledged twice (%s and %s)", res.Seq, prev, res.ID)
		}
		seqs[res.Seq] = res.ID
	}
	evs := e.events("busy")
	if len(evs) != workers*each {
		t.Fatalf("%d events read back, want %d", len(evs), workers*each)
	}
	for i, ev := range evs {
		if ev.Seq != int64(i+1) || seqs[ev.Seq] != ev.ID {
			t.Fatalf("event %d: seq %d id %s, acknowledged as %s", i, ev.Seq, ev.ID, seqs[ev.Seq])
		}
	}
}
