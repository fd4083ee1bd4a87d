package api

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/heraldhq/herald"
)

func TestTopicLifecycle(t *testing.T) {
	e := newEnv(t, Config{})

	created := e.putTopic("orders.created", `{"retention":"3d","max_event_bytes":1024,"dedup_window":"90m"}`)
	want := topicJSON{Name: "orders.created", Retention: "3d", MaxEventBytes: 1024, DedupWindow: "1h30m"}
	if created.Name != want.Name || created.Retention != want.Retention || created.MaxEventBytes != want.MaxEventBytes || created.DedupWindow != want.DedupWindow {
		t.Fatalf("created %+v, want settings of %+v", created, want)
	}
	if !strings.HasSuffix(created.CreatedAt, "Z") || len(created.CreatedAt) != len("2006-01-02T15:04:05.000Z") {
		t.Errorf("created_at %q is not RFC 3339 UTC with milliseconds", created.CreatedAt)
	}

	// PUT again replaces the settings: omitted ones take the defaults.
	var updated topicJSON
	e.must(http.StatusOK, req{method: "PUT", path: "/v1/topics/orders.created", body: []byte(`{"retention":"1d"}`)}, &updated)
	if updated.Retention != "1d" || updated.MaxEventBytes != herald.DefaultMaxEventBytes || updated.DedupWindow != "1d" {
		t.Errorf("updated %+v: want retention 1d and default limits", updated)
	}
	if updated.CreatedAt != created.CreatedAt {
		t.Errorf("update changed created_at from %s to %s", created.CreatedAt, updated.CreatedAt)
	}

	// Empty body and {} both mean defaults.
	var def topicJSON
	e.must(http.StatusCreated, req{method: "PUT", path: "/v1/topics/a"}, &def)
	if def.Retention != "7d" || def.MaxEventBytes != 262144 || def.DedupWindow != "1d" {
		t.Errorf("defaults %+v", def)
	}
	e.must(http.StatusCreated, req{method: "PUT", path: "/v1/topics/b", body: []byte(`{}`), header: map[string]string{"Content-Type": "application/json"}}, nil)

	var got topicJSON
	e.must(http.StatusOK, req{method: "GET", path: "/v1/topics/orders.created"}, &got)
	if got != updated {
		t.Errorf("GET %+v, want %+v", got, updated)
	}

	e.must(http.StatusNoContent, req{method: "DELETE", path: "/v1/topics/orders.created"}, nil)
	e.problem(herald.CodeNotFound, anyField, req{method: "GET", path: "/v1/topics/orders.created"})
	e.problem(herald.CodeNotFound, anyField, req{method: "DELETE", path: "/v1/topics/orders.created"})
}

func TestTopicStatistics(t *testing.T) {
	e := newEnv(t, Config{})
	e.putTopic("stats", "")
	for range 3 {
		e.must(http.StatusCreated, req{method: "POST", path: "/v1/topics/stats/events", body: []byte("x")}, nil)
	}
	var got topicJSON
	e.must(http.StatusOK, req{method: "GET", path: "/v1/topics/stats"}, &got)
	if got.HeadSeq != 3 || got.FirstSeq != 1 || got.EventCount != 3 {
		t.Errorf("statistics head %d first %d count %d, want 3 1 3", got.HeadSeq, got.FirstSeq, got.EventCount)
	}
}

