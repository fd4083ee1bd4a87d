package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// TestAuditLogEndToEnd makes changes through the real server and reads
// them back from GET /v1/audit and the herald.audit topic: who, what,
// which object, how it ended, the request id, and the body with its
// secrets masked.
func TestAuditLogEndToEnd(t *testing.T) {
	t.Parallel()
	m, _ := testServer(t, t.TempDir(), nil)
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	t.Cleanup(receiver.Close)
	admin := testAdminKey

	mustCall(t, m, admin, "PUT", "/v1/tenants/acme", `{"name":"Acme","metadata":{"plan":"gold"}}`, 201)
	key := mustCall(t, m, admin, "POST", "/v1/keys", `{"name":"acme","scopes":["subscribe:orders.>"],"tenant":"acme"}`, 201)
	keyID, keySecret := key["id"].(string), key["secret"].(string)
	const whsec = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	body := `{"topic":"orders.created","url":"` + receiver.URL + `/hook?token=qs-secret-123","secret":"` + whsec +
		`","headers":{"Authorization":"Bearer header-secret-456"},"verification":"none","description":"erp"}`
	req, _ := http.NewRequestWithContext(t.Context(), "POST", m.URL()+"/v1/subscriptions", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+admin)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var sub map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&sub)
	resp.Body.Close()
	if resp.StatusCode != 201 {
		t.Fatalf("create subscription: %d %v", resp.StatusCode, sub)
	}
	subID, createReqID := sub["id"].(string), resp.Header.Get("X-Request-Id")
	mustCall(t, m, admin, "PATCH", "/v1/subscriptions/"+subID, `{"description":"erp v2"}`, 200)
	// A refused change by a tenant's key is recorded too; a publish is not.
	mustCall(t, m, keySecret, "DELETE", "/v1/tenants/acme", "", 403)
	mustCall(t, m, admin, "PUT", "/v1/topics/orders.created", `{}`, 201)
	mustCall(t, m, admin, "POST", "/v1/topics/orders.created/events", `{"n":1}`, 201)
	mustCall(t, m, admin, "DELETE", "/v1/subscriptions/"+subID, "", 204)

	type entry struct {
		ID, Time, Principal, Tenant, Action, Method, Route, Object, Result, Remote string
		RequestID                                                                  string `json:"request_id"`
		Status                                                                     int
		Changes                                                                    json.RawMessage
	}
	list := func(key, query string) []entry {
		t.Helper()
		out := mustCall(t, m, key, "GET", "/v1/audit"+query, "", 200)
		b, _ := json.Marshal(out["entries"])
		var es []entry
		if err := json.Unmarshal(b, &es); err != nil {
			t.Fatal(err)
		}
		return es
	}
	all := list(admin, "")
	var actions []string
	for _, e := range all {
		actions = append(actions, e.Action+" "+e.Object)
	}
	want := []string{
		"DELETE /v1/subscriptions/{id} " + subID,
		"PUT /v1/topics/{topic} orders.created",
		"DELETE /v1/tenants/{id} acme",
		"PATCH /v1/subscriptions/{id} " + subID,
		"POST /v1/subscriptions " + subID,
		"POST /v1/keys " + keyID,
		"PUT /v1/tenants/{id} acme",
	}
	if strings.Join(actions, "\n") != strings.Join(want, "\n") {
		t.Fatalf("audit log, newest first:\n%s\nwant:\n%s", strings.Join(actions, "\n"), strings.Join(want, "\n"))
	}
	create := all[4]
	if create.Principal != "admin" || create.Status != 201 || create.Result != "success" || create.RequestID != createReqID ||
		create.Remote == "" || create.Time == "" {
		t.Fatalf("the creation's entry: %+v (request id %s)", create, createReqID)
	}
	raw, _ := json.Marshal(all)
	for _, secret := range []string{whsec, "qs-secret-123", "header-secret-456", keySecret} {
		if strings.Contains(string(raw), secret) {
			t.Fatalf("the audit log holds a secret %q: %s", secret, raw)
		}
	}
	var changes map[string]any
	if err := json.Unmarshal(create.Changes, &changes); err != nil || changes["secret"] != "***" || changes["description"] != "erp" ||
		changes["headers"].(map[string]any)["Authorization"] != "***" || !strings.HasSuffix(changes["url"].(string), "/hook?***") {
		t.Fatalf("the creation's changes: %s, %v", create.Changes, err)
	}
	refused := list(admin, "?principal="+keyID)
	if len(refused) != 1 || refused[0].Status != 403 || refused[0].Result != "failure" || refused[0].Tenant != "acme" {
		t.Fatalf("the tenant key's entries: %+v", refused)
	}
	if es := list(admin, "?action="+url.QueryEscape("PUT /v1/tenants/{id}")); len(es) != 1 || es[0].Object != "acme" {
		t.Fatalf("by action: %+v", es)
	}
	if es := list(admin, "?object="+subID); len(es) != 3 {
		t.Fatalf("by object: %+v", es)
	}
	// Pages, newest first.
	page := mustCall(t, m, admin, "GET", "/v1/audit?limit=3", "", 200)
	next, _ := page["next_cursor"].(string)
	if len(page["entries"].([]any)) != 3 || next == "" {
		t.Fatalf("first page: %v", page)
	}
	if es := list(admin, "?limit=10&cursor="+url.QueryEscape(next)); len(es) != 4 || es[0].ID != all[3].ID {
		t.Fatalf("second page: %+v", es)
	}
	wantProblem(t, m, admin, "GET", "/v1/audit?since=yesterday", "", 400, "invalid", "since")
	// A tenant's key reads its tenant's entries only.
	if es := list(keySecret, ""); len(es) != 1 || es[0].Principal != keyID {
		t.Fatalf("the tenant key reads: %+v", es)
	}
	// Each entry went to herald.audit too.
	events := mustCall(t, m, admin, "GET", "/v1/topics/herald.audit/events?limit=100", "", 200)
	if n := len(events["events"].([]any)); n != len(all) {
		t.Fatalf("herald.audit holds %d events, want %d", n, len(all))
	}
}

