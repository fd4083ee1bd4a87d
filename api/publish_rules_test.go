package api

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/heraldhq/herald"
)

// TestPublishRefusesUndeliverableMetadata checks that a value a webhook
// delivery would carry in a request header (an event's key, content type
// and headers; CloudEvents attributes) is refused at publish when it holds
// CR, LF or another control character, naming the field. Accepting it
// would store an event whose every delivery fails, blocking its key when
// the subscription is ordered.
func TestPublishRefusesUndeliverableMetadata(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	e.putTopic("m", "")
	batch := func(event string) req {
		return req{method: "POST", path: "/v1/topics/m/events:batch", body: []byte(`{"events":[{},` + event + `]}`)}
	}
	structured := func(name string, value any) req {
		attrs := map[string]any{"specversion": "1.0", "id": "c-1", "source": "/s", "type": "t", name: value}
		body, err := json.Marshal(attrs)
		if err != nil {
			t.Fatal(err)
		}
		return req{method: "POST", path: "/v1/topics/m/events", header: map[string]string{"Content-Type": ceStructuredType}, body: body}
	}
	binary := func(name, value string) req {
		h := map[string]string{"ce-specversion": "1.0", "ce-id": "b-1", "ce-source": "/s", "ce-type": "t"}
		h[name] = value
		return req{method: "POST", path: "/v1/topics/m/events", header: h, body: []byte("x")}
	}
	cases := []struct {
		name  string
		req   req
		field string
	}{
		{"batch key with CR LF", batch(`{"key":"a\r\nb"}`), "events[1].key"},
		{"batch key with a bell", batch(`{"key":"a\u0007"}`), "events[1].key"},
		{"batch content type with LF", batch(`{"content_type":"text/plain\nX-Evil: 1","data_base64":""}`), "events[1].content_type"},
		{"batch header value with LF", batch(`{"headers":{"X-Trace":"a\nX-Evil: 1"}}`), "events[1].headers"},
		{"batch header value with DEL", batch(`{"headers":{"X-Trace":"a\u007f"}}`), "events[1].headers"},
		{"batch header name not a token", batch(`{"headers":{"X:Trace":"a"}}`), "events[1].headers"},
		{"structured source with CR LF", structured("source", "/s\r\nX-Evil: 1"), "source"},
		{"structured subject with LF", structured("subject", "a\nb"), "subject"},
		{"structured datacontenttype with CR", structured("datacontenttype", "text/plain\r"), "datacontenttype"},
		{"structured extension with a tab and LF", structured("myext", "v\t\nX: y"), "myext"},
		{"binary source with CR LF", binary("ce-source", "/s%0D%0AX-Evil:%201"), "ce-source"},
		{"binary subject with LF", binary("ce-subject", "a%0Ab"), "ce-subject"},
		{"binary extension with NUL", binary("ce-myext", "a%00b"), "ce-myext"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e.with(t).problem(herald.CodeInvalid, c.field, c.req)
		})
	}
	if n := len(e.events("m")); n != 0 {
		t.Fatalf("%d events stored by refused publishes, want 0", n)
	}

	// Tabs and non-ASCII text are fine in a header value.
	e.must(http.StatusCreated, batch(`{"key":"clé\tun","headers":{"X-Note":"déjà\tvu"},"content_type":"text/plain; charset=utf-8"}`), nil)
	e.must(http.StatusCreated, structured("subject", "sujet été\tdeux"), nil)
}