func TestTopicValidation(t *testing.T) {
	e := newEnv(t, Config{})
	long := strings.Repeat("a", herald.MaxTopicNameLen+1)
	cases := []struct {
		name, path, body, ctype string
		code                    herald.Code
		field                   string
	}{
		{"empty segment", "/v1/topics/a..b", "", "", herald.CodeInvalid, "topic"},
		{"bad character", "/v1/topics/a%20b", "", "", herald.CodeInvalid, "topic"},
		{"too long", "/v1/topics/" + long, "", "", herald.CodeInvalid, "topic"},
		{"reserved", "/v1/topics/herald.internal", "", "", herald.CodeInvalid, "topic"},
		{"bad retention", "/v1/topics/t", `{"retention":"forever"}`, "", herald.CodeInvalid, "retention"},
		{"retention too short", "/v1/topics/t", `{"retention":"30s"}`, "", herald.CodeInvalid, "retention"},
		{"retention too long", "/v1/topics/t", `{"retention":"366d"}`, "", herald.CodeInvalid, "retention"},
		{"max_event_bytes over limit", "/v1/topics/t", `{"max_event_bytes":4194305}`, "", herald.CodeInvalid, "max_event_bytes"},
		{"max_event_bytes negative", "/v1/topics/t", `{"max_event_bytes":-1}`, "", herald.CodeInvalid, "max_event_bytes"},
		{"max_event_bytes string", "/v1/topics/t", `{"max_event_bytes":"big"}`, "", herald.CodeInvalid, "max_event_bytes"},
		{"dedup too long", "/v1/topics/t", `{"dedup_window":"31d"}`, "", herald.CodeInvalid, "dedup_window"},
		{"unknown field", "/v1/topics/t", `{"retentoin":"1d"}`, "", herald.CodeInvalid, "retentoin"},
		{"malformed JSON", "/v1/topics/t", `{"retention":`, "", herald.CodeInvalid, ""},
		{"trailing data", "/v1/topics/t", `{} {}`, "", herald.CodeInvalid, ""},
		{"not JSON", "/v1/topics/t", `retention=1d`, "application/x-www-form-urlencoded", herald.CodeUnsupported, ""},
		{"body too large", "/v1/topics/t", `{"retention":"` + strings.Repeat("1", maxJSONBody) + `"}`, "", herald.CodeTooLarge, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := e.with(t)
			r := req{method: "PUT", path: c.path, header: map[string]string{}}
			if c.body != "" {
				r.body = []byte(c.body)
			}
			if c.ctype != "" {
				r.header["Content-Type"] = c.ctype
			}
			e.problem(c.code, c.field, r)
		})
	}
	// Nothing was created by the failures.
	var list topicListJSON
	e.must(http.StatusOK, req{method: "GET", path: "/v1/topics"}, &list)
	if len(list.Topics) != 0 {
		t.Errorf("failed PUTs created topics: %+v", list.Topics)
	}
}

func TestTopicListPagesAndScopes(t *testing.T) {
	e := newEnv(t, Config{})
	var names []string
	for _, n := range []string{"a.1", "a.2", "b.1", "a.3", "b.2", "a.4", "c"} {
		e.putTopic(n, "")
		names = append(names, n)
	}
	slices.Sort(names)

	// walk pages through the list with the key and returns the names seen
	// and the number of pages.
	walk := func(key string, limit int) ([]string, int) {
		var seen []string
		cursor, pages := "", 0
		for {
			var page topicListJSON
			e.must(http.StatusOK, req{method: "GET", path: fmt.Sprintf("/v1/topics?limit=%d&cursor=%s", limit, cursor), key: key}, &page)
			pages++
			if len(page.Topics) > limit {
				t.Fatalf("page of %d topics over limit %d", len(page.Topics), limit)
			}
			for _, tp := range page.Topics {
				seen = append(seen, tp.Name)
			}
			if page.NextCursor == "" {
				return seen, pages
			}
			cursor = page.NextCursor
			if pages > 20 {
				t.Fatal("pagination does not end")
			}
		}
	}
	if got, pages := walk(e.admin, 3); !slices.Equal(got, names) || pages != 3 {
		t.Errorf("admin saw %v in %d pages, want %v in 3", got, pages, names)
	}
	if got, pages := walk(e.admin, 7); !slices.Equal(got, names) || pages != 1 {
		t.Errorf("admin with limit 7 saw %v in %d pages, want one full page", got, pages)
	}

	_, reader := e.createKey("read:a.>", "publish:b.1")
	if got, _ := walk(reader, 2); !slices.Equal(got, []string{"a.1", "a.2", "a.3", "a.4"}) {
		t.Errorf("read:a.> key saw %v", got)
	}
	_, publisher := e.createKey("publish:>")
	if got, _ := walk(publisher, 100); len(got) != 0 {
		t.Errorf("publish-only key saw topics %v", got)
	}

	e.problem(herald.CodeInvalid, "cursor", req{method: "GET", path: "/v1/topics?cursor=%21%21"})
	e.problem(herald.CodeInvalid, "limit", req{method: "GET", path: "/v1/topics?limit=0"})
	e.problem(herald.CodeInvalid, "limit", req{method: "GET", path: "/v1/topics?limit=1001"})
	e.problem(herald.CodeInvalid, "limit", req{method: "GET", path: "/v1/topics?limit=ten"})
}

