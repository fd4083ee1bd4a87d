package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/golang-jwt/jwt/v5"

	"github.com/heraldhq/herald/channel/push"
)

// providerFake is Google's token endpoint with the FCM HTTP v1 API, and
// Apple's APNs, in one HTTP/2 TLS server, checking each request as the
// real services would: the OAuth2 JWT bearer exchange (RS256, issuer,
// scope, audience), the access token on each send, FCM's message shape
// (data values strings); the APNs provider token (ES256, kid, iss), its
// headers and the alert's shape. It answers "gone" for the devices listed.
type providerFake struct {
	rsaKey   *rsa.PublicKey
	ecKey    *ecdsa.PublicKey
	mu       sync.Mutex
	tokens   map[string]bool
	fcm      []map[string]any
	apns     []map[string]any
	apnsHdr  []http.Header
	gone     map[string]bool
	problems []string
}

func (f *providerFake) problem(format string, args ...any) {
	f.problems = append(f.problems, fmt.Sprintf(format, args...))
}

func (f *providerFake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r.ProtoMajor != 2 {
		f.problem("%s %s over %s, not HTTP/2", r.Method, r.URL.Path, r.Proto)
	}
	switch {
	case r.URL.Path == "/token":
		_ = r.ParseForm()
		claims := jwt.MapClaims{}
		_, err := jwt.ParseWithClaims(r.PostForm.Get("assertion"), claims, func(*jwt.Token) (any, error) { return f.rsaKey, nil },
			jwt.WithValidMethods([]string{"RS256"}), jwt.WithIssuer("herald@herald-test.iam.gserviceaccount.com"), jwt.WithExpirationRequired())
		if err != nil || r.PostForm.Get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" || claims["scope"] != push.FCMScope {
			f.problem("token request %s: %v", r.PostForm.Encode(), err)
			w.WriteHeader(400)
			return
		}
		if aud, _ := claims["aud"].(string); !strings.HasSuffix(aud, "/token") {
			f.problem("token audience %q", aud)
		}
		tok := fmt.Sprintf("ya29.test-%d", len(f.tokens)+1)
		f.tokens[tok] = true
		_, _ = io.WriteString(w, `{"access_token":"`+tok+`","expires_in":3599,"token_type":"Bearer"}`)
	case r.URL.Path == "/v1/projects/herald-test/messages:send":
		if !f.tokens[strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")] {
			f.problem("FCM send with authorization %q", r.Header.Get("Authorization"))
			w.WriteHeader(401)
			return
		}
		var body struct {
			Message map[string]any `json:"message"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil || r.Header.Get("Content-Type") != "application/json" {
			f.problem("FCM body: %v, content type %q", err, r.Header.Get("Content-Type"))
			w.WriteHeader(400)
			return
		}
		data, _ := body.Message["data"].(map[string]any)
		for k, v := range data {
			if _, ok := v.(string); !ok {
				f.problem("FCM data.%s is not a string", k)
			}
		}
		f.fcm = append(f.fcm, body.Message)
		if tok, _ := body.Message["token"].(string); f.gone[tok] {
			w.WriteHeader(404)
			_, _ = io.WriteString(w, `{"error":{"code":404,"status":"NOT_FOUND","details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"UNREGISTERED"}]}}`)
			return
		}
		_, _ = io.WriteString(w, `{"name":"projects/herald-test/messages/0:1"}`)
	case strings.HasPrefix(r.URL.Path, "/3/device/") && r.Method == "POST":
		device := strings.TrimPrefix(r.URL.Path, "/3/device/")
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "bearer ")
		parsed, err := jwt.ParseWithClaims(tok, jwt.MapClaims{}, func(*jwt.Token) (any, error) { return f.ecKey, nil },
			jwt.WithValidMethods([]string{"ES256"}), jwt.WithIssuer("TEAM123456"), jwt.WithIssuedAt())
		if !ok || err != nil || parsed.Header["kid"] != "KEY1234567" {
			f.problem("APNs provider token: %v", err)
			w.WriteHeader(403)
			_, _ = io.WriteString(w, `{"reason":"InvalidProviderToken"}`)
			return
		}
		for _, h := range []string{"apns-topic", "apns-push-type", "apns-expiration", "apns-priority", "apns-id"} {
			if r.Header.Get(h) == "" {
				f.problem("APNs request without %s", h)
			}
		}
		var body map[string]any
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			f.problem("APNs body: %v", err)
		}
		f.apns = append(f.apns, body)
		f.apnsHdr = append(f.apnsHdr, r.Header.Clone())
		w.Header().Set("apns-id", r.Header.Get("apns-id"))
		if f.gone[device] {
			w.WriteHeader(410)
			_, _ = io.WriteString(w, `{"reason":"Unregistered","timestamp":1700000000000}`)
			return
		}
		w.WriteHeader(200)
	default:
		f.problem("unexpected %s %s", r.Method, r.URL.Path)
		w.WriteHeader(404)
	}
}

func (f *providerFake) snapshot() (fcm, apns []map[string]any, hdr []http.Header, problems []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]map[string]any(nil), f.fcm...), append([]map[string]any(nil), f.apns...), append([]http.Header(nil), f.apnsHdr...), append([]string(nil), f.problems...)
}

