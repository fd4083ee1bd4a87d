package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/client"
)

// apiCall sends one request with the admin key and returns the status and
// the body.
func apiCall(t *testing.T, m *Main, method, path string, body string, headers ...string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, m.URL()+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testAdminKey)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

type delayedAnswer struct {
	ID        string `json:"id"`
	Seq       int64  `json:"seq"`
	Duplicate bool   `json:"duplicate"`
	DeliverAt string `json:"deliver_at"`
}

// TestDelayedPublish publishes events with due times through every way in
// (headers, a batch, a CloudEvent), lists and cancels them, restarts the
// server before they are due, and checks that each one joins its topic's
// log once, with its id, not before its due time, in due order.
func TestDelayedPublish(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	m, _ := testServer(t, dir, nil)
	c := adminClient(m)
	ctx := t.Context()
	const topic = "later.orders"
	if _, _, err := c.PutTopic(ctx, topic, client.TopicSettings{}); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	due := map[string]time.Time{} // id -> due time
	publish := func(body string, wantStatus int, headers ...string) delayedAnswer {
		t.Helper()
		status, b := apiCall(t, m, "POST", "/v1/topics/"+topic+"/events", body, headers...)
		if status != wantStatus {
			t.Fatalf("publish %v = %d %s; want %d", headers, status, b, wantStatus)
		}
		var a delayedAnswer
		if err := json.Unmarshal(b, &a); err != nil {
			t.Fatal(err)
		}
		return a
	}
	// Due in this order: b (deliver-at), c (batch), ce (CloudEvent), a (delay).
	a := publish(`{"n":"a"}`, http.StatusAccepted, "Content-Type", "application/json", "Herald-Delay", "6s")
	atB := now.Add(4 * time.Second).UTC()
	b := publish(`{"n":"b"}`, http.StatusAccepted, "Content-Type", "application/json", "Herald-Deliver-At", atB.Format(time.RFC3339Nano))
	ce := publish(`{"n":"ce"}`, http.StatusAccepted, "Content-Type", "application/json",
		"ce-specversion", "1.0", "ce-id", "ce-1", "ce-source", "/test", "ce-type", "t", "ce-heralddelay", "5500ms")
	if a.Seq != 0 || a.DeliverAt == "" || b.DeliverAt != atB.Format("2006-01-02T15:04:05.000Z07:00") || ce.ID != "ce-1" {
		t.Fatalf("answers = %+v %+v %+v", a, b, ce)
	}
	// A repeat of a pending event's idempotency key answers it.
	k1 := publish(`{"n":"k"}`, http.StatusAccepted, "Content-Type", "application/json", "Herald-Delay", "1h", "Idempotency-Key", "k1")
	if k1b := publish(`{"n":"k"}`, http.StatusOK, "Content-Type", "application/json", "Herald-Delay", "1h", "Idempotency-Key", "k1"); !k1b.Duplicate || k1b.ID != k1.ID {
		t.Fatalf("repeat = %+v; want a duplicate of %s", k1b, k1.ID)
	}
	status, body := apiCall(t, m, "POST", "/v1/topics/"+topic+"/events:batch",
		`{"events":[{"data":{"n":"c"},"delay":"5s"},{"data":{"n":"now"}},{"data":{"n":"x"},"delay":"1h"}]}`, "Content-Type", "application/json")
	if status != http.StatusCreated {
		t.Fatalf("batch = %d %s", status, body)
	}
	var batch struct{ Events []delayedAnswer }
	if err := json.Unmarshal(body, &batch); err != nil {
		t.Fatal(err)
	}
	cEv, immediate, x := batch.Events[0], batch.Events[1], batch.Events[2]
	if cEv.Seq != 0 || cEv.DeliverAt == "" || immediate.Seq != 1 || immediate.DeliverAt != "" || x.Seq != 0 {
		t.Fatalf("batch answers = %+v", batch.Events)
	}
	due[b.ID], due[cEv.ID], due[ce.ID], due[a.ID] = atB, now.Add(5*time.Second), now.Add(5500*time.Millisecond), now.Add(6*time.Second)

	// Pending, in due order.
	status, body = apiCall(t, m, "GET", "/v1/topics/"+topic+"/scheduled?limit=3", "")
	var list struct {
		Events []struct {
			ID        string `json:"id"`
			DeliverAt string `json:"deliver_at"`
		}
		NextCursor string `json:"next_cursor"`
	}
	if err := json.Unmarshal(body, &list); status != 200 || err != nil {
		t.Fatalf("list = %d %s", status, body)
	}
	if len(list.Events) != 3 || list.Events[0].ID != b.ID || list.Events[1].ID != cEv.ID || list.Events[2].ID != ce.ID || list.NextCursor == "" {
		t.Fatalf("pending page 1 = %s", body)
	}
	_, body = apiCall(t, m, "GET", "/v1/topics/"+topic+"/scheduled?cursor="+list.NextCursor, "")
	if err := json.Unmarshal(body, &list); err != nil || len(list.Events) != 3 || list.Events[0].ID != a.ID {
		t.Fatalf("pending page 2 = %s", body)
	}
	// Cancel two; a second cancel is 404.
	for _, id := range []string{x.ID, k1.ID} {
		if status, body := apiCall(t, m, "DELETE", "/v1/topics/"+topic+"/scheduled/"+id, ""); status != http.StatusNoContent {
			t.Fatalf("cancel = %d %s", status, body)
		}
	}
	if status, _ := apiCall(t, m, "DELETE", "/v1/topics/"+topic+"/scheduled/"+x.ID, ""); status != http.StatusNotFound {
		t.Fatalf("second cancel = %d; want 404", status)
	}
	// Bad input names the header.
	for _, h := range [][]string{{"Herald-Delay", "soon"}, {"Herald-Deliver-At", "tomorrow"}, {"Herald-Delay", "-5s"}, {"Herald-Delay", "400d"}} {
		status, body := apiCall(t, m, "POST", "/v1/topics/"+topic+"/events", "x", h...)
		if status != http.StatusBadRequest || !bytes.Contains(body, []byte(`"field"`)) {
			t.Errorf("%v = %d %s; want 400 naming the field", h, status, body)
		}
	}

	// Restart before anything is due: nothing pending is lost.
	if err := m.Close(ctx); err != nil {
		t.Fatal(err)
	}
	m, _ = testServer(t, dir, nil)
	c = adminClient(m)
	var events []client.Event
	waitCond(t, "the delayed events published", 20*time.Second, func() bool {
		page, err := c.ListEvents(ctx, topic, 0, 100)
		events = page.Events
		return err == nil && len(events) >= 5
	})
	var order []string
	for _, e := range events[1:] {
		order = append(order, e.ID)
		if e.Time.Before(due[e.ID].Truncate(time.Millisecond)) {
			t.Errorf("event %s joined the log at %s, before its due time %s", e.ID, e.Time, due[e.ID])
		}
		t.Logf("event %s: %s after its due time", e.ID, e.Time.Sub(due[e.ID]))
	}
	if want := []string{b.ID, cEv.ID, ce.ID, a.ID}; strings.Join(order, " ") != strings.Join(want, " ") {
		t.Fatalf("log order = %v; want the due order %v", order, want)
	}
	if events[0].ID != immediate.ID || string(events[3].Headers["ce-source"]) != "/test" || events[3].Headers["ce-heralddelay"] != "" {
		t.Errorf("events = %+v", events)
	}
	// The promoter deletes what it published right after the commit.
	waitCond(t, "nothing pending after the promotion", 10*time.Second, func() bool {
		status, body = apiCall(t, m, "GET", "/v1/topics/"+topic+"/scheduled", "")
		return status == 200 && bytes.Contains(body, []byte(`"events":[]`))
	})
	if status, _ := apiCall(t, m, "DELETE", "/v1/topics/"+topic+"/scheduled/"+a.ID, ""); status != http.StatusNotFound {
		t.Errorf("cancel after promotion = %d; want 404", status)
	}
}

