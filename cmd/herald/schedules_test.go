package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/client"
)

type scheduleAnswer struct {
	Name          string   `json:"name"`
	Cron          string   `json:"cron"`
	Every         string   `json:"every"`
	TimeZone      string   `json:"time_zone"`
	Missed        string   `json:"missed"`
	Paused        bool     `json:"paused"`
	LastTick      string   `json:"last_tick"`
	NextFireTimes []string `json:"next_fire_times"`
	Event         struct {
		Topic string          `json:"topic"`
		Data  json.RawMessage `json:"data"`
	} `json:"event"`
}

// ticksOf returns the Herald-Tick header of every event of the topic, in
// log order.
func ticksOf(t *testing.T, c *client.Client, topic string) []string {
	t.Helper()
	page, err := c.ListEvents(t.Context(), topic, 0, 1000)
	if err != nil {
		return nil
	}
	var ticks []string
	for _, e := range page.Events {
		ticks = append(ticks, e.Headers["Herald-Tick"])
	}
	return ticks
}

// contiguous checks that ticks are distinct, increasing, and step apart.
func contiguous(t *testing.T, ticks []string, step time.Duration) {
	t.Helper()
	var prev time.Time
	for i, s := range ticks {
		tk, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatalf("tick %d = %q: %v", i, s, err)
		}
		if i > 0 && tk.Sub(prev) != step {
			t.Fatalf("ticks %v: %s after %s, want one every %s, each once", ticks, tk, prev, step)
		}
		prev = tk
	}
}

func putScheduleJSON(t *testing.T, m *Main, name, body string, want int) scheduleAnswer {
	t.Helper()
	status, b := apiCall(t, m, "PUT", "/v1/schedules/"+name, body, "Content-Type", "application/json")
	if status != want {
		t.Fatalf("PUT schedule %s = %d %s; want %d", name, status, b, want)
	}
	var a scheduleAnswer
	if err := json.Unmarshal(b, &a); err != nil {
		t.Fatal(err)
	}
	return a
}

