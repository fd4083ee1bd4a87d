package push_test

import (
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/channel"
	"github.com/heraldhq/herald/channel/push"
)

func b64(t *testing.T, s string) []byte {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// RFC 8291 section 5 and appendix A: the worked example, byte for byte.
func TestRFC8291Example(t *testing.T) {
	t.Parallel()
	asPriv, err := ecdh.P256().NewPrivateKey(b64(t, "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw"))
	if err != nil {
		t.Fatal(err)
	}
	if got := base64.RawURLEncoding.EncodeToString(asPriv.PublicKey().Bytes()); got != "BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8" {
		t.Fatalf("as_public = %s", got)
	}
	uaPublic := b64(t, "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4")
	auth := b64(t, "BTBZMqHH6r4Tts7J_aSIgg")
	salt := b64(t, "DGv6ra1nlYgDCS1FRnbzlw")
	plaintext := []byte("When I grow up, I want to be a watermelon")
	got, err := push.Encrypt(plaintext, uaPublic, auth, asPriv, salt)
	if err != nil {
		t.Fatal(err)
	}
	const want = "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN"
	if enc := base64.RawURLEncoding.EncodeToString(got); enc != want {
		t.Fatalf("body\n got %s\nwant %s", enc, want)
	}
	ua, err := ecdh.P256().NewPrivateKey(b64(t, "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94"))
	if err != nil {
		t.Fatal(err)
	}
	back, err := push.Decrypt(got, ua, auth)
	if err != nil || string(back) != string(plaintext) {
		t.Fatalf("Decrypt = %q, %v", back, err)
	}
	got[len(got)-1] ^= 1
	if _, err := push.Decrypt(got, ua, auth); err == nil {
		t.Fatal("a tampered body decrypted")
	}
	if _, err := push.Encrypt(make([]byte, push.MaxPlaintext+1), uaPublic, auth, asPriv, salt); err == nil {
		t.Fatal("a plaintext over one record was encrypted")
	}
}

// browser is a Web Push user agent: its keys, and the push service it
// subscribed at, which checks VAPID and decrypts what arrives.
type browser struct {
	t      *testing.T
	key    *ecdh.PrivateKey
	auth   []byte
	vapid  string // the application server key it subscribed with
	srv    *httptest.Server
	mu     sync.Mutex
	status int // what the service answers next; 0 = 201
	got    []map[string]any
	hdrs   []http.Header
	paths  []string // the endpoint's path of each
	plain  [][]byte // each notification as decrypted
	errs   []string
}

func newBrowser(t *testing.T, vapidPublic string) *browser {
	k, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	b := &browser{t: t, key: k, auth: make([]byte, 16), vapid: vapidPublic}
	_, _ = rand.Read(b.auth)
	b.srv = httptest.NewServer(http.HandlerFunc(b.serve))
	t.Cleanup(b.srv.Close)
	return b
}

func (b *browser) fail(msg string, w http.ResponseWriter) {
	b.mu.Lock()
	b.errs = append(b.errs, msg)
	b.mu.Unlock()
	w.WriteHeader(400)
}

func (b *browser) serve(w http.ResponseWriter, r *http.Request) {
	// RFC 8292: "vapid t=<JWT>, k=<key>", the key the browser subscribed
	// with, the JWT signed by it for this origin.
	authz := r.Header.Get("Authorization")
	tok, k, ok := strings.Cut(strings.TrimPrefix(authz, "vapid t="), ", k=")
	if !strings.HasPrefix(authz, "vapid t=") || !ok || k != b.vapid {
		b.fail("authorization "+authz, w)
		return
	}
	pubBytes, _ := base64.RawURLEncoding.DecodeString(k)
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), pubBytes)
	if err != nil {
		b.fail("k: "+err.Error(), w)
		return
	}
	claims := jwt.MapClaims{}
	if _, err := jwt.ParseWithClaims(tok, claims, func(*jwt.Token) (any, error) { return pub, nil },
		jwt.WithValidMethods([]string{"ES256"}), jwt.WithAudience(b.srv.URL), jwt.WithExpirationRequired()); err != nil {
		b.fail("jwt: "+err.Error(), w)
		return
	}
	if exp, _ := claims.GetExpirationTime(); exp.After(time.Now().Add(24 * time.Hour)) {
		b.fail("exp more than 24h ahead", w)
		return
	}
	if sub, _ := claims.GetSubject(); !strings.HasPrefix(sub, "mailto:") {
		b.fail("sub "+sub, w)
		return
	}
	if r.Header.Get("Content-Encoding") != "aes128gcm" || r.Header.Get("TTL") == "" || r.Header.Get("Urgency") == "" {
		b.fail("headers", w)
		return
	}
	body, _ := io.ReadAll(r.Body)
	plain, err := push.Decrypt(body, b.key, b.auth)
	if err != nil {
		b.fail("decrypt: "+err.Error(), w)
		return
	}
	var m map[string]any
	if err := json.Unmarshal(plain, &m); err != nil {
		b.fail("json: "+err.Error(), w)
		return
	}
	b.mu.Lock()
	b.got = append(b.got, m)
	b.hdrs = append(b.hdrs, r.Header.Clone())
	b.paths = append(b.paths, r.URL.Path)
	b.plain = append(b.plain, plain)
	status := b.status
	b.mu.Unlock()
	if status == 0 {
		status = 201
	}
	if status == 429 {
		w.Header().Set("Retry-After", "7")
	}
	w.WriteHeader(status)
}

