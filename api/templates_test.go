package api

import (
	"strings"
	"testing"

	"github.com/heraldhq/herald"
)

func TestRenderTemplates(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	post := func(body string) req {
		return req{method: "POST", path: "/v1/templates:render", body: []byte(body), header: map[string]string{"Content-Type": "application/json"}}
	}
	var out renderJSON
	e.must(200, post(`{"subject":"Order {{.Payload.id}} {{.Type}}","text":"{{.Payload.total}} EUR on {{.Topic}}","html":"<b>{{.Payload.who}}</b>",
		"event":{"topic":"orders.paid","type":"order.paid","payload":{"id":"A-1","total":12.5,"who":"<i>x</i>"}}}`), &out)
	if out.Subject != "Order A-1 order.paid" || out.Text != "12.5 EUR on orders.paid" || out.HTML != "<b>&lt;i&gt;x&lt;/i&gt;</b>" {
		t.Fatalf("rendered %+v", out)
	}
	// Defaults for what is left out, and a string payload as text.
	e.must(200, post(`{"event":{"topic":"t","payload":"plain words"}}`), &out)
	if out.Subject != "t" || !strings.Contains(out.Text, "plain words") || !strings.Contains(out.HTML, "plain words") {
		t.Fatalf("defaults %+v", out)
	}
	// Errors name the template.
	e.problem(herald.CodeInvalid, "text", post(`{"text":"{{.Topik}}"}`))
	e.problem(herald.CodeInvalid, "subject", post(`{"subject":"{{.Topic"}`))
	p := e.problem(herald.CodeInvalid, "html", post(`{"html":"{{.Payload.missing}}","event":{"payload":{"other":1}}}`))
	if !strings.Contains(p.Detail, "missing") {
		t.Fatalf("detail %q", p.Detail)
	}
	e.problem(herald.CodeUnauthorized, "", req{method: "POST", path: "/v1/templates:render", body: []byte(`{}`), key: "-"})
}