// TestSchedules creates schedules through the API, watches their ticks
// arrive once each, pauses, resumes, reads next fire times, refuses bad
// definitions, and deletes.
func TestSchedules(t *testing.T) {
	t.Parallel()
	m, _ := testServer(t, t.TempDir(), nil)
	c := adminClient(m)
	ctx := t.Context()
	for _, tp := range []string{"jobs.sync", "jobs.cron"} {
		if _, _, err := c.PutTopic(ctx, tp, client.TopicSettings{}); err != nil {
			t.Fatal(err)
		}
	}
	a := putScheduleJSON(t, m, "sync", `{"every":"1s","event":{"topic":"jobs.sync","type":"connector.run","data":{"connector":"bank-1"}}}`, http.StatusCreated)
	if a.Every != "1s" || a.Missed != "skip" || len(a.NextFireTimes) != 5 || string(a.Event.Data) != `{"connector":"bank-1"}` {
		t.Fatalf("created = %+v", a)
	}
	// A cron expression with seconds, in a time zone.
	b := putScheduleJSON(t, m, "cron-2s", `{"cron":"*/2 * * * * *","time_zone":"Europe/Paris","event":{"topic":"jobs.cron","data_base64":"aGk="}}`, http.StatusCreated)
	if b.TimeZone != "Europe/Paris" || len(b.NextFireTimes) != 5 {
		t.Fatalf("created = %+v", b)
	}
	for i, s := range b.NextFireTimes {
		tk, _ := time.Parse(time.RFC3339Nano, s)
		if tk.Second()%2 != 0 || (i > 0 && b.NextFireTimes[i-1] >= s) {
			t.Fatalf("next fire times = %v", b.NextFireTimes)
		}
	}
	waitCond(t, "three ticks of sync and two of cron-2s", 20*time.Second, func() bool {
		return len(ticksOf(t, c, "jobs.sync")) >= 3 && len(ticksOf(t, c, "jobs.cron")) >= 2
	})
	contiguous(t, ticksOf(t, c, "jobs.sync"), time.Second)
	contiguous(t, ticksOf(t, c, "jobs.cron"), 2*time.Second)
	page, _ := c.ListEvents(ctx, "jobs.sync", 0, 1)
	if e := page.Events[0]; e.Type != "connector.run" || e.Headers["Herald-Schedule"] != "sync" || !strings.Contains(string(e.Payload), "bank-1") {
		t.Errorf("tick event = %+v", e)
	}

	// Pause: no tick while paused, nor after resuming for the time paused.
	status, body := apiCall(t, m, "POST", "/v1/schedules/sync/pause", "")
	if err := json.Unmarshal(body, &a); status != 200 || err != nil || !a.Paused || len(a.NextFireTimes) != 0 {
		t.Fatalf("pause = %d %s", status, body)
	}
	paused := time.Now()
	before := len(ticksOf(t, c, "jobs.sync"))
	waitCond(t, "two seconds paused", 10*time.Second, func() bool { return time.Since(paused) > 2500*time.Millisecond })
	status, body = apiCall(t, m, "POST", "/v1/schedules/sync/resume", "")
	if status != 200 {
		t.Fatalf("resume = %d %s", status, body)
	}
	resumed := time.Now()
	waitCond(t, "a tick after resuming", 10*time.Second, func() bool { return len(ticksOf(t, c, "jobs.sync")) > before })
	ticks := ticksOf(t, c, "jobs.sync")
	for _, s := range ticks[before:] {
		tk, _ := time.Parse(time.RFC3339Nano, s)
		if tk.Before(resumed.Add(-time.Second).Truncate(time.Second)) {
			t.Errorf("tick %s fired after resuming, though it passed while paused (paused %s, resumed %s)", s, paused, resumed)
		}
	}

	// GET, list, bad input, not an admin, delete.
	status, body = apiCall(t, m, "GET", "/v1/schedules/sync", "")
	if err := json.Unmarshal(body, &a); status != 200 || err != nil || a.LastTick == "" || len(a.NextFireTimes) != 5 {
		t.Fatalf("GET = %d %s", status, body)
	}
	status, body = apiCall(t, m, "GET", "/v1/schedules?limit=1", "")
	var list struct {
		Schedules  []scheduleAnswer `json:"schedules"`
		NextCursor string           `json:"next_cursor"`
	}
	if err := json.Unmarshal(body, &list); status != 200 || err != nil || len(list.Schedules) != 1 || list.Schedules[0].Name != "cron-2s" || list.NextCursor == "" {
		t.Fatalf("list = %d %s", status, body)
	}
	for field, def := range map[string]string{
		"cron":        `{"cron":"61 * * * *","event":{"topic":"jobs.sync"}}`,
		"every":       `{"every":"10ms","event":{"topic":"jobs.sync"}}`,
		"time_zone":   `{"cron":"0 3 * * *","time_zone":"Nowhere/Land","event":{"topic":"jobs.sync"}}`,
		"missed":      `{"every":"1m","missed":"sometimes","event":{"topic":"jobs.sync"}}`,
		"event.topic": `{"every":"1m","event":{"topic":"herald.x"}}`,
	} {
		status, body := apiCall(t, m, "PUT", "/v1/schedules/bad", def, "Content-Type", "application/json")
		if status != http.StatusBadRequest || !strings.Contains(string(body), fmt.Sprintf(`"field":%q`, field)) {
			t.Errorf("%s: PUT = %d %s; want 400 naming %s", field, status, body, field)
		}
	}
	key, err := c.CreateKey(ctx, "pub", []string{"publish:jobs.>"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequestWithContext(ctx, "GET", m.URL()+"/v1/schedules", nil)
	req.Header.Set("Authorization", "Bearer "+key.Secret)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("a non-admin key lists schedules: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	for _, name := range []string{"sync", "cron-2s"} {
		if status, _ := apiCall(t, m, "DELETE", "/v1/schedules/"+name, ""); status != http.StatusNoContent {
			t.Fatalf("DELETE %s = %d", name, status)
		}
	}
	if status, _ := apiCall(t, m, "GET", "/v1/schedules/sync", ""); status != http.StatusNotFound {
		t.Errorf("GET after DELETE = %d", status)
	}
}

// TestScheduleTicksSurviveRestart stops the server for a few ticks: every
// tick of the downtime fires once after the restart (missed "all"; the
// other policies are unit tests of schedule.Due), and none twice.
func TestScheduleTicksSurviveRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	m, _ := testServer(t, dir, nil)
	c := adminClient(m)
	ctx := t.Context()
	if _, _, err := c.PutTopic(ctx, "missed.all", client.TopicSettings{}); err != nil {
		t.Fatal(err)
	}
	putScheduleJSON(t, m, "all", `{"every":"1s","missed":"all","event":{"topic":"missed.all"}}`, http.StatusCreated)
	waitCond(t, "a first tick", 10*time.Second, func() bool { return len(ticksOf(t, c, "missed.all")) >= 1 })
	if err := m.Close(ctx); err != nil {
		t.Fatal(err)
	}
	down := time.Now()
	waitCond(t, "three ticks of downtime", 10*time.Second, func() bool { return time.Since(down) > 3*time.Second })
	m, _ = testServer(t, dir, nil)
	c = adminClient(m)
	up := time.Now().UTC().Format(time.RFC3339)
	waitCond(t, "ticks after the restart", 20*time.Second, func() bool {
		all := ticksOf(t, c, "missed.all")
		return len(all) > 0 && all[len(all)-1] > up
	})
	all := ticksOf(t, c, "missed.all")
	contiguous(t, all, time.Second) // no gap: the downtime's ticks fired, each once
	if len(all) < 5 {
		t.Errorf("ticks = %v; want the downtime's too", all)
	}
}

// TestScheduleThreeNodes runs three nodes on one PostgreSQL database and
// one schedule: each tick is published once, and when the node firing it
// stops, another takes over without a gap.
func TestScheduleThreeNodes(t *testing.T) {
	t.Parallel()
	dsn := pgDSN(t)
	var nodes []*Main
	for range 3 {
		m, _ := testServer(t, t.TempDir(), func(c *Config) { c.DatabaseURL = Secret(dsn) })
		nodes = append(nodes, m)
	}
	c := adminClient(nodes[0])
	ctx := t.Context()
	if _, _, err := c.PutTopic(ctx, "cluster.ticks", client.TopicSettings{}); err != nil {
		t.Fatal(err)
	}
	putScheduleJSON(t, nodes[1], "beat", `{"every":"1s","missed":"all","event":{"topic":"cluster.ticks"}}`, http.StatusCreated)
	waitCond(t, "three ticks", 20*time.Second, func() bool { return len(ticksOf(t, c, "cluster.ticks")) >= 3 })
	// Stop the node holding the lease; another takes over.
	leader := -1
	for i, m := range nodes {
		if strings.Contains(metricsText(t, m), "herald_schedule_leader 1") {
			leader = i
		}
	}
	if leader < 0 {
		t.Fatal("no node says it holds the scheduling lease")
	}
	if err := nodes[leader].Close(ctx); err != nil {
		t.Fatal(err)
	}
	other := nodes[(leader+1)%3]
	c = adminClient(other)
	n := len(ticksOf(t, c, "cluster.ticks"))
	waitCond(t, "three more ticks after the leader stopped", 20*time.Second, func() bool { return len(ticksOf(t, c, "cluster.ticks")) >= n+3 })
	contiguous(t, ticksOf(t, c, "cluster.ticks"), time.Second)
}

func metricsText(t *testing.T, m *Main) string {
	t.Helper()
	resp, err := http.Get(m.URL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var sb strings.Builder
	_, _ = io.Copy(&sb, resp.Body)
	return sb.String()
}

// TestSchedulesCLI drives the schedules verbs and publish --delay against
// a server.
func TestSchedulesCLI(t *testing.T) {
	t.Parallel()
	m, _ := testServer(t, t.TempDir(), nil)
	if _, _, err := adminClient(m).PutTopic(t.Context(), "cli.jobs", client.TopicSettings{}); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"HERALD_URL": m.URL(), "HERALD_KEY": testAdminKey}
	cli := func(args ...string) string {
		t.Helper()
		var out, errOut strings.Builder
		if code := run(t.Context(), args, strings.NewReader(""), &out, &errOut, func(k string) string { return env[k] }); code != exitOK {
			t.Fatalf("herald %v: exit %d\n%s%s", args, code, out.String(), errOut.String())
		}
		return out.String()
	}
	out := cli("schedules", "put", "nightly", "--cron", "0 3 * * *", "--time-zone", "Europe/Paris", "--topic", "cli.jobs", "--type", "report.run", "--data", `{"report":"daily"}`, "--missed", "once")
	if !strings.Contains(out, "created schedule nightly") || !strings.Contains(out, "cron 0 3 * * * (Europe/Paris)") || !strings.Contains(out, "next") {
		t.Errorf("put:\n%s", out)
	}
	if out := cli("schedules", "get", "nightly"); !strings.Contains(out, "missed     once") && !strings.Contains(out, "once") {
		t.Errorf("get:\n%s", out)
	}
	if out := cli("schedules", "list"); !strings.Contains(out, "nightly") || !strings.Contains(out, "cli.jobs") {
		t.Errorf("list:\n%s", out)
	}
	if out := cli("schedules", "pause", "nightly"); !strings.Contains(out, "paused schedule nightly") {
		t.Errorf("pause:\n%s", out)
	}
	if out := cli("--output", "json", "schedules", "get", "nightly"); !strings.Contains(out, `"paused": true`) && !strings.Contains(out, `"paused":true`) {
		t.Errorf("get after pause:\n%s", out)
	}
	if out := cli("schedules", "resume", "nightly"); !strings.Contains(out, "resumed schedule nightly") {
		t.Errorf("resume:\n%s", out)
	}
	cli("schedules", "delete", "nightly")

	out = cli("publish", "cli.jobs", `{"later":true}`, "--delay", "1h")
	if !strings.Contains(out, "scheduled for cli.jobs at") {
		t.Fatalf("publish --delay:\n%s", out)
	}
	id := out[strings.LastIndex(out, "id ")+3 : len(out)-1]
	if out := cli("schedules", "pending", "cli.jobs"); !strings.Contains(out, id) {
		t.Errorf("pending:\n%s\nwant %s", out, id)
	}
	if out := cli("schedules", "cancel", "cli.jobs", id); !strings.Contains(out, "cancelled") {
		t.Errorf("cancel:\n%s", out)
	}
}