func (b *browser) config(extra string) json.RawMessage {
	return json.RawMessage(`{"endpoint":"` + b.srv.URL + `/push/abc","expirationTime":null,"keys":{"p256dh":"` +
		base64.RawURLEncoding.EncodeToString(b.key.PublicKey().Bytes()) + `","auth":"` + base64.RawURLEncoding.EncodeToString(b.auth) + `"}` + extra + `}`)
}

func openSink(t *testing.T, ch *push.Channel, config json.RawMessage) (channel.Sink, *herald.Subscription) {
	t.Helper()
	canon, err := ch.Validate(t.Context(), channel.ValidateParams{Config: config})
	if err != nil {
		t.Fatalf("Validate: %v", err)
	}
	sub := &herald.Subscription{ID: "sub_push", Topic: "orders.>", Channel: push.Name, Config: canon, State: herald.StateActive}
	s, err := ch.Open(t.Context(), sub)
	if err != nil {
		t.Fatal(err)
	}
	return s, sub
}

func event(payload string) *herald.Event {
	now := time.Now()
	return &herald.Event{ID: herald.NewID(now), Topic: "orders.paid", Type: "order.paid", Time: now, ContentType: "application/json", Payload: []byte(payload)}
}

func webPushChannel(t *testing.T) (*push.Channel, *push.VAPID) {
	priv, _, err := push.GenerateVAPIDKey()
	if err != nil {
		t.Fatal(err)
	}
	v, err := push.NewVAPID(priv, "mailto:ops@example.com", nil)
	if err != nil {
		t.Fatal(err)
	}
	ch, err := push.NewChannel(push.ChannelConfig{VAPID: v, AllowPrivate: true, PublicURL: func() string { return "https://herald.example" }})
	if err != nil {
		t.Fatal(err)
	}
	return ch, v
}