// FCM and APNs through the real binary: credentials read from the files
// the settings name, events published over the API reach the fake
// providers over HTTP/2 in their real request formats, and a device the
// provider reports gone disables its subscription.
func TestPushFCMAndAPNsThroughTheServer(t *testing.T) {
	t.Parallel()
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	fake := &providerFake{rsaKey: &rsaKey.PublicKey, ecKey: &ecKey.PublicKey, tokens: map[string]bool{},
		gone: map[string]bool{"fcm-gone-token": true, strings.Repeat("ab", 32): true}}
	srv := httptest.NewUnstartedServer(fake)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)

	dir := t.TempDir()
	rsaDER, _ := x509.MarshalPKCS8PrivateKey(rsaKey)
	creds, _ := json.Marshal(push.ServiceAccount{Type: "service_account", ProjectID: "herald-test", PrivateKeyID: "kid1",
		PrivateKey:  string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: rsaDER})),
		ClientEmail: "herald@herald-test.iam.gserviceaccount.com", TokenURI: srv.URL + "/token"})
	ecDER, _ := x509.MarshalPKCS8PrivateKey(ecKey)
	fcmFile, apnsFile := filepath.Join(dir, "fcm.json"), filepath.Join(dir, "AuthKey_KEY1234567.p8")
	if err := os.WriteFile(fcmFile, creds, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(apnsFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: ecDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	client := srv.Client() // trusts the test certificate; speaks HTTP/2
	m := peopleServerHook(t, t.TempDir(), func(m *Main) { m.pushClient = client }, func(c *Config) {
		c.PushFCMCredentialsFile, c.PushFCMURL = fcmFile, srv.URL
		c.PushAPNsKeyFile, c.PushAPNsKeyID, c.PushAPNsTeamID, c.PushAPNsTopic, c.PushAPNsURL = apnsFile, "KEY1234567", "TEAM123456", "com.example.app", srv.URL
	})
	emailMust(t, m, 201, "PUT", "/v1/topics/orders", `{}`)
	device := strings.Repeat("0123456789abcdef", 4)
	subs := map[string]string{}
	for name, cfg := range map[string]string{
		"fcm":       `{"provider":"fcm","token":"fcm-device-token","title":"Order {{.Payload.id}}","body":"{{.Payload.total}} EUR"}`,
		"fcm-gone":  `{"provider":"fcm","token":"fcm-gone-token"}`,
		"apns":      `{"provider":"apns","token":"` + device + `","urgency":"high","title":"Order {{.Payload.id}}"}`,
		"apns-gone": `{"provider":"apns","token":"` + strings.Repeat("ab", 32) + `"}`,
	} {
		var s emailSub
		_ = json.Unmarshal(emailMust(t, m, 201, "POST", "/v1/subscriptions", `{"topic":"orders","channel":"push","verification":"none","config":`+cfg+`}`), &s)
		subs[name] = s.ID
	}
	emailMust(t, m, 201, "POST", "/v1/topics/orders/events", `{"id":"A-7","total":12.5}`)

	eventually(t, "the FCM and APNs sends", func() bool {
		fcm, apns, _, _ := fake.snapshot()
		return len(fcm) >= 2 && len(apns) >= 2
	})
	for _, name := range []string{"fcm-gone", "apns-gone"} {
		eventually(t, name+" disabled", func() bool { return emailGetSub(t, m, subs[name]).State == "disabled" })
	}
	fcm, apns, hdr, problems := fake.snapshot()
	if len(problems) > 0 {
		t.Fatalf("the fake providers saw: %v", problems)
	}
	var fcmMsg map[string]any
	for _, msg := range fcm {
		if msg["token"] == "fcm-device-token" {
			fcmMsg = msg
		}
	}
	n, _ := fcmMsg["notification"].(map[string]any)
	d, _ := fcmMsg["data"].(map[string]any)
	if n["title"] != "Order A-7" || n["body"] != "12.5 EUR" || d["topic"] != "orders" || d["payload"] != `{"id":"A-7","total":12.5}` ||
		!strings.Contains(fmt.Sprint(d["unsubscribe_url"]), "/v1/unsubscribe/") {
		t.Fatalf("FCM message %v", fcmMsg)
	}
	found := false
	for i, body := range apns {
		alert, _ := body["aps"].(map[string]any)["alert"].(map[string]any)
		if alert["title"] != "Order A-7" {
			continue
		}
		found = true
		if alert["body"] != `{"id":"A-7","total":12.5}` || hdr[i].Get("apns-topic") != "com.example.app" || hdr[i].Get("apns-priority") != "10" ||
			hdr[i].Get("apns-push-type") != "alert" {
			t.Fatalf("APNs alert %v, headers %v", body, hdr[i])
		}
	}
	if !found {
		t.Fatalf("no APNs alert for the device: %v", apns)
	}
	for _, name := range []string{"fcm", "apns"} {
		if s := emailGetSub(t, m, subs[name]); s.State != "active" {
			t.Errorf("%s subscription %+v, want active", name, s)
		}
	}
}