// TestAuditWalksEveryChange calls every operation that changes something,
// as the served OpenAPI document lists them (POST, PUT, PATCH, DELETE),
// and checks that each call is in the audit log, whatever it answered:
// topics, keys, tenants, subscriptions, sources, schemas, schedules,
// archives, rules, views, users and portal links alike. Only publishing
// (recorded in the topics' own logs), connection tokens (which change
// nothing) and the public routes (no caller to name) are left out.
func TestAuditWalksEveryChange(t *testing.T) {
	t.Parallel()
	m, _ := testServer(t, t.TempDir(), nil)
	status, doc := keyCall(t, m, testAdminKey, "GET", "/v1/openapi.json", "")
	if status != 200 {
		t.Fatalf("openapi.json: %d", status)
	}
	notAudited := map[string]bool{
		"POST /v1/topics/{topic}/events": true, "POST /v1/topics/{topic}/events:batch": true, "POST /v1/tokens": true,
	}
	values := strings.NewReplacer("{topic}", "walk.topic", "{id}", "walk-id", "{name}", "walk", "{key}", "k",
		"{user}", "u1", "{event_id}", "01JAAAAAAAAAAAAAAAAAAAAAAA", "{link}", "walk-link", "{source}", "walk", "{token}", "walk")
	want := map[string]bool{}
	for path, item := range doc["paths"].(map[string]any) {
		for method, op := range item.(map[string]any) {
			method = strings.ToUpper(method)
			switch method {
			case "POST", "PUT", "PATCH", "DELETE":
			default:
				continue
			}
			action := method + " " + path
			if sec, ok := op.(map[string]any)["security"].([]any); ok && len(sec) == 0 || notAudited[action] {
				continue
			}
			want[action] = true
			keyCall(t, m, testAdminKey, method, values.Replace(path), `{}`)
		}
	}
	if len(want) < 50 {
		t.Fatalf("only %d changing operations in the document", len(want))
	}
	got := map[string]bool{}
	for cursor := ""; ; {
		page := mustCall(t, m, testAdminKey, "GET", "/v1/audit?limit=500&cursor="+url.QueryEscape(cursor), "", 200)
		for _, e := range page["entries"].([]any) {
			got[e.(map[string]any)["action"].(string)] = true
		}
		if cursor, _ = page["next_cursor"].(string); cursor == "" {
			break
		}
	}
	for action := range want {
		if !got[action] {
			t.Errorf("%s is not in the audit log", action)
		}
	}
	for _, family := range []string{"/v1/sources", "/v1/rules/", "/v1/archives/", "/v1/schedules/", "/v1/views/", "/v1/tenants/"} {
		found := false
		for action := range got {
			found = found || strings.Contains(action, family)
		}
		if !found {
			t.Errorf("no change of %s in the audit log", family)
		}
	}
}
