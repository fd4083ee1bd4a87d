package main

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The operator makes, edits and deletes a source, a rule, a view, an
// archive and a schedule from their forms in the console; each kind's
// first try is wrong, and the server's message shows next to the input at
// fault.
func TestConsoleResourceForms(t *testing.T) {
	t.Parallel()
	m, _ := testServer(t, t.TempDir(), nil)
	for _, topic := range []string{"payments", "logs.app", "reports.daily"} {
		mustCall(t, m, testAdminKey, "PUT", "/v1/topics/"+topic, `{}`, http.StatusCreated)
	}
	b := startBrowser(t)
	b.open(m.URL() + "/console/")
	b.fill(map[string]string{"#login-key": testAdminKey}, "#login-submit")
	b.waitText("#nav", "Sources", false)
	b.eval(`window.confirm = () => true`, nil) // the delete buttons ask first

	type kindCase struct {
		kind, name string
		// bad is a first try the server refuses, and the input whose
		// message must name the fault.
		bad               map[string]string
		badField, badText string
		good              map[string]string
		// edit changes one input; check is the member of the stored
		// object that shows it.
		edit              map[string]string
		checkKey, checkIs string
	}
	cases := []kindCase{
		{kind: "sources",
			bad:      map[string]string{"#sources-f-kind": "carrier-pigeon", "#sources-f-topic": "github.{header.x-github-event}"},
			badField: "#sources-f-kind-error", badText: "unknown kind",
			good: map[string]string{"#sources-f-kind": "webhook", "#sources-f-config": `{"verify": "github", "secret": "the-webhook-secret"}`,
				"#sources-f-description": "from GitHub"},
			edit: map[string]string{"#sources-f-description": "from GitHub, edited"}, checkKey: "description", checkIs: "from GitHub, edited"},
		{kind: "rules", name: "big-spend",
			bad: map[string]string{"#rules-f-input": "payments", "#rules-f-aggregate-op": "sum", "#rules-f-when": "value > 100",
				"#rules-f-emit-topic": "alerts.big", "#rules-f-window-kind": "tumbling", "#rules-f-window-size": "1h"},
			badField: "#rules-f-aggregate-field-error", badText: "needs a field",
			good: map[string]string{"#rules-f-aggregate-field": "amount", "#rules-f-key": "customer"},
			edit: map[string]string{"#rules-f-when": "value > 200"}, checkKey: "when", checkIs: "value > 200"},
		{kind: "views", name: "balances",
			bad:      map[string]string{"#views-f-input": "payments", "#views-f-aggregate-op": "avg"},
			badField: "#views-f-aggregate-field-error", badText: "needs a field",
			good: map[string]string{"#views-f-aggregate-field": "amount", "#views-f-key": "customer"},
			edit: map[string]string{"#views-f-key": "account"}, checkKey: "key", checkIs: "account"},
		{kind: "archives", name: "app-logs",
			bad: map[string]string{"#archives-f-topics": "logs.>", "#archives-f-format": "parquet", "#archives-f-compression": "gzip",
				"#archives-f-destination": `{"type": "local", "path": "app-logs"}`},
			badField: "#archives-f-compression-error", badText: "zstd",
			good: map[string]string{"#archives-f-compression": "", "#archives-f-flush-max_age": "1m"},
			edit: map[string]string{"#archives-f-description": "the app's logs"}, checkKey: "description", checkIs: "the app's logs"},
		{kind: "schedules", name: "daily-report",
			bad:      map[string]string{"#schedules-f-cron": "every morning", "#schedules-f-event-topic": "reports.daily", "#schedules-f-event-data": `{"report": "daily"}`},
			badField: "#schedules-f-cron-error", badText: "cron",
			good: map[string]string{"#schedules-f-cron": "0 9 * * *", "#schedules-f-time_zone": "Europe/Paris"},
			edit: map[string]string{"#schedules-f-cron": "30 9 * * *"}, checkKey: "cron", checkIs: "30 9 * * *"},
	}
	for _, c := range cases {
		b.goTo("#/" + c.kind)
		b.waitFor("#" + c.kind + "-new-form")
		fields := map[string]string{}
		for k, v := range c.bad {
			fields[k] = v
		}
		if c.name != "" {
			fields["#"+c.kind+"-name"] = c.name
		}
		b.fill(fields, "#"+c.kind+"-create")
		b.waitText(c.badField, c.badText, false)
		var invalid bool
		b.eval(fmt.Sprintf(`document.querySelector(%q).getAttribute('aria-invalid') === 'true'`, "#"+strings.TrimSuffix(strings.TrimPrefix(c.badField, "#"), "-error")), &invalid)
		if !invalid {
			t.Fatalf("%s: the input at fault is not marked", c.kind)
		}
		if c.kind == "archives" && os.Getenv("HERALD_CONSOLE_SCREENSHOTS") != "" {
			b.screenshot(filepath.Join(os.Getenv("HERALD_CONSOLE_SCREENSHOTS"), "form-error.png"))
		}
		b.fill(c.good, "#"+c.kind+"-create")
		var hash string
		b.wait(c.kind+" created", func() bool {
			b.eval(`location.hash`, &hash)
			return strings.HasPrefix(hash, "#/"+c.kind+"/")
		})
		id := strings.TrimPrefix(hash, "#/"+c.kind+"/")
		if c.name != "" && id != c.name {
			t.Fatalf("%s: created %q, want %q", c.kind, id, c.name)
		}
		path := "/v1/" + c.kind + "/" + id
		stored := mustCall(t, m, testAdminKey, "GET", path, "", http.StatusOK)
		switch c.kind {
		case "rules":
			if w := stored["window"].(map[string]any); w["kind"] != "tumbling" || stored["aggregate"].(map[string]any)["field"] != "amount" {
				t.Fatalf("the rule as stored: %v", stored)
			}
		case "schedules":
			if stored["time_zone"] != "Europe/Paris" || stored["event"].(map[string]any)["data"].(map[string]any)["report"] != "daily" {
				t.Fatalf("the schedule as stored: %v", stored)
			}
		case "sources":
			if stored["kind"] != "webhook" || stored["topic"] != "github.{header.x-github-event}" {
				t.Fatalf("the source as stored: %v", stored)
			}
		}

		// Edit: the form comes filled with what is stored.
		b.waitFor("#" + c.kind + "-edit-form")
		var shown string
		b.eval(fmt.Sprintf(`document.querySelector(%q).value`, "#"+c.kind+"-f-"+c.checkKey), &shown)
		if want, _ := stored[c.checkKey].(string); shown != want {
			t.Fatalf("%s: the edit form shows %s = %q, stored %q", c.kind, c.checkKey, shown, want)
		}
		b.fill(c.edit, "#"+c.kind+"-save")
		eventually(t, c.kind+" edited", func() bool {
			return fmt.Sprint(mustCall(t, m, testAdminKey, "GET", path, "", http.StatusOK)[c.checkKey]) == c.checkIs
		})

		b.click("#" + c.kind + "-delete")
		eventually(t, c.kind+" deleted", func() bool {
			st, _ := keyCall(t, m, testAdminKey, "GET", path, "")
			return st == http.StatusNotFound
		})
		b.waitFor("#" + c.kind + "-new-form")
	}

	// The raw JSON escape hatch still takes a whole definition.
	b.goTo("#/schedules")
	b.waitFor("#schedules-new-form")
	b.eval(`document.querySelector('details.raw').open = true`, nil)
	b.fill(map[string]string{"#schedules-name": "raw-one", "#schedules-raw": `{"every": "1h", "event": {"topic": "reports.daily"}}`}, "#schedules-raw-submit")
	eventually(t, "the raw schedule", func() bool {
		st, _ := keyCall(t, m, testAdminKey, "GET", "/v1/schedules/raw-one", "")
		return st == http.StatusOK
	})
}
