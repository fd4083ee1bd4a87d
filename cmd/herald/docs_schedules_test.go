package main

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/client"
)

// The examples of docs/schedules.md run from the page itself against a
// real server: the curl ones with sh, the CLI ones through the CLI.

const schedulesDoc = "../../docs/schedules.md"

func TestDocsSchedules(t *testing.T) {
	t.Parallel()
	m, _ := testServer(t, t.TempDir(), nil)
	c := adminClient(m)
	ctx := t.Context()
	for _, topic := range []string{"reminders", "connectors.runs"} {
		if _, _, err := c.PutTopic(ctx, topic, client.TopicSettings{}); err != nil {
			t.Fatal(err)
		}
	}
	ex := docExamples(t, schedulesDoc)
	for _, name := range []string{"delayed-publish", "delayed-batch", "delayed-manage", "schedule-put", "schedule-manage", "schedules-cli"} {
		if ex[name] == "" {
			t.Fatalf("docs/schedules.md has no example %s", name)
		}
	}

	// A delayed publish: accepted for later, with its id and due time.
	var d struct {
		ID        string `json:"id"`
		Seq       int64  `json:"seq"`
		DeliverAt string `json:"deliver_at"`
	}
	if err := json.Unmarshal([]byte(runDocScript(t, m, ex["delayed-publish"])), &d); err != nil || d.ID == "" || d.Seq != 0 || d.DeliverAt == "" {
		t.Fatalf("delayed publish answered %+v (%v)", d, err)
	}
	var batch struct {
		Events []struct {
			Seq       int64  `json:"seq"`
			DeliverAt string `json:"deliver_at"`
		} `json:"events"`
	}
	// The page's date stands; the test's is an hour ahead, so it stays
	// within the 366 days a due time may be ahead whenever it runs.
	const pageDate = "2027-06-01T09:00:00Z"
	if !strings.Contains(ex["delayed-batch"], pageDate) {
		t.Fatalf("the batch example no longer holds %s", pageDate)
	}
	script := strings.ReplaceAll(ex["delayed-batch"], pageDate, time.Now().Add(time.Hour).UTC().Format(time.RFC3339))
	if err := json.Unmarshal([]byte(runDocScript(t, m, script)), &batch); err != nil || len(batch.Events) != 3 {
		t.Fatalf("batch answered %+v (%v)", batch, err)
	}
	if e := batch.Events; e[0].DeliverAt == "" || e[1].DeliverAt == "" || e[2].Seq != 1 {
		t.Fatalf("batch items %+v: want two delayed and the third in the log at seq 1", e)
	}
	// Listing shows the three pending; the DELETE cancels the first.
	out := runDocScript(t, m, "ID="+d.ID+"\n"+ex["delayed-manage"])
	if !strings.Contains(out, d.ID) || strings.Count(out, `"deliver_at"`) != 3 {
		t.Fatalf("listing and cancelling printed %s; want the three pending events", out)
	}
	if page, err := c.ListScheduled(ctx, "reminders", "", 10); err != nil || len(page.Events) != 2 {
		t.Fatalf("pending after the cancel: %+v, %v; want 2", page, err)
	}

	var s struct {
		Name          string   `json:"name"`
		NextFireTimes []string `json:"next_fire_times"`
	}
	if err := json.Unmarshal([]byte(runDocScript(t, m, ex["schedule-put"])), &s); err != nil || s.Name != "bank-sync" || len(s.NextFireTimes) == 0 {
		t.Fatalf("PUT schedule answered %+v (%v)", s, err)
	}
	out = runDocScript(t, m, ex["schedule-manage"])
	for _, want := range []string{`"next_fire_times"`, `"schedules"`, `"paused":true`, `"paused":false`} {
		if !strings.Contains(out, want) {
			t.Errorf("the schedule calls printed no %s:\n%s", want, out)
		}
	}
	if _, err := c.GetSchedule(ctx, "bank-sync"); !isStatus(err, 404) {
		t.Errorf("after the DELETE example: %v; want 404", err)
	}

	// The CLI, line by line (continuations joined, comments dropped); the
	// id of the event it delays stands in for 0193....
	var lines []string
	for _, l := range strings.Split(strings.ReplaceAll(ex["schedules-cli"], "\\\n", ""), "\n") {
		if l, _, _ = strings.Cut(l, "  #"); strings.TrimSpace(l) != "" {
			lines = append(lines, strings.Join(strings.Fields(l), " "))
		}
	}
	id := regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)
	fix := strings.NewReplacer()
	var pending, delayed string
	for _, l := range lines {
		out := runDocCLI(t, m, l, fix)
		switch {
		case strings.HasPrefix(l, "herald publish"):
			got := id.FindString(out)
			if got == "" {
				t.Fatalf("%s printed no event id:\n%s", l, out)
			}
			fix, delayed = strings.NewReplacer("0193...", got), got
		case strings.HasPrefix(l, "herald schedules pending"):
			pending = out
		case strings.HasPrefix(l, "herald schedules get"):
			if !strings.Contains(out, "bank-sync") {
				t.Errorf("%s printed %s", l, out)
			}
		}
	}
	if !strings.Contains(pending, delayed) {
		t.Errorf("herald schedules pending printed %q; want the event delayed, %s", pending, delayed)
	}
	if p, err := c.ListScheduled(ctx, "reminders", "", 10); err != nil || len(p.Events) != 2 {
		t.Errorf("after the CLI example: pending %+v (%v); want the event it delayed cancelled", p, err)
	}
}

// TestDocsStreamsUsers runs the curl example of the users section of
// docs/streams.md: a server-side subscription, its listing, and a token
// of the user whose {user} scope names the user's own topics.
func TestDocsStreamsUsers(t *testing.T) {
	t.Parallel()
	m, _ := testServer(t, t.TempDir(), nil)
	if _, _, err := adminClient(m).PutTopic(t.Context(), "accounts.u42.balance", client.TopicSettings{}); err != nil {
		t.Fatal(err)
	}
	out := runDocScript(t, m, docExamples(t, "../../docs/streams.md")["users-curl"])
	for _, want := range []string{`"topic":"accounts.u42.balance"`, `"token":"`, `read:accounts.u42.>`} {
		if !strings.Contains(out, want) {
			t.Errorf("the example printed no %s:\n%s", want, out)
		}
	}
}