// TestPublishCloudEventsRequiredAttributes checks that a CloudEvent, in
// structured or binary mode, is refused with 400 naming the attribute
// unless it has the four attributes CloudEvents 1.0 requires (id, source,
// specversion, type) with specversion "1.0". Herald assigns none of them.
func TestPublishCloudEventsRequiredAttributes(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	e.putTopic("ce", "")
	complete := func() map[string]any {
		return map[string]any{"specversion": "1.0", "id": "e-1", "source": "/orders", "type": "order.paid"}
	}
	structured := func(change func(map[string]any)) req {
		attrs := complete()
		change(attrs)
		body, err := json.Marshal(attrs)
		if err != nil {
			t.Fatal(err)
		}
		return req{method: "POST", path: "/v1/topics/ce/events", header: map[string]string{"Content-Type": ceStructuredType}, body: body}
	}
	binary := func(change func(map[string]any)) req {
		attrs := complete()
		change(attrs)
		h := map[string]string{"Content-Type": "text/plain"}
		for k, v := range attrs {
			h["ce-"+k] = v.(string)
		}
		return req{method: "POST", path: "/v1/topics/ce/events", header: h, body: []byte("x")}
	}
	without := func(name string) func(map[string]any) { return func(a map[string]any) { delete(a, name) } }
	set := func(name string, v any) func(map[string]any) { return func(a map[string]any) { a[name] = v } }

	for _, attr := range []string{"id", "source", "specversion", "type"} {
		t.Run("structured without "+attr, func(t *testing.T) {
			e.with(t).problem(herald.CodeInvalid, attr, structured(without(attr)))
		})
		t.Run("structured with null "+attr, func(t *testing.T) {
			e.with(t).problem(herald.CodeInvalid, attr, structured(set(attr, nil)))
		})
		t.Run("structured with empty "+attr, func(t *testing.T) {
			e.with(t).problem(herald.CodeInvalid, attr, structured(set(attr, "")))
		})
		t.Run("binary without "+attr, func(t *testing.T) {
			e.with(t).problem(herald.CodeInvalid, "ce-"+attr, binary(without(attr)))
		})
		t.Run("binary with empty "+attr, func(t *testing.T) {
			e.with(t).problem(herald.CodeInvalid, "ce-"+attr, binary(set(attr, "")))
		})
	}
	for _, v := range []string{"0.3", "1", "1.0.2", "2.0"} {
		t.Run("specversion "+v, func(t *testing.T) {
			p := e.with(t).problem(herald.CodeInvalid, "specversion", structured(set("specversion", v)))
			if !strings.Contains(p.Detail, `"1.0"`) {
				t.Errorf("detail %q does not say which specversion is accepted", p.Detail)
			}
			e.with(t).problem(herald.CodeInvalid, "ce-specversion", binary(set("specversion", v)))
		})
	}
	t.Run("specversion not a string", func(t *testing.T) {
		e.with(t).problem(herald.CodeInvalid, "specversion", structured(set("specversion", 1.0)))
	})
	t.Run("source not a string", func(t *testing.T) {
		e.with(t).problem(herald.CodeInvalid, "source", structured(set("source", 7)))
	})
	t.Run("source not a URI-reference", func(t *testing.T) {
		e.with(t).problem(herald.CodeInvalid, "source", structured(set("source", "http://[::1")))
		e.with(t).problem(herald.CodeInvalid, "ce-source", binary(set("source", "http://[::1")))
	})
	if n := len(e.events("ce")); n != 0 {
		t.Fatalf("%d events stored by refused publishes, want 0", n)
	}

	// Complete events pass, in both modes; a source may be any
	// URI-reference, absolute or relative.
	var res publishResultJSON
	e.must(http.StatusCreated, structured(set("source", "https://shop.example/orders")), &res)
	if res.ID != "e-1" {
		t.Errorf("id %q, want the CloudEvent's", res.ID)
	}
	e.must(http.StatusCreated, binary(set("id", "e-2")), &res)
	if res.ID != "e-2" {
		t.Errorf("id %q, want ce-id", res.ID)
	}
	// A publish without any ce-* header is not a CloudEvent: nothing is required.
	e.must(http.StatusCreated, req{method: "POST", path: "/v1/topics/ce/events", body: []byte("plain")}, nil)
}

