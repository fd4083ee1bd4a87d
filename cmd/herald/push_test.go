package main

import (
	"crypto/ecdh"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/heraldhq/herald/channel/push"
)

// pushReceiver is a browser and its push service: it decrypts what
// arrives (RFC 8291) and answers status (201 by default).
type pushReceiver struct {
	key    *ecdh.PrivateKey
	auth   []byte
	srv    *httptest.Server
	mu     sync.Mutex
	status int
	got    []map[string]any
	errs   []string
}

func newPushReceiver(t *testing.T) *pushReceiver {
	k, _ := ecdh.P256().GenerateKey(rand.Reader)
	p := &pushReceiver{key: k, auth: make([]byte, 16)}
	_, _ = rand.Read(p.auth)
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		plain, err := push.Decrypt(body, p.key, p.auth)
		p.mu.Lock()
		defer p.mu.Unlock()
		var m map[string]any
		if err == nil {
			err = json.Unmarshal(plain, &m)
		}
		if err != nil || !strings.HasPrefix(r.Header.Get("Authorization"), "vapid t=") {
			p.errs = append(p.errs, "refused a request")
			w.WriteHeader(400)
			return
		}
		p.got = append(p.got, m)
		w.WriteHeader(max(p.status, 201))
	}))
	t.Cleanup(p.srv.Close)
	return p
}

func (p *pushReceiver) config() string {
	return `{"endpoint":"` + p.srv.URL + `/wpush/v2/xyz","expirationTime":null,"keys":{"p256dh":"` +
		base64.RawURLEncoding.EncodeToString(p.key.PublicKey().Bytes()) + `","auth":"` + base64.RawURLEncoding.EncodeToString(p.auth) + `"}}`
}

// withType returns the notifications of one type so far.
func (p *pushReceiver) withType(typ string) []map[string]any {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []map[string]any
	for _, m := range p.got {
		if got, _ := m["type"].(string); got == typ {
			out = append(out, m)
		}
	}
	return out
}

// A Web Push subscription through the real server: pending until the
// link in the confirmation notification is opened, nothing delivered
// before; then events arrive encrypted with their unsubscribe link; a 410
// from the push service disables the subscription.
func TestWebPushSubscribeConfirmDeliverGone(t *testing.T) {
	t.Parallel()
	priv, _, err := push.GenerateVAPIDKey()
	if err != nil {
		t.Fatal(err)
	}
	p := newPushReceiver(t)
	m, _ := testServer(t, t.TempDir(), func(c *Config) {
		c.PushVAPIDPrivateKey, c.PushVAPIDSubject = Secret(priv), "mailto:ops@example.com"
	})
	emailMust(t, m, 201, "PUT", "/v1/topics/orders", `{}`)
	if status, b := emailAPICall(t, m, "POST", "/v1/subscriptions", `{"topic":"orders","channel":"push","config":{"provider":"fcm","token":"x"}}`); status != 400 || !strings.Contains(string(b), `"config.provider"`) {
		t.Fatalf("a provider the server lacks = %d %s", status, b)
	}
	var sub emailSub
	_ = json.Unmarshal(emailMust(t, m, 201, "POST", "/v1/subscriptions", `{"topic":"orders","channel":"push","config":`+p.config()+`}`), &sub)
	if sub.State != "pending" || strings.Contains(string(sub.Config), "p256dh") || strings.Contains(string(sub.Config), "xyz") {
		t.Fatalf("created %+v", sub)
	}
	emailMust(t, m, 201, "POST", "/v1/topics/orders/events", `{"n":"before"}`)
	eventually(t, "the confirmation notification", func() bool { return len(p.withType("herald.confirm")) > 0 })
	if n := p.withType(""); len(n) != 0 {
		t.Fatalf("delivered before confirming: %v", n)
	}
	confirm := p.withType("herald.confirm")[0]["url"].(string)
	if status, b := emailCallURL(t, "GET", confirm, "", "Accept", "application/json"); status != 200 {
		t.Fatalf("confirm = %d %s", status, b)
	}
	eventually(t, "active", func() bool { return emailGetSub(t, m, sub.ID).State == "active" })
	emailMust(t, m, 201, "POST", "/v1/topics/orders/events", `{"n":"after"}`)
	eventually(t, "the event's notification", func() bool {
		for _, n := range p.withType("") {
			if d, _ := n["data"].(map[string]any); d["n"] == "after" {
				return true
			}
		}
		return false
	})
	for _, n := range p.withType("") {
		if !strings.Contains(n["unsubscribe_url"].(string), "/v1/unsubscribe/"+sub.ID+".") {
			t.Fatalf("no unsubscribe link: %v", n)
		}
	}
	// The browser unsubscribed: the push service answers 410.
	p.mu.Lock()
	p.status = 410
	p.mu.Unlock()
	emailMust(t, m, 201, "POST", "/v1/topics/orders/events", `{"n":"gone"}`)
	eventually(t, "disabled after 410", func() bool { return emailGetSub(t, m, sub.ID).State == "disabled" })
	// The metrics count the channel's attempts by outcome.
	_, metrics := emailAPICall(t, m, "GET", "/metrics", "")
	for _, want := range []string{`herald_deliveries_total{channel="push",outcome="delivered"}`, `herald_deliveries_total{channel="push",outcome="gone"} 1`} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if len(p.errs) > 0 {
		t.Fatal(p.errs)
	}
}