// Web Push end to end against a push service that checks VAPID and a
// receiver that decrypts: the notification, its headers, and the push
// service's answers classified (410 and 404 gone, 429 retried with its
// wait, 413 refused for good).
func TestWebPushDeliver(t *testing.T) {
	t.Parallel()
	ch, v := webPushChannel(t)
	b := newBrowser(t, v.PublicKey())
	sink, _ := openSink(t, ch, b.config(`,"title":"Paid {{.Payload.id}}","body":"{{.Payload.amount}} EUR","url":"https://shop.example/o/{{.Payload.id}}","ttl":"1h","urgency":"high"`))

	ev := event(`{"id":"A7","amount":12}`)
	if res := sink.Deliver(t.Context(), ev, 1); res.Outcome != herald.Delivered {
		t.Fatalf("Deliver = %+v (receiver: %v)", res, b.errs)
	}
	b.mu.Lock()
	got, hdr := b.got[0], b.hdrs[0]
	b.mu.Unlock()
	if got["title"] != "Paid A7" || got["body"] != "12 EUR" || got["url"] != "https://shop.example/o/A7" || got["event_id"] != ev.ID ||
		got["topic"] != "orders.paid" || got["type"] != "order.paid" || !strings.HasPrefix(got["unsubscribe_url"].(string), "https://herald.example/v1/unsubscribe/sub_push.") {
		t.Fatalf("notification %v", got)
	}
	if d, _ := got["data"].(map[string]any); d["id"] != "A7" {
		t.Fatalf("data %v", got["data"])
	}
	if hdr.Get("TTL") != "3600" || hdr.Get("Urgency") != "high" || hdr.Get("Content-Type") != "application/octet-stream" {
		t.Fatalf("headers %v", hdr)
	}

	// A payload too big for one record goes without it.
	big := `{"id":"B","amount":1,"pad":"` + strings.Repeat("x", 5000) + `"}`
	if res := sink.Deliver(t.Context(), event(big), 1); res.Outcome != herald.Delivered {
		t.Fatalf("big: %+v %v", res, b.errs)
	}
	b.mu.Lock()
	if b.got[1]["data"] != nil || b.got[1]["title"] != "Paid B" {
		t.Fatalf("big notification %v", b.got[1])
	}
	b.mu.Unlock()

	for _, c := range []struct {
		status  int
		outcome herald.DeliveryOutcome
	}{{410, herald.Gone}, {404, herald.Gone}, {429, herald.Failed}, {503, herald.Failed}, {413, herald.Rejected}} {
		b.mu.Lock()
		b.status = c.status
		b.mu.Unlock()
		res := sink.Deliver(t.Context(), ev, 1)
		if res.Outcome != c.outcome || res.StatusCode != c.status {
			t.Errorf("push service %d: %+v, want outcome %v", c.status, res, c.outcome)
		}
		if c.status == 429 && res.RetryAfter != 7*time.Second {
			t.Errorf("429 RetryAfter = %v", res.RetryAfter)
		}
	}
	if len(b.errs) > 0 {
		t.Fatalf("the push service refused: %v", b.errs)
	}
}

