package api

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/channel"
	"github.com/heraldhq/herald/webhook"
)

// These tests cover the pure logic of the subscription endpoints: field
// validation, merge patches, start positions and the auth rules. The
// end-to-end tests in subscriptions_test.go run the same rules through a
// real server and store.

// newLogicServer returns a server with the webhook channel and no store,
// enough for the logic of configure and merge patches.
func newLogicServer(allowPrivate bool) *Server {
	ch := webhook.NewChannel(webhook.NewSender(webhook.SenderConfig{}), webhook.ChannelConfig{AllowPrivate: allowPrivate})
	return New(Config{}, Deps{Channels: channel.NewRegistry(ch)})
}

// hook returns the webhook config of sub.
func hook(t *testing.T, sub herald.Subscription) webhook.Config {
	t.Helper()
	c, err := webhook.ParseConfig(sub.Config)
	if err != nil {
		t.Fatalf("config %s: %v", sub.Config, err)
	}
	return c
}

// withoutConfig returns sub without its channel and config, which tests
// check apart (the config holds a random secret).
func withoutConfig(sub herald.Subscription) herald.Subscription {
	sub.Channel, sub.Config = "", nil
	return sub
}

// specFrom decodes a create body as the handler does.
func specFrom(t *testing.T, body string) subscriptionSpec {
	t.Helper()
	var spec subscriptionSpec
	if err := unmarshalStrict([]byte(body), &spec, ""); err != nil {
		t.Fatalf("decode %s: %v", body, err)
	}
	return spec
}

func TestConfigureDefaults(t *testing.T) {
	s := newLogicServer(false)
	ctx := t.Context()
	var sub herald.Subscription
	if err := s.configure(ctx, specFrom(t, `{"topic":"orders","url":"https://example.com/hook"}`), &sub, nil, false); err != nil {
		t.Fatal(err)
	}
	want := herald.Subscription{
		Retry:       herald.DefaultRetryPolicy,
		Timeout:     herald.DefaultTimeout,
		MaxInFlight: herald.DefaultMaxInFlight,
	}
	if c := hook(t, sub); sub.Channel != herald.ChannelWebhook || c.URL != "https://example.com/hook" || c.Headers != nil || !strings.HasPrefix(c.Secret, "whsec_") {
		t.Errorf("defaults: channel %q config %s; want a webhook to the URL with a fresh secret", sub.Channel, sub.Config)
	}
	if got := withoutConfig(sub); !reflect.DeepEqual(got, want) {
		t.Errorf("defaults:\n got %+v\nwant %+v", got, want)
	}

	// Every setting given.
	sub = herald.Subscription{}
	body := `{"topic":"orders.*","url":"https://example.com/h","description":"payments team",
		"filter":{"types":["b","a","a"]},"headers":{"x-team":"payments"},
		"retry":{"max_attempts":3,"initial":"1s","max":"1m"},"timeout":"30s","max_in_flight":4,
		"rate_limit":2.5,"ordered":true,"expires_after_idle":"30d"}`
	if err := s.configure(ctx, specFrom(t, body), &sub, nil, false); err != nil {
		t.Fatal(err)
	}
	want = herald.Subscription{
		Description: "payments team",
		Filter:      json.RawMessage(`{"types":["a","b"]}`),
		Retry:       herald.RetryPolicy{MaxAttempts: 3, Initial: time.Second, Max: time.Minute},
		Timeout:     30 * time.Second, MaxInFlight: 4, RateLimit: 2.5, Ordered: true,
		ExpiresAfterIdle: 30 * 24 * time.Hour,
	}
	if c := hook(t, sub); c.URL != "https://example.com/h" || !maps.Equal(c.Headers, map[string]string{"X-Team": "payments"}) {
		t.Errorf("all settings: config %s; want the URL and the canonical header", sub.Config)
	}
	if got := withoutConfig(sub); !reflect.DeepEqual(got, want) {
		t.Errorf("all settings:\n got %+v\nwant %+v", got, want)
	}

	// The same in the config object, as every channel takes it.
	var inConfig herald.Subscription
	if err := s.configure(ctx, specFrom(t, `{"topic":"orders","channel":"webhook","config":{"url":"https://example.com/h","headers":{"x-team":"payments"}}}`), &inConfig, nil, false); err != nil {
		t.Fatal(err)
	}
	if c := hook(t, inConfig); c.URL != "https://example.com/h" || !maps.Equal(c.Headers, map[string]string{"X-Team": "payments"}) {
		t.Errorf("config object: %s; want the URL and the canonical header", inConfig.Config)
	}

	// A partial retry policy takes the defaults for the rest; a long
	// initial delay raises the default max with it.
	sub = herald.Subscription{}
	if err := s.configure(ctx, specFrom(t, `{"url":"https://example.com","retry":{"initial":"6h"}}`), &sub, nil, false); err != nil {
		t.Fatal(err)
	}
	if sub.Retry != (herald.RetryPolicy{MaxAttempts: herald.DefaultRetryPolicy.MaxAttempts, Initial: 6 * time.Hour, Max: 6 * time.Hour}) {
		t.Errorf("partial retry: %+v", sub.Retry)
	}

	// An empty filter accepts everything, like none: it is not stored.
	sub = herald.Subscription{}
	if err := s.configure(ctx, specFrom(t, `{"url":"https://example.com","filter":{}}`), &sub, nil, false); err != nil {
		t.Fatal(err)
	}
	if sub.Filter != nil {
		t.Errorf("filter {} stored as %s", sub.Filter)
	}
}