// A device subscribes itself: the page fetches the VAPID key without an
// API key, then creates its push subscription with a connection token
// whose subscribe: scope covers the topic. It is active at once and
// receives events; the token cannot reach topics beyond its scope, other
// channels, or pass as an API key elsewhere.
func TestPushDeviceSubscribesWithConnectionToken(t *testing.T) {
	t.Parallel()
	priv, pub, err := push.GenerateVAPIDKey()
	if err != nil {
		t.Fatal(err)
	}
	p := newPushReceiver(t)
	m, _ := testServer(t, t.TempDir(), func(c *Config) {
		c.PushVAPIDPrivateKey, c.PushVAPIDSubject = Secret(priv), "mailto:ops@example.com"
	})
	if status, b := emailCallURL(t, "GET", m.URL()+"/v1/push/vapid-public-key", ""); status != 200 || !strings.Contains(string(b), `"public_key":"`+pub+`"`) {
		t.Fatalf("vapid-public-key = %d %s", status, b)
	}
	emailMust(t, m, 201, "PUT", "/v1/topics/orders.eu", `{}`)
	emailMust(t, m, 201, "PUT", "/v1/topics/payroll", `{}`)
	app := mustCall(t, m, testAdminKey, "POST", "/v1/keys", `{"name":"shop backend","scopes":["subscribe:orders.>"]}`, 201)["secret"].(string)
	token := mustCall(t, m, app, "POST", "/v1/tokens", `{"scopes":["subscribe:orders.>"],"ttl":"10m"}`, 200)["token"].(string)

	device := func(body string) (int, []byte) {
		return emailCallURL(t, "POST", m.URL()+"/v1/push/subscriptions", body, "Authorization", "Bearer "+token, "Content-Type", "application/json")
	}
	if status, b := device(`{"topic":"payroll","channel":"push","config":` + p.config() + `}`); status != 403 {
		t.Fatalf("beyond the token's scope = %d %s", status, b)
	}
	if status, b := device(`{"topic":"orders.>","channel":"email","config":{"address":"a@example.com"}}`); status != 400 || !strings.Contains(string(b), `"channel"`) {
		t.Fatalf("an email subscription by token = %d %s", status, b)
	}
	if status, b := emailCallURL(t, "POST", m.URL()+"/v1/push/subscriptions", `{}`, "Authorization", "Bearer "+app); status != 401 {
		t.Fatalf("an API key as a connection token = %d %s", status, b)
	}
	if status, b := emailCallURL(t, "POST", m.URL()+"/v1/subscriptions", `{"topic":"orders.>","channel":"push","config":`+p.config()+`}`, "Authorization", "Bearer "+token); status != 401 {
		t.Fatalf("a connection token on /v1/subscriptions = %d %s", status, b)
	}
	status, b := device(`{"topic":"orders.>","channel":"push","config":` + p.config() + `}`)
	var sub emailSub
	_ = json.Unmarshal(b, &sub)
	if status != 201 || sub.State != "active" {
		t.Fatalf("device subscription = %d %s", status, b)
	}
	// The key behind the token owns it: it can see it.
	mustCall(t, m, app, "GET", "/v1/subscriptions/"+sub.ID, "", 200)
	emailMust(t, m, 201, "POST", "/v1/topics/orders.eu/events", `{"n":1}`)
	eventually(t, "the notification", func() bool { return len(p.withType("")) == 1 })
	if len(p.withType("herald.confirm")) != 0 {
		t.Fatal("a device-created subscription was asked to confirm")
	}
}