// A dead push service is a failure to retry, never Gone.
func TestWebPushUnreachable(t *testing.T) {
	t.Parallel()
	ch, v := webPushChannel(t)
	b := newBrowser(t, v.PublicKey())
	sink, _ := openSink(t, ch, b.config(""))
	b.srv.Close()
	if res := sink.Deliver(t.Context(), event(`{}`), 1); res.Outcome != herald.Failed || res.Err == "" {
		t.Fatalf("Deliver to a closed service = %+v", res)
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	ch, v := webPushChannel(t)
	b := newBrowser(t, v.PublicKey())
	for _, c := range []struct{ config, field string }{
		{`{"provider":"webpush","keys":{"p256dh":"x","auth":"y"}}`, "endpoint"},
		{`{"endpoint":"ftp://push.example/x","keys":{"p256dh":"x","auth":"y"}}`, "endpoint"},
		{`{"endpoint":"https://push.example/x"}`, "keys"},
		{`{"endpoint":"https://push.example/x","keys":{"p256dh":"AAAA","auth":"` + base64.RawURLEncoding.EncodeToString(b.auth) + `"}}`, "keys.p256dh"},
		{`{"provider":"fcm","token":"abc"}`, "provider"},
		{`{"provider":"carrier-pigeon"}`, "provider"},
		{`{"provider":"webpush","endpoint":"https://push.example/x","color":"red"}`, "color"},
	} {
		_, err := ch.Validate(t.Context(), channel.ValidateParams{Config: json.RawMessage(c.config)})
		if herr, ok := err.(*herald.Error); !ok || herr.Field != c.field {
			t.Errorf("%s: %v, want an error on %q", c.config, err, c.field)
		}
	}
	for _, c := range []struct{ extra, field string }{
		{`,"ttl":"90d"`, "ttl"}, {`,"urgency":"asap"`, "urgency"}, {`,"title":"{{.Nope}}"`, "title"}, {`,"body":"{{"`, "body"},
	} {
		_, err := ch.Validate(t.Context(), channel.ValidateParams{Config: b.config(c.extra)})
		if herr, ok := err.(*herald.Error); !ok || herr.Field != c.field {
			t.Errorf("%s: %v, want an error on %q", c.extra, err, c.field)
		}
	}
	// Public shows neither keys nor the endpoint's path nor the link key;
	// an update without them keeps them.
	canon, err := ch.Validate(t.Context(), channel.ValidateParams{Config: b.config("")})
	if err != nil {
		t.Fatal(err)
	}
	pub := string(ch.Public(canon))
	if strings.Contains(pub, "p256dh") || strings.Contains(pub, "/push/abc") || strings.Contains(pub, "link_key") || !strings.Contains(pub, `"provider":"webpush"`) {
		t.Fatalf("Public = %s", pub)
	}
	next, err := ch.Validate(t.Context(), channel.ValidateParams{Config: json.RawMessage(`{"title":"new"}`), Previous: canon})
	if err != nil {
		t.Fatal(err)
	}
	a, _ := push.ParseConfig(canon)
	n, _ := push.ParseConfig(next)
	if n.Endpoint != a.Endpoint || n.Keys == nil || *n.Keys != *a.Keys || n.LinkKey != a.LinkKey || n.Title != "new" {
		t.Fatalf("update lost the stored members: %+v", n)
	}
	if ch.Reverify(canon, next) {
		t.Fatal("a title change asks to verify again")
	}
}

// The SSRF guard: without allow-private, a loopback endpoint is refused
// when written, and one that resolves there is refused when dialed.
func TestWebPushGuard(t *testing.T) {
	t.Parallel()
	priv, _, _ := push.GenerateVAPIDKey()
	v, _ := push.NewVAPID(priv, "mailto:ops@example.com", nil)
	ch, err := push.NewChannel(push.ChannelConfig{VAPID: v, PublicURL: func() string { return "https://herald.example" }})
	if err != nil {
		t.Fatal(err)
	}
	b := newBrowser(t, v.PublicKey())
	if _, err := ch.Validate(t.Context(), channel.ValidateParams{Config: b.config("")}); err == nil {
		t.Fatal("an http loopback endpoint was accepted")
	}
	// A config that got past the check (a name that resolves to loopback
	// later) is refused when dialed, and nothing reaches the receiver.
	open, _ := webPushChannel(t)
	b2 := newBrowser(t, v.PublicKey())
	canon, err := open.Validate(t.Context(), channel.ValidateParams{Config: b2.config("")})
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(b2.srv.URL)
	canon = json.RawMessage(strings.Replace(string(canon), u.Host, "localhost:"+u.Port(), 1))
	sink, err := ch.Open(t.Context(), &herald.Subscription{ID: "sub_guard", Topic: "t", Channel: push.Name, Config: canon})
	if err != nil {
		t.Fatal(err)
	}
	if res := sink.Deliver(t.Context(), event(`{}`), 1); res.Outcome != herald.Failed || res.Err != channel.ReasonDestinationRefused {
		t.Fatalf("Deliver to loopback = %+v", res)
	}
	if len(b2.got) != 0 {
		t.Fatal("the guarded client reached loopback")
	}
}

// serviceAccount makes a service-account key file for a token URI.
func serviceAccount(t *testing.T, tokenURI string) ([]byte, *rsa.PrivateKey) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	b, _ := json.Marshal(push.ServiceAccount{Type: "service_account", ProjectID: "herald-test", PrivateKeyID: "kid1",
		PrivateKey: string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})), ClientEmail: "herald@herald-test.iam.gserviceaccount.com", TokenURI: tokenURI})
	return b, k
}