// TestPublishProducerIDRepeats checks that an event id a producer chose
// (Herald-Event-Id, ce-id, a structured CloudEvent's or a batch event's
// id) is unique within its topic for the dedup window: the same id with
// the same payload is the 200 duplicate answer of an Idempotency-Key, with
// another payload a 409 that stores nothing, not even the rest of a batch.
func TestPublishProducerIDRepeats(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	e.putTopic("ids", "")
	publish := func(header map[string]string, body string) req {
		return req{method: "POST", path: "/v1/topics/ids/events", header: header, body: []byte(body)}
	}
	heraldID := map[string]string{"Herald-Event-Id": "my-id-1"}

	var first, again publishResultJSON
	e.must(http.StatusCreated, publish(heraldID, "one"), &first)
	e.must(http.StatusOK, publish(heraldID, "one"), &again)
	if first.ID != "my-id-1" || first.Duplicate || !again.Duplicate || again.ID != first.ID || again.Seq != first.Seq {
		t.Fatalf("same id and payload twice: %+v then %+v; want the second a duplicate of the first", first, again)
	}
	p := e.problem(herald.CodeConflict, "id", publish(heraldID, "two"))
	if !strings.Contains(p.Detail, "my-id-1") {
		t.Errorf("conflict detail %q does not name the id", p.Detail)
	}
	var got eventJSON
	e.must(http.StatusOK, req{method: "GET", path: "/v1/topics/ids/events/my-id-1"}, &got)
	if got.Seq != first.Seq || string(payloadOf(t, got)) != "one" {
		t.Errorf("GET my-id-1: %+v; want the first event", got)
	}

	// CloudEvents ids, in both modes.
	binary := map[string]string{"ce-specversion": "1.0", "ce-id": "ce-7", "ce-source": "/s", "ce-type": "t"}
	e.must(http.StatusCreated, publish(binary, "x"), &first)
	e.must(http.StatusOK, publish(binary, "x"), &again)
	if !again.Duplicate || again.Seq != first.Seq {
		t.Errorf("ce-id twice: %+v then %+v", first, again)
	}
	structured := map[string]string{"Content-Type": ceStructuredType}
	e.problem(herald.CodeConflict, "id", publish(structured, `{"specversion":"1.0","id":"ce-7","source":"/s","type":"t","data":"y"}`))

	// Batches: a repeat inside a batch is a duplicate; a conflict fails
	// the whole batch, naming the event.
	var batch batchResultJSON
	e.must(http.StatusCreated, req{method: "POST", path: "/v1/topics/ids/events:batch",
		body: []byte(`{"events":[{"id":"b-1","data":1},{"id":"b-1","data":1},{"id":"my-id-1","data_base64":"b25l"}]}`)}, &batch)
	if b := batch.Events; b[0].Duplicate || !b[1].Duplicate || b[1].Seq != b[0].Seq || !b[2].Duplicate || b[2].ID != "my-id-1" {
		t.Errorf("batch with repeated ids: %+v", b)
	}
	head := len(e.events("ids"))
	e.problem(herald.CodeConflict, "events[1].id", req{method: "POST", path: "/v1/topics/ids/events:batch",
		body: []byte(`{"events":[{"data":"new"},{"id":"b-1","data":2}]}`)})
	e.problem(herald.CodeConflict, "events[2].id", req{method: "POST", path: "/v1/topics/ids/events:batch",
		body: []byte(`{"events":[{"data":"new"},{"id":"c-1","data":1},{"id":"c-1","data":2}]}`)})
	if n := len(e.events("ids")); n != head {
		t.Errorf("%d events after refused batches, want %d: a batch is all or nothing", n, head)
	}

	// With deduplication off, an id may repeat; GET finds the newest.
	e.putTopic("ids.off", `{"dedup_window":"0s"}`)
	off := func(body string) req {
		return req{method: "POST", path: "/v1/topics/ids.off/events", header: heraldID, body: []byte(body)}
	}
	e.must(http.StatusCreated, off("one"), &first)
	e.must(http.StatusCreated, off("two"), &again)
	e.must(http.StatusOK, req{method: "GET", path: "/v1/topics/ids.off/events/my-id-1"}, &got)
	if again.Seq != first.Seq+1 || got.Seq != again.Seq {
		t.Errorf("dedup off: seqs %d, %d, GET gives %d; want two events and the newest", first.Seq, again.Seq, got.Seq)
	}
}