// A key that may read few of many topics gets short pages but still sees
// every readable topic by following next_cursor.
func TestTopicListScanBudget(t *testing.T) {
	e := newEnv(t, Config{})
	const hidden = 2*maxTopicScans + 5 // more than the scan budget at limit 1
	for i := range hidden {
		e.putTopic(fmt.Sprintf("h%02d", i), "")
	}
	e.putTopic("z.visible", "")
	_, key := e.createKey("read:z.>")
	var seen []string
	cursor := ""
	for range 50 {
		var page topicListJSON
		e.must(http.StatusOK, req{method: "GET", path: "/v1/topics?limit=1&cursor=" + cursor, key: key}, &page)
		for _, tp := range page.Topics {
			seen = append(seen, tp.Name)
		}
		if page.NextCursor == "" {
			break
		}
		cursor = page.NextCursor
	}
	if !slices.Equal(seen, []string{"z.visible"}) {
		t.Errorf("saw %v, want [z.visible]", seen)
	}
}

// TestTopicExplicitZeroSettings checks that PUT tells an absent setting
// (the default) from an explicit zero: dedup_window "0s" turns
// deduplication off and stays off, while a zero retention or
// max_event_bytes is refused naming the field and the allowed range.
func TestTopicExplicitZeroSettings(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})

	off := e.putTopic("nodedup", `{"dedup_window":"0s"}`)
	if off.DedupWindow != "0s" || off.Retention != "7d" || off.MaxEventBytes != herald.DefaultMaxEventBytes {
		t.Fatalf("PUT {dedup_window:0s}: %+v; want dedup_window 0s and default retention and max_event_bytes", off)
	}
	var got topicJSON
	e.must(http.StatusOK, req{method: "GET", path: "/v1/topics/nodedup"}, &got)
	if got.DedupWindow != "0s" {
		t.Fatalf("GET after PUT {dedup_window:0s}: dedup_window %q", got.DedupWindow)
	}
	// With deduplication off, the same idempotency key stores two events.
	idem := map[string]string{"Idempotency-Key": "k-1"}
	var first, second publishResultJSON
	e.must(http.StatusCreated, req{method: "POST", path: "/v1/topics/nodedup/events", body: []byte("a"), header: idem}, &first)
	e.must(http.StatusCreated, req{method: "POST", path: "/v1/topics/nodedup/events", body: []byte("a"), header: idem}, &second)
	if second.Duplicate || second.Seq != first.Seq+1 {
		t.Errorf("second publish with the key: %+v; want a new event after %+v", second, first)
	}
	// Absent, null or "" is the default again: PUT replaces the settings.
	for _, body := range []string{`{}`, `{"dedup_window":null}`, `{"dedup_window":""}`} {
		e.must(http.StatusOK, req{method: "PUT", path: "/v1/topics/nodedup", body: []byte(`{"dedup_window":"0s"}`)}, nil)
		e.must(http.StatusOK, req{method: "PUT", path: "/v1/topics/nodedup", body: []byte(body)}, &got)
		if got.DedupWindow != "1d" {
			t.Errorf("PUT %s: dedup_window %q, want the default 1d", body, got.DedupWindow)
		}
	}

	for _, c := range []struct{ body, field, allowed string }{
		{`{"retention":"0s"}`, "retention", "between 1m and 365d"},
		{`{"retention":"59s"}`, "retention", "between 1m and 365d"},
		{`{"max_event_bytes":0}`, "max_event_bytes", "between 1 and 4194304"},
		{`{"dedup_window":"-1s"}`, "dedup_window", "between 0s and 30d"},
	} {
		t.Run(c.body, func(t *testing.T) {
			p := e.with(t).problem(herald.CodeInvalid, c.field, req{method: "PUT", path: "/v1/topics/zero", body: []byte(c.body)})
			if !strings.Contains(p.Detail, c.allowed) {
				t.Errorf("detail %q does not say %q", p.Detail, c.allowed)
			}
		})
	}
	e.problem(herald.CodeNotFound, anyField, req{method: "GET", path: "/v1/topics/zero"})
}