// TestDelayedThreeNodes publishes delayed events to three nodes on one
// PostgreSQL database: each joins the log once, in due order, whichever
// node holds the promotion lease, also after that node stops.
func TestDelayedThreeNodes(t *testing.T) {
	t.Parallel()
	dsn := pgDSN(t)
	var nodes []*Main
	for range 3 {
		m, _ := testServer(t, t.TempDir(), func(c *Config) { c.DatabaseURL = Secret(dsn) })
		nodes = append(nodes, m)
	}
	ctx := t.Context()
	c := adminClient(nodes[0])
	const topic = "cluster.later"
	if _, _, err := c.PutTopic(ctx, topic, client.TopicSettings{}); err != nil {
		t.Fatal(err)
	}
	publish := func(from, to int, delay time.Duration) []string {
		var ids []string
		at := time.Now().Add(delay)
		for i := from; i < to; i++ {
			// Due in reverse order of publishing, from every node.
			r, err := adminClient(nodes[i%len(nodes)]).Publish(ctx, topic, []byte(`{"n":`+jsonInt(int64(i))+`}`),
				client.PublishOptions{ContentType: "application/json", DeliverAt: at.Add(-time.Duration(i-from) * 50 * time.Millisecond)})
			if err != nil || r.Seq != 0 {
				t.Fatalf("publish %d = %+v, %v", i, r, err)
			}
			ids = append([]string{r.ID}, ids...)
		}
		return ids
	}
	want := publish(0, 20, 3*time.Second)
	var got []client.Event
	waitCond(t, "20 events promoted", 20*time.Second, func() bool {
		page, err := c.ListEvents(ctx, topic, 0, 100)
		got = page.Events
		return err == nil && len(got) >= 20
	})
	// The promoting node stops; another takes the lease.
	leader := -1
	for i, m := range nodes {
		if strings.Contains(metricsText(t, m), "herald_delayed_promoter_leader 1") {
			leader = i
		}
	}
	if leader < 0 {
		t.Fatal("no node says it holds the promotion lease")
	}
	if err := nodes[leader].Close(ctx); err != nil {
		t.Fatal(err)
	}
	nodes = append(nodes[:leader], nodes[leader+1:]...)
	c = adminClient(nodes[0])
	want = append(want, publish(20, 30, 3*time.Second)...)
	waitCond(t, "30 events promoted", 30*time.Second, func() bool {
		page, err := c.ListEvents(ctx, topic, 0, 100)
		got = page.Events
		return err == nil && len(got) >= 30
	})
	var ids []string
	for _, e := range got {
		ids = append(ids, e.ID)
	}
	if strings.Join(ids, " ") != strings.Join(want, " ") {
		t.Fatalf("log = %v\nwant each once, in due order: %v", ids, want)
	}
}