func TestConfigureValidation(t *testing.T) {
	s := newLogicServer(false)
	tooManyHeaders := map[string]string{}
	for i := range herald.MaxSubscriptionHeaders + 1 {
		tooManyHeaders["X-H"+strings.Repeat("a", i)] = "v"
	}
	many, _ := json.Marshal(tooManyHeaders)
	cases := []struct {
		name, body, field string
	}{
		{"no url", `{}`, "url"},
		{"url not http", `{"url":"ftp://example.com/x"}`, "url"},
		{"url relative", `{"url":"/hook"}`, "url"},
		{"url with credentials", `{"url":"https://u:p@example.com/"}`, "url"},
		{"url too long", `{"url":"https://example.com/` + strings.Repeat("a", herald.MaxURLLen) + `"}`, "url"},
		{"url loopback", `{"url":"http://127.0.0.1:8080/hook"}`, "url"},
		{"url localhost", `{"url":"http://localhost/hook"}`, "url"},
		{"url private", `{"url":"http://10.1.2.3/hook"}`, "url"},
		{"description too long", `{"url":"https://example.com","description":"` + strings.Repeat("d", herald.MaxDescriptionLen+1) + `"}`, "description"},
		{"description NUL", `{"url":"https://example.com","description":"a\u0000b"}`, "description"},
		{"filter not an object", `{"url":"https://example.com","filter":[1]}`, "filter"},
		{"filter unknown field", `{"url":"https://example.com","filter":{"typez":["a"]}}`, "filter.typez"},
		{"filter empty types", `{"url":"https://example.com","filter":{"types":[]}}`, "filter.types"},
		{"too many headers", `{"url":"https://example.com","headers":` + string(many) + `}`, "headers"},
		{"header name not a token", `{"url":"https://example.com","headers":{"X Team":"a"}}`, "headers"},
		{"header name empty", `{"url":"https://example.com","headers":{"":"a"}}`, "headers"},
		{"header value newline", `{"url":"https://example.com","headers":{"X-A":"a\r\nX-B: b"}}`, "headers"},
		{"header value too long", `{"url":"https://example.com","headers":{"X-A":"` + strings.Repeat("v", herald.MaxHeaderValueLen+1) + `"}}`, "headers"},
		{"header twice", `{"url":"https://example.com","headers":{"X-A":"1","x-a":"2"}}`, "headers"},
		{"retry attempts zero", `{"url":"https://example.com","retry":{"max_attempts":0}}`, "retry.max_attempts"},
		{"retry attempts over", `{"url":"https://example.com","retry":{"max_attempts":101}}`, "retry.max_attempts"},
		{"retry initial too short", `{"url":"https://example.com","retry":{"initial":"1ms"}}`, "retry.initial"},
		{"retry initial malformed", `{"url":"https://example.com","retry":{"initial":"soon"}}`, "retry.initial"},
		{"retry initial negative", `{"url":"https://example.com","retry":{"initial":"-5s"}}`, "retry.initial"},
		{"retry max below initial", `{"url":"https://example.com","retry":{"initial":"1m","max":"30s"}}`, "retry.max"},
		{"retry max over", `{"url":"https://example.com","retry":{"max":"8d"}}`, "retry.max"},
		{"timeout too short", `{"url":"https://example.com","timeout":"500ms"}`, "timeout"},
		{"timeout too long", `{"url":"https://example.com","timeout":"61s"}`, "timeout"},
		{"timeout malformed", `{"url":"https://example.com","timeout":"fast"}`, "timeout"},
		{"max_in_flight zero", `{"url":"https://example.com","max_in_flight":0}`, "max_in_flight"},
		{"max_in_flight over", `{"url":"https://example.com","max_in_flight":1025}`, "max_in_flight"},
		{"rate_limit negative", `{"url":"https://example.com","rate_limit":-1}`, "rate_limit"},
		{"rate_limit over", `{"url":"https://example.com","rate_limit":100001}`, "rate_limit"},
		{"expires_after_idle too short", `{"url":"https://example.com","expires_after_idle":"59m"}`, "expires_after_idle"},
		{"expires_after_idle zero", `{"url":"https://example.com","expires_after_idle":"0s"}`, "expires_after_idle"},
		{"expires_after_idle too long", `{"url":"https://example.com","expires_after_idle":"366d"}`, "expires_after_idle"},
		{"unknown channel", `{"channel":"carrier-pigeon","config":{}}`, "channel"},
		{"webhook in config without url", `{"config":{}}`, "config.url"},
		{"webhook config member misspelt", `{"config":{"url":"https://example.com","hedaers":{}}}`, "config.hedaers"},
		{"webhook config loopback", `{"config":{"url":"http://127.0.0.1/h"}}`, "config.url"},
		{"url and config both", `{"url":"https://example.com","config":{"url":"https://example.org"}}`, "config"},
		{"secret not whsec", `{"url":"https://example.com","secret":"hunter2"}`, "secret"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var sub herald.Subscription
			err := s.configure(t.Context(), specFrom(t, c.body), &sub, nil, false)
			he, ok := err.(*herald.Error)
			if !ok || he.Code != herald.CodeInvalid || he.Field != c.field {
				t.Fatalf("err = %#v, want invalid with field %q", err, c.field)
			}
			if he.Message == "" {
				t.Error("no message")
			}
		})
	}

	// The same private URL passes when private destinations are allowed.
	open := newLogicServer(true)
	var sub herald.Subscription
	if err := open.configure(t.Context(), specFrom(t, `{"url":"http://127.0.0.1:8080/hook"}`), &sub, nil, false); err != nil {
		t.Errorf("private URL with AllowPrivateDestinations: %v", err)
	}
}

