package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// The curl and CLI examples of docs/notifications.md run from the page
// itself against the real binary and an in-process SMTP server: an email
// subscription from creation to confirmation to delivery to unsubscribe;
// the template library (put, a subscription naming a template, the CLI, a
// preview); a digest. The test changes only the links (which the page
// leaves to the reader) and shortens the digest window.

const notificationsDoc = "../../docs/notifications.md"

// runDocScriptEnv runs a shell example with extra environment variables.
func runDocScriptEnv(t *testing.T, m *Main, script string, env ...string) string {
	t.Helper()
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl is not installed")
	}
	cmd := exec.CommandContext(t.Context(), "sh", "-e", "-c", script)
	cmd.Env = append(append(os.Environ(), "HERALD_URL="+m.URL(), "HERALD_KEY="+testAdminKey), env...)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("the example failed: %v\n%s\noutput: %s", err, script, out)
	}
	return string(out)
}

func TestDocsNotificationsEmail(t *testing.T) {
	t.Parallel()
	mail := notifyMail(t)
	m := notifyServer(t, t.TempDir(), mail, nil)
	ex := docExamples(t, notificationsDoc)
	emailMust(t, m, 201, "PUT", "/v1/topics/alerts.disk", `{}`)

	var sub emailSub
	if err := json.Unmarshal([]byte(runDocScript(t, m, ex["email-subscribe"])), &sub); err != nil || sub.State != "pending" {
		t.Fatalf("subscribe: %+v %v", sub, err)
	}
	eventually(t, "the confirmation message", func() bool { return len(mail.To("ann@example.com")) == 1 })
	link := emailConfirmLink.FindString(mail.To("ann@example.com")[0].Text)
	out := runDocScriptEnv(t, m, ex["email-confirm"], "CONFIRM_LINK="+link)
	if !strings.Contains(out, `"state":"active"`) {
		t.Fatalf("confirm: %s", out)
	}
	emailMust(t, m, 201, "POST", "/v1/topics/alerts.disk/events", `{"level":"high","title":"Disk full"}`)
	eventually(t, "the alert", func() bool { return len(mail.To("ann@example.com")) == 2 })
	alert := mail.To("ann@example.com")[1]
	if got := alert.Header.Get("Subject"); got != "[alerts.disk] high: Disk full" || !strings.Contains(alert.HTML, "<h2>Disk full</h2>") {
		t.Fatalf("alert: subject %q html %q", got, alert.HTML)
	}
	unsub := strings.Trim(alert.Header.Get("List-Unsubscribe"), "<>")
	runDocScriptEnv(t, m, ex["email-unsubscribe"], "UNSUBSCRIBE_LINK="+unsub)
	if s := emailGetSub(t, m, sub.ID); s.State != "disabled" {
		t.Fatalf("after the unsubscribe example: %+v", s)
	}
}

func TestDocsNotificationsTemplatesAndDigest(t *testing.T) {
	t.Parallel()
	mail := notifyMail(t)
	m := notifyServer(t, t.TempDir(), mail, nil)
	ex := docExamples(t, notificationsDoc)
	emailMust(t, m, 201, "PUT", "/v1/topics/orders", `{}`)
	emailMust(t, m, 201, "PUT", "/v1/topics/alerts.disk", `{}`)

	if out := runDocScript(t, m, ex["template-render"]); !strings.Contains(out, `"subject":"Order A-1 paid"`) || !strings.Contains(out, `"text":"12.5 EUR"`) {
		t.Fatalf("render: %s", out)
	}
	if out := runDocScript(t, m, ex["template-put"]); !strings.Contains(out, `"name":"order-shipped"`) {
		t.Fatalf("put: %s", out)
	}
	if out := runDocScript(t, m, ex["template-subscribe"]); !strings.Contains(out, `"template":"order-shipped"`) {
		t.Fatalf("subscribe: %s", out)
	}
	out := runDocCLI(t, m, ex["template-cli"], strings.NewReplacer())
	for _, want := range []string{"created template order-paid", "order-shipped", "Order {{.Payload.id}} paid"} {
		if !strings.Contains(out, want) {
			t.Fatalf("the CLI example printed %s; want %q", out, want)
		}
	}
	for _, e := range []struct{ body, typ string }{{`{"id":"A-1"}`, "order.shipped"}, {`{"id":"A-2","total":30}`, "order.paid"}} {
		if status, b := emailAPICall(t, m, "POST", "/v1/topics/orders/events", e.body, "Herald-Event-Type", e.typ); status != 201 {
			t.Fatalf("publish = %d %s", status, b)
		}
	}
	eventually(t, "the two order messages", func() bool { return len(mail.To("shipping@example.com")) == 2 })
	var subjects []string
	for _, msg := range mail.To("shipping@example.com") {
		subjects = append(subjects, msg.Header.Get("Subject"))
	}
	// The subscription names order-shipped: it uses it for both types.
	if got := strings.Join(subjects, "|"); !strings.Contains(got, "Order A-1 has shipped") || !strings.Contains(got, "Order A-2 has shipped") {
		t.Fatalf("subjects: %s", got)
	}

	// The digest example, with a window a test can wait for, confirmed by
	// its link.
	runDocScript(t, m, strings.Replace(ex["digest-subscribe"], `"15m"`, `"3s"`, 1))
	eventually(t, "the confirmation", func() bool { return len(mail.To("ann@example.com")) == 1 })
	if status, b := emailCallURL(t, "GET", emailConfirmLink.FindString(mail.To("ann@example.com")[0].Text), "", "Accept", "application/json"); status != 200 {
		t.Fatalf("confirm = %d %s", status, b)
	}
	emailMust(t, m, 201, "POST", "/v1/topics/alerts.disk/events:batch", `{"events":[{"data":"80%","type":"disk.warn"},{"data":"95%","type":"disk.full"}]}`)
	waitFor(t, 60*time.Second, "the digest", func() bool { return len(mail.To("ann@example.com")) == 2 })
	d := mail.To("ann@example.com")[1]
	if d.Header.Get("X-Herald-Digest-Events") != "2" || !strings.Contains(d.Text, "80%") || !strings.Contains(d.Text, "95%") {
		t.Fatalf("digest: %v\n%s", d.Header, d.Text)
	}
}

// The tenant templates example: a tenant's key keeps its own
// order-shipped beside the platform's, and the admin lists the tenant's.
func TestDocsNotificationsTenantTemplates(t *testing.T) {
	t.Parallel()
	m := notifyServer(t, t.TempDir(), notifyMail(t), nil)
	mustCall(t, m, testAdminKey, "PUT", "/v1/tenants/acme", `{}`, 201)
	mustCall(t, m, testAdminKey, "PUT", "/v1/templates/order-shipped", `{"subject":"Platform {{.Payload.id}}"}`, 201)
	key := mustCall(t, m, testAdminKey, "POST", "/v1/keys", `{"name":"acme","scopes":["subscribe:orders"],"tenant":"acme"}`, 201)["secret"].(string)
	out := runDocScriptEnv(t, m, docExamples(t, notificationsDoc)["template-tenant"], "ACME_KEY="+key)
	if strings.Count(out, `"name":"order-shipped"`) != 2 || !strings.Contains(out, "Acme: order") {
		t.Fatalf("the example printed %s", out)
	}
	if got := mustCall(t, m, testAdminKey, "GET", "/v1/templates/order-shipped", "", 200)["subject"]; got != "Platform {{.Payload.id}}" {
		t.Fatalf("the platform's template became %v", got)
	}
}