// fcmServer is Google's token endpoint and the FCM v1 API in one server.
type fcmServer struct {
	t         *testing.T
	key       *rsa.PublicKey
	mu        sync.Mutex
	exchanges int
	tokens    map[string]bool
	messages  []map[string]any
	answer    func(token string) (int, string)
	errs      []string
}

func (f *fcmServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch r.URL.Path {
	case "/token":
		_ = r.ParseForm()
		claims := jwt.MapClaims{}
		_, err := jwt.ParseWithClaims(r.PostForm.Get("assertion"), claims, func(*jwt.Token) (any, error) { return f.key, nil },
			jwt.WithValidMethods([]string{"RS256"}), jwt.WithIssuer("herald@herald-test.iam.gserviceaccount.com"), jwt.WithExpirationRequired())
		if err != nil || r.PostForm.Get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" || claims["scope"] != push.FCMScope ||
			!strings.HasSuffix(claims["aud"].(string), "/token") {
			f.errs = append(f.errs, "token request: "+r.PostForm.Encode())
			w.WriteHeader(400)
			return
		}
		f.exchanges++
		tok := "ya29.token-" + string(rune('a'+f.exchanges))
		f.tokens[tok] = true
		_, _ = io.WriteString(w, `{"access_token":"`+tok+`","expires_in":3599,"token_type":"Bearer"}`)
	case "/v1/projects/herald-test/messages:send":
		tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !f.tokens[tok] {
			w.WriteHeader(401)
			_, _ = io.WriteString(w, `{"error":{"code":401,"status":"UNAUTHENTICATED"}}`)
			return
		}
		var body struct {
			Message map[string]any `json:"message"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			f.errs = append(f.errs, "send body: "+err.Error())
			w.WriteHeader(400)
			return
		}
		// FCM's data values must all be strings.
		for k, v := range body.Message["data"].(map[string]any) {
			if _, ok := v.(string); !ok {
				f.errs = append(f.errs, "data."+k+" is not a string")
			}
		}
		f.messages = append(f.messages, body.Message)
		status, answer := 200, `{"name":"projects/herald-test/messages/0:1"}`
		if f.answer != nil {
			status, answer = f.answer(body.Message["token"].(string))
		}
		w.WriteHeader(status)
		_, _ = io.WriteString(w, answer)
	default:
		w.WriteHeader(404)
	}
}

// FCM v1: the service-account token exchange (once, cached), the
// message's shape, UNREGISTERED as gone, and a revoked access token
// exchanged again.
func TestFCM(t *testing.T) {
	t.Parallel()
	f := &fcmServer{t: t, tokens: map[string]bool{}}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	creds, key := serviceAccount(t, srv.URL+"/token")
	f.key = &key.PublicKey
	fcm, err := push.NewFCM(push.FCMConfig{Credentials: creds, BaseURL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	ch, err := push.NewChannel(push.ChannelConfig{FCM: fcm, PublicURL: func() string { return "https://herald.example" }})
	if err != nil {
		t.Fatal(err)
	}
	sink, _ := openSink(t, ch, json.RawMessage(`{"provider":"fcm","token":"dev-token-1","body":"{{.Payload.amount}} EUR"}`))
	for range 3 {
		if res := sink.Deliver(t.Context(), event(`{"amount":5}`), 1); res.Outcome != herald.Delivered {
			t.Fatalf("Deliver = %+v (%v)", res, f.errs)
		}
	}
	f.mu.Lock()
	if f.exchanges != 1 || len(f.messages) != 3 {
		t.Fatalf("%d exchanges for %d messages; want one, cached", f.exchanges, len(f.messages))
	}
	m := f.messages[0]
	n := m["notification"].(map[string]any)
	d := m["data"].(map[string]any)
	if m["token"] != "dev-token-1" || n["title"] != "orders.paid: order.paid" || n["body"] != "5 EUR" || d["topic"] != "orders.paid" || d["payload"] != `{"amount":5}` || d["unsubscribe_url"] == "" {
		t.Fatalf("message %v", m)
	}
	// The access token is revoked: the send fails (to retry), the next
	// one exchanges again.
	clear(f.tokens)
	f.mu.Unlock()
	if res := sink.Deliver(t.Context(), event(`{"amount":5}`), 1); res.Outcome != herald.Failed || res.StatusCode != 401 {
		t.Fatalf("with a revoked token: %+v", res)
	}
	if res := sink.Deliver(t.Context(), event(`{"amount":5}`), 1); res.Outcome != herald.Delivered {
		t.Fatalf("after the revoked token: %+v", res)
	}
	f.mu.Lock()
	f.answer = func(string) (int, string) {
		return 404, `{"error":{"code":404,"status":"NOT_FOUND","details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"UNREGISTERED"}]}}`
	}
	f.mu.Unlock()
	if res := sink.Deliver(t.Context(), event(`{"amount":5}`), 1); res.Outcome != herald.Gone || res.Err != "unregistered" {
		t.Fatalf("unregistered: %+v", res)
	}
	f.mu.Lock()
	f.answer = func(string) (int, string) { return 503, `{"error":{"code":503,"status":"UNAVAILABLE"}}` }
	f.mu.Unlock()
	if res := sink.Deliver(t.Context(), event(`{"amount":5}`), 1); res.Outcome != herald.Failed {
		t.Fatalf("unavailable: %+v", res)
	}
	if len(f.errs) > 0 {
		t.Fatal(f.errs)
	}
}

// apnsServer is Apple's service over HTTP/2 with TLS.
type apnsServer struct {
	key     *ecdsa.PublicKey
	mu      sync.Mutex
	tokens  map[string]int // provider tokens seen
	got     []map[string]any
	hdrs    []http.Header
	devices []string // the device token of each
	answer  func(device string) (int, string)
	errs    []string
}

func (a *apnsServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if r.ProtoMajor != 2 {
		a.errs = append(a.errs, "not HTTP/2: "+r.Proto)
	}
	device, ok := strings.CutPrefix(r.URL.Path, "/3/device/")
	if !ok || r.Method != "POST" {
		w.WriteHeader(405)
		return
	}
	tok := strings.TrimPrefix(r.Header.Get("Authorization"), "bearer ")
	claims := jwt.MapClaims{}
	parsed, err := jwt.ParseWithClaims(tok, claims, func(*jwt.Token) (any, error) { return a.key, nil }, jwt.WithValidMethods([]string{"ES256"}), jwt.WithIssuer("TEAM123456"), jwt.WithIssuedAt())
	if err != nil || parsed.Header["kid"] != "KEY1234567" {
		a.errs = append(a.errs, fmt.Sprint("provider token: ", err))
		w.WriteHeader(403)
		_, _ = io.WriteString(w, `{"reason":"InvalidProviderToken"}`)
		return
	}
	if r.Header.Get("apns-topic") != "com.example.app" || r.Header.Get("apns-push-type") != "alert" || r.Header.Get("apns-expiration") == "" || r.Header.Get("apns-id") == "" {
		a.errs = append(a.errs, "headers")
	}
	var body map[string]any
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		a.errs = append(a.errs, "body")
	}
	a.tokens[tok]++
	a.got = append(a.got, body)
	a.hdrs = append(a.hdrs, r.Header.Clone())
	a.devices = append(a.devices, device)
	status, answer := 200, ""
	if a.answer != nil {
		status, answer = a.answer(device)
	}
	w.Header().Set("apns-id", r.Header.Get("apns-id"))
	w.WriteHeader(status)
	_, _ = io.WriteString(w, answer)
}

// APNs: HTTP/2, the provider token (kid, iss, ES256) reused, the alert's
// shape, BadDeviceToken and Unregistered as gone, an expired provider
// token renewed.
func TestAPNs(t *testing.T) {
	t.Parallel()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	a := &apnsServer{key: &k.PublicKey, tokens: map[string]int{}}
	srv := httptest.NewUnstartedServer(a)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	clock := time.Now().Add(-time.Hour) // the fake checks iat is not ahead of the real clock
	var clockMu sync.Mutex
	now := func() time.Time { clockMu.Lock(); defer clockMu.Unlock(); return clock }
	apns, err := push.NewAPNs(push.APNsConfig{Key: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), KeyID: "KEY1234567", TeamID: "TEAM123456",
		Topic: "com.example.app", BaseURL: srv.URL, Client: srv.Client(), Now: now})
	if err != nil {
		t.Fatal(err)
	}
	ch, _ := push.NewChannel(push.ChannelConfig{APNs: apns, PublicURL: func() string { return "https://herald.example" }})
	const device = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90"
	if _, err := ch.Validate(t.Context(), channel.ValidateParams{Config: json.RawMessage(`{"provider":"apns","token":"not hex!"}`)}); err == nil {
		t.Fatal("a token that is not hex was accepted")
	}
	sink, _ := openSink(t, ch, json.RawMessage(`{"provider":"apns","token":"`+device+`","urgency":"low"}`))
	ev := event(`{"x":1}`)
	for range 2 {
		if res := sink.Deliver(t.Context(), ev, 1); res.Outcome != herald.Delivered {
			t.Fatalf("Deliver = %+v %v", res, a.errs)
		}
	}
	a.mu.Lock()
	alert := a.got[0]["aps"].(map[string]any)["alert"].(map[string]any)
	if alert["title"] != "orders.paid: order.paid" || alert["body"] != `{"x":1}` || len(a.tokens) != 1 ||
		a.hdrs[0].Get("apns-priority") != "5" || a.hdrs[0].Get("apns-id") != ev.ID {
		t.Fatalf("alert %v, %d provider tokens, headers %v", a.got[0], len(a.tokens), a.hdrs[0])
	}
	a.mu.Unlock()
	// 45 minutes later the provider token is renewed.
	clockMu.Lock()
	clock = clock.Add(45 * time.Minute)
	clockMu.Unlock()
	if res := sink.Deliver(t.Context(), ev, 1); res.Outcome != herald.Delivered {
		t.Fatalf("Deliver = %+v", res)
	}
	a.mu.Lock()
	if len(a.tokens) != 2 {
		t.Fatalf("%d provider tokens after 45 minutes, want a new one", len(a.tokens))
	}
	a.mu.Unlock()
	for _, c := range []struct {
		status  int
		answer  string
		outcome herald.DeliveryOutcome
	}{
		{400, `{"reason":"BadDeviceToken"}`, herald.Gone},
		{410, `{"reason":"Unregistered","timestamp":1700000000000}`, herald.Gone},
		{400, `{"reason":"PayloadTooLarge"}`, herald.Rejected},
		{429, `{"reason":"TooManyRequests"}`, herald.Failed},
		{503, `{"reason":"ServiceUnavailable"}`, herald.Failed},
	} {
		a.mu.Lock()
		a.answer = func(string) (int, string) { return c.status, c.answer }
		a.mu.Unlock()
		if res := sink.Deliver(t.Context(), ev, 1); res.Outcome != c.outcome || res.StatusCode != c.status {
			t.Errorf("APNs %d %s: %+v, want %v", c.status, c.answer, res, c.outcome)
		}
	}
	if len(a.errs) > 0 {
		t.Fatal(a.errs)
	}
}

// Verify sends a notification whose link is the confirmation link.
func TestVerifySendsConfirmLink(t *testing.T) {
	t.Parallel()
	ch, v := webPushChannel(t)
	b := newBrowser(t, v.PublicKey())
	canon, err := ch.Validate(t.Context(), channel.ValidateParams{Config: b.config("")})
	if err != nil {
		t.Fatal(err)
	}
	sub := &herald.Subscription{ID: "sub_v", Topic: "orders.>", Channel: push.Name, Config: canon, State: herald.StatePending, Challenge: "challenge-value"}
	if res := ch.Verify(t.Context(), sub); res.Outcome != herald.Sent {
		t.Fatalf("Verify = %+v %v", res, b.errs)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.got[0]["url"] != "https://herald.example/v1/confirm/"+channel.ConfirmToken(sub) || b.got[0]["type"] != "herald.confirm" {
		t.Fatalf("confirmation notification %v", b.got[0])
	}
}