func TestParseStart(t *testing.T) {
	when := time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)
	cases := []struct {
		raw, topic string
		want       herald.StartPosition
		field      string
	}{
		{"", "orders", herald.StartPosition{}, ""},
		{"null", "orders", herald.StartPosition{}, ""},
		{`"now"`, "orders.*", herald.StartPosition{}, ""},
		{`"earliest"`, "orders.>", herald.StartPosition{Earliest: true}, ""},
		{`42`, "orders", herald.StartPosition{Seq: 42}, ""},
		{`0`, "orders", herald.StartPosition{Earliest: true}, ""},
		{`"2025-03-04T05:06:07Z"`, "orders.*", herald.StartPosition{Time: when}, ""},
		{`"2025-03-04T07:06:07+02:00"`, "orders", herald.StartPosition{Time: when}, ""},
		{`42`, "orders.*", herald.StartPosition{}, "start"},
		{`-1`, "orders", herald.StartPosition{}, "start"},
		{`1.5`, "orders", herald.StartPosition{}, "start"},
		{`"42"`, "orders", herald.StartPosition{}, "start"},
		{`"later"`, "orders", herald.StartPosition{}, "start"},
		{`"2025-03-04"`, "orders", herald.StartPosition{}, "start"},
		{`true`, "orders", herald.StartPosition{}, "start"},
		{`{"seq":1}`, "orders", herald.StartPosition{}, "start"},
	}
	for _, c := range cases {
		got, err := parseStart(json.RawMessage(c.raw), c.topic)
		if c.field != "" {
			if he, ok := err.(*herald.Error); !ok || he.Field != c.field || he.Code != herald.CodeInvalid {
				t.Errorf("start %s on %s: err %v, want invalid field %q", c.raw, c.topic, err, c.field)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("start %s on %s: %+v, %v; want %+v", c.raw, c.topic, got, err, c.want)
		}
	}
}

