package api

import (
	"net/http"
	"strings"
	"testing"

	"github.com/heraldhq/herald"
)

// TestContentTypeMustParse checks that a Content-Type that is not a media
// type is refused with 400 naming the header, on every body the API reads,
// rather than stored with the event or taken for "none".
func TestContentTypeMustParse(t *testing.T) {
	e := newEnv(t, Config{})
	e.putTopic("orders", "")
	for _, tc := range []struct {
		name string
		r    req
	}{
		{"publish", req{method: "POST", path: "/v1/topics/orders/events", body: []byte(`{}`)}},
		{"batch", req{method: "POST", path: "/v1/topics/orders/events:batch", body: []byte(`{"events":[{}]}`)}},
		{"topic settings", req{method: "PUT", path: "/v1/topics/other", body: []byte(`{}`)}},
	} {
		for _, ct := range []string{"json", "text/plain; charset", "application/json;=x", "a b/c"} {
			t.Run(tc.name+" "+ct, func(t *testing.T) {
				r := tc.r
				r.header = map[string]string{"Content-Type": ct}
				p := e.with(t).problem(herald.CodeInvalid, "Content-Type", r)
				if !strings.Contains(p.Detail, "is not a media type") {
					t.Fatalf("detail %q", p.Detail)
				}
			})
		}
	}
	page := e.must(http.StatusOK, req{method: "GET", path: "/v1/topics/orders/events"}, nil)
	if strings.Contains(string(page.body), `"seq"`) {
		t.Fatalf("a refused publish was stored: %s", page.body)
	}
	// Parameters are fine, and kept with the event.
	e.must(http.StatusCreated, req{method: "POST", path: "/v1/topics/orders/events", body: []byte("x"),
		header: map[string]string{"Content-Type": "text/plain; charset=utf-8"}}, nil)
}

// TestInvalidUTF8IsRefused checks that names and other text that are not
// UTF-8 are refused, naming the field, before encoding/json would replace
// their bytes with U+FFFD (and, say, store a different event key than the
// one sent).
func TestInvalidUTF8IsRefused(t *testing.T) {
	e := newEnv(t, Config{})
	e.putTopic("orders", "")
	for _, tc := range []struct {
		name  string
		r     req
		field string
	}{
		{"batch event key", req{method: "POST", path: "/v1/topics/orders/events:batch",
			body: []byte(`{"events":[{"key":"ok"},{"key":"a` + "\xff" + `b","data":{}}]}`)}, "events[1].key"},
		{"batch event header", req{method: "POST", path: "/v1/topics/orders/events:batch",
			body: []byte(`{"events":[{"headers":{"X-A":"` + "\xc3" + `"}}]}`)}, "events[0].headers.X-A"},
		{"batch event data", req{method: "POST", path: "/v1/topics/orders/events:batch",
			body: []byte(`{"events":[{"data":{"list":[1,"` + "\xfe" + `"]}}]}`)}, "events[0].data.list[1]"},
		{"a member name", req{method: "POST", path: "/v1/topics/orders/events:batch",
			body: []byte(`{"events":[{"` + "\xff" + `":1}]}`)}, "events[0].\ufffd"},
		{"structured CloudEvent", req{method: "POST", path: "/v1/topics/orders/events",
			header: map[string]string{"Content-Type": "application/cloudevents+json"},
			body:   []byte(`{"specversion":"1.0","id":"1","source":"/s` + "\xff" + `","type":"t"}`)}, "source"},
		{"key name", req{method: "POST", path: "/v1/keys",
			body: []byte(`{"name":"n` + "\xff" + `","scopes":["read:orders"]}`)}, "name"},
		{"topic in the path", req{method: "GET", path: "/v1/topics/%FF"}, "topic"},
		{"subscription id in the path", req{method: "GET", path: "/v1/subscriptions/sub_%FF"}, "id"},
		{"event id in the path", req{method: "GET", path: "/v1/topics/orders/events/%C3"}, "id"},
		{"key id in the path", req{method: "DELETE", path: "/v1/keys/%FE"}, "id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := e.with(t).problem(herald.CodeInvalid, tc.field, tc.r)
			if !strings.Contains(p.Detail, "not valid UTF-8") {
				t.Fatalf("detail %q; want it to say the text is not valid UTF-8", p.Detail)
			}
		})
	}
	page := e.must(http.StatusOK, req{method: "GET", path: "/v1/topics/orders/events"}, nil)
	if strings.Contains(string(page.body), `"seq"`) {
		t.Fatalf("a refused publish was stored: %s", page.body)
	}
}

func TestJSONFieldAt(t *testing.T) {
	doc := `{"a":1,"b":{"c":[10,{"d":"x"},"y"],"e":"z"},"f":["g"]}`
	for _, tc := range []struct {
		at   string // a unique piece of doc; the byte looked up is its last
		want string
	}{
		{`"a"`, "a"},
		{`:1`, "a"},
		{`"c"`, "b.c"},
		{`10`, "b.c[0]"},
		{`"d"`, "b.c[1].d"},
		{`"x"`, "b.c[1].d"},
		{`"y"`, "b.c[2]"},
		{`"z"`, "b.e"},
		{`"g"`, "f[0]"},
	} {
		i := strings.Index(doc, tc.at)
		if i < 0 || strings.Count(doc, tc.at) != 1 {
			t.Fatalf("bad case %q", tc.at)
		}
		if got := jsonFieldAt([]byte(doc), int64(i+len(tc.at)-1)); got != tc.want {
			t.Errorf("at %q: %q, want %q", tc.at, got, tc.want)
		}
	}
}