func TestMergePatch(t *testing.T) {
	secret := webhook.NewSecret()
	cur := herald.Subscription{
		Channel:     herald.ChannelWebhook,
		Config:      webhook.Config{URL: "https://example.com/a", Headers: map[string]string{"X-Keep": "1", "X-Drop": "2"}, Secret: secret}.Encode(),
		Description: "old",
		Filter:      json.RawMessage(`{"types":["x"],"payload":{"a":[1]}}`),
		Retry:       herald.RetryPolicy{MaxAttempts: 5, Initial: time.Second, Max: time.Minute},
		Timeout:     10 * time.Second, MaxInFlight: 8, RateLimit: 3, Ordered: true,
		ExpiresAfterIdle: 48 * time.Hour,
	}
	s := newLogicServer(false)
	apply := func(t *testing.T, patch string) (herald.Subscription, error) {
		t.Helper()
		var p map[string]json.RawMessage
		if err := json.Unmarshal([]byte(patch), &p); err != nil {
			t.Fatal(err)
		}
		doc := s.specOf(cur)
		if err := mergePatch(doc, p); err != nil {
			return herald.Subscription{}, err
		}
		b, _ := json.Marshal(doc)
		var spec subscriptionSpec
		if err := unmarshalStrict(b, &spec, ""); err != nil {
			return herald.Subscription{}, err
		}
		next := cur
		err := s.configure(t.Context(), spec, &next, cur.Config, false)
		if e, ok := errors.AsType[*herald.Error](err); ok { // as applyPatch names them
			if member, ok := strings.CutPrefix(e.Field, "config."); ok && p[member] != nil {
				e.Field = member
			}
		}
		return next, err
	}

	// An empty patch changes nothing: rendering and re-reading is lossless.
	got, err := apply(t, `{}`)
	if err != nil || !reflect.DeepEqual(got, cur) {
		t.Fatalf("empty patch: %+v, %v\nwant %+v", got, err, cur)
	}

	got, err = apply(t, `{"headers":{"x-drop":null,"X-New":"3"},"retry":{"max":"2h"},"description":null,
		"filter":{"types":["y"]},"expires_after_idle":null,"rate_limit":null,"ordered":false}`)
	if err != nil {
		t.Fatal(err)
	}
	want := cur
	want.Config = webhook.Config{URL: "https://example.com/a", Headers: map[string]string{"X-Keep": "1", "X-New": "3"}, // merged by name, case-insensitively
		Secret: secret}.Encode() // kept: not in the rendered settings
	want.Retry.Max = 2 * time.Hour                   // merged member by member
	want.Description = ""                            // null removes
	want.Filter = json.RawMessage(`{"types":["y"]}`) // replaced as a whole
	want.ExpiresAfterIdle = 0
	want.RateLimit = 0
	want.Ordered = false
	if !reflect.DeepEqual(got, want) {
		t.Errorf("patch:\n got %+v\nwant %+v", got, want)
	}

	// null on a member with a default restores the default.
	got, err = apply(t, `{"retry":null,"timeout":null,"max_in_flight":null,"headers":null,"filter":null}`)
	if err != nil {
		t.Fatal(err)
	}
	if got.Retry != herald.DefaultRetryPolicy || got.Timeout != herald.DefaultTimeout ||
		got.MaxInFlight != herald.DefaultMaxInFlight || hook(t, got).Headers != nil || got.Filter != nil || hook(t, got).Secret != secret {
		t.Errorf("nulls did not restore defaults: %+v", got)
	}

	// Errors name the field.
	if err := mergePatch(s.specOf(cur), map[string]json.RawMessage{"headers": json.RawMessage(`{"x-a":"1","X-A":"2"}`)}); !herald.IsCode(err, herald.CodeInvalid) {
		t.Errorf("a header named twice in a patch: %v", err)
	}
	for patch, field := range map[string]string{
		`{"url":null}`:                       "url",
		`{"max_in_flight":"many"}`:           "max_in_flight",
		`{"retry":{"max_attempts":0}}`:       "retry.max_attempts",
		`{"retry":"fast"}`:                   "retry",
		`{"headers":{"Host":"x"}}`:           "headers",
		`{"headers":["X-A"]}`:                "headers",
		`{"timeout":"2m"}`:                   "timeout",
		`{"filter":{"payload":{"a":"b"}}}`:   "filter.payload.a",
		`{"expires_after_idle":"5m"}`:        "expires_after_idle",
		`{"url":"http://169.254.169.254/x"}`: "url",
		`{"config":{"url":null}}`:            "config.url",
		`{"config":{"secret":"whsec_x"}}`:    "config.secret",
		`{"config":"x"}`:                     "config",
	} {
		_, err := apply(t, patch)
		if he, ok := err.(*herald.Error); !ok || he.Field != field {
			t.Errorf("patch %s: err %v, want field %q", patch, err, field)
		}
	}
}

func TestSubscriptionAuthRules(t *testing.T) {
	admin := adminPrincipal
	sub := &principal{keyID: "key_1", scopes: herald.Scopes{{Action: herald.ActionSubscribe, Pattern: "orders.>"}}}
	all := &principal{keyID: "key_2", scopes: herald.Scopes{{Action: herald.ActionSubscribe, Pattern: ">"}}}
	pub := &principal{keyID: "key_3", scopes: herald.Scopes{{Action: herald.ActionPublish, Pattern: ">"}, {Action: herald.ActionRead, Pattern: ">"}}}
	sys := &principal{keyID: "key_4", scopes: herald.Scopes{{Action: herald.ActionSubscribe, Pattern: "herald.>"}}}
	cases := []struct {
		p     *principal
		topic string
		want  bool
	}{
		{admin, "orders", true},
		{admin, "herald.subscriptions", true},
		{admin, ">", true},
		{sub, "orders.created", true},
		{sub, "orders.*", true},
		{sub, "orders.>", true},
		{sub, "orders", false}, // "orders.>" needs at least one more segment
		{sub, "payments.x", false},
		{sub, "*.created", false},
		{all, "payments.x", true},
		{all, "herald.subscriptions", false}, // system topics need admin
		{all, "herald.>", false},
		{all, "*.created", false}, // can match herald.created
		{all, ">", false},
		{sys, "herald.subscriptions", true}, // a scope an admin granted by name
		{sys, "herald.>", true},
		{sys, ">", false},
		{sys, "orders", false},
		{pub, "orders", false}, // publish and read do not let a key subscribe
		{nil, "orders", false},
	}
	for _, c := range cases {
		if got := mayManage(c.p, c.topic); got != c.want {
			name := "nil"
			if c.p != nil {
				name = strings.Join(c.p.scopes.Strings(), ",")
			}
			t.Errorf("mayManage(%s, %q) = %v, want %v", name, c.topic, got, c.want)
		}
	}
}

func TestVerificationMode(t *testing.T) {
	reqAs := func(p *principal) *http.Request {
		r := httptest.NewRequest("POST", "/v1/subscriptions", nil)
		return r.WithContext(context.WithValue(r.Context(), principalKey, p))
	}
	user := &principal{keyID: "key_1", scopes: herald.Scopes{{Action: herald.ActionSubscribe, Pattern: ">"}}}
	for _, c := range []struct {
		p      *principal
		v      string
		verify bool
		code   herald.Code
		field  string
	}{
		{user, "", true, "", ""},
		{user, "challenge", true, "", ""},
		{adminPrincipal, "none", false, "", ""},
		{user, "none", false, herald.CodeForbidden, ""},
		{user, "skip", false, herald.CodeInvalid, "verification"},
	} {
		verify, err := verificationMode(reqAs(c.p), c.v)
		if c.code == "" {
			if err != nil || verify != c.verify {
				t.Errorf("%q: verify %v, err %v; want %v", c.v, verify, err, c.verify)
			}
			continue
		}
		he, _ := err.(*herald.Error)
		if he == nil || he.Code != c.code || he.Field != c.field {
			t.Errorf("%q: err %v, want %s field %q", c.v, err, c.code, c.field)
		}
	}
}

func TestSubscriptionIDsAndTokens(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		id, ch := newSubscriptionID(), newChallenge()
		if !strings.HasPrefix(id, "sub_") || len(id) != len("sub_")+26 || strings.ToLower(id) != id {
			t.Fatalf("id %q: want sub_ and 26 lowercase base32 characters", id)
		}
		if len(ch) != 43 || strings.ContainsAny(ch, "+/=") {
			t.Fatalf("challenge %q: want 43 base64url characters", ch)
		}
		if seen[id] || seen[ch] {
			t.Fatal("repeated random value")
		}
		seen[id], seen[ch] = true, true
	}
}

func TestPositionCursorRoundTrip(t *testing.T) {
	for _, c := range []herald.Cursor{{Topic: "orders", Seq: 7}, {Topic: "a.b-c_d", Seq: 0}} {
		got, err := decodePosCursor(encodePosCursor(c))
		if err != nil || got != c {
			t.Errorf("round trip %+v: %+v, %v", c, got, err)
		}
	}
	for _, bad := range []string{"!!", "b3JkZXJz", "b3JkZXJzIHg", "YS4uYiAx"} { // "orders", "orders x", "a..b 1"
		if _, err := decodePosCursor(bad); !herald.IsCode(err, herald.CodeInvalid) {
			t.Errorf("cursor %q accepted", bad)
		}
	}
}

// FuzzSubscriptionSpec feeds create bodies and merge patches through the
// decoding and validation the handlers use. Failures must be field errors,
// and a valid subscription must read back from its rendered settings
// unchanged, since every PATCH starts from that rendering.
func FuzzSubscriptionSpec(f *testing.F) {
	f.Add([]byte(`{"topic":"orders","url":"https://example.com/h"}`), []byte(`{}`))
	f.Add([]byte(`{"url":"https://example.com/h","description":"d","filter":{"types":["a.*"],"payload":{"n":[{"numeric":[">",1]}]}},
		"headers":{"x-a":"1"},"retry":{"max_attempts":3,"initial":"1.5s","max":"1d12h"},"timeout":"2s","max_in_flight":3,
		"rate_limit":0.25,"ordered":true,"expires_after_idle":"90m","start":"earliest"}`),
		[]byte(`{"headers":{"X-A":null,"x-b":"2"},"retry":{"max":"2h"},"filter":null,"expires_after_idle":null}`))
	f.Add([]byte(`{"url":"http://127.0.0.1/","start":7}`), []byte(`{"url":"https://example.org","retry":"x"}`))
	f.Add([]byte(`{"url":"https://e.com","headers":{"Host":"x"}}`), []byte(`{"headers":[1],"timeout":null}`))
	f.Add([]byte(`{"channel":"webhook","config":{"url":"https://e.com","headers":{"a":"b"}}}`), []byte(`{"config":{"headers":{"a":null}}}`))
	s := newLogicServer(false)
	invalid := func(t *testing.T, what string, err error) {
		t.Helper()
		if e, ok := errors.AsType[*herald.Error](err); !ok || e.Code != herald.CodeInvalid || e.Message == "" {
			t.Fatalf("%s: %v is not a caller-safe invalid error", what, err)
		}
	}
	f.Fuzz(func(t *testing.T, body, patch []byte) {
		var spec subscriptionSpec
		if err := unmarshalStrict(body, &spec, ""); err != nil {
			invalid(t, "decode", err)
			return
		}
		if _, err := parseStart(spec.Start, "orders"); err != nil {
			invalid(t, "start", err)
		}
		var sub herald.Subscription
		if err := s.configure(t.Context(), spec, &sub, nil, false); err != nil {
			invalid(t, "configure", err)
			return
		}
		rendered, err := json.Marshal(s.specOf(sub))
		if err != nil {
			t.Fatal(err)
		}
		var again subscriptionSpec
		if err := unmarshalStrict(rendered, &again, ""); err != nil {
			t.Fatalf("rendered settings %s do not decode: %v", rendered, err)
		}
		var back herald.Subscription
		if err := s.configure(t.Context(), again, &back, sub.Config, false); err != nil || !reflect.DeepEqual(back, sub) {
			t.Fatalf("rendered settings %s read back as %+v, %v\nwant %+v", rendered, back, err, sub)
		}

		var p map[string]json.RawMessage
		if json.Unmarshal(patch, &p) != nil {
			return
		}
		doc := s.specOf(sub)
		if err := mergePatch(doc, p); err != nil {
			invalid(t, "merge", err)
			return
		}
		merged, err := json.Marshal(doc)
		if err != nil {
			t.Fatal(err)
		}
		var next subscriptionSpec
		if err := unmarshalStrict(merged, &next, ""); err != nil {
			invalid(t, "decode merged", err)
			return
		}
		patched := sub
		if err := s.configure(t.Context(), next, &patched, sub.Config, false); err != nil {
			invalid(t, "configure merged", err)
		}
	})
}
