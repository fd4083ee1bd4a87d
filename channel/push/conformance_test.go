package push_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/heraldhq/herald/channel"
	"github.com/heraldhq/herald/channel/channeltest"
	"github.com/heraldhq/herald/channel/push"
)

// The push channel passes the channel conformance suite once per
// provider, against the in-process fakes of push_test.go: a Web Push
// service that checks VAPID and decrypts, Google's token endpoint and the
// FCM v1 API, and Apple's service over HTTP/2 with TLS. Each config is a
// fresh device (an endpoint path, a registration token, a device token);
// its body template writes the event key, and the event id and payload
// are read from the members the channel sends them in.
func TestConformance(t *testing.T) {
	t.Parallel()
	t.Run("webpush", conformanceWebPush)
	t.Run("fcm", conformanceFCM)
	t.Run("apns", conformanceAPNs)
}

// keyFromBody reads the event key a config's body template ("k:{{.Key}}")
// wrote.
func keyFromBody(t *testing.T, body string) string {
	key, ok := strings.CutPrefix(body, "k:")
	if !ok {
		t.Fatalf("notification body %q is not the template's", body)
	}
	return key
}

func conformanceWebPush(t *testing.T) {
	t.Parallel()
	ch, v := webPushChannel(t)
	b := newBrowser(t, v.PublicKey())
	keys := `"keys":{"p256dh":"` + base64.RawURLEncoding.EncodeToString(b.key.PublicKey().Bytes()) + `","auth":"` + base64.RawURLEncoding.EncodeToString(b.auth) + `"}`
	var n atomic.Int64
	at := func(base string) json.RawMessage {
		return json.RawMessage(fmt.Sprintf(`{"endpoint":"%s/push/conf%d",%s,"body":"k:{{.Key}}"}`, base, n.Add(1), keys))
	}
	config := func(*testing.T) json.RawMessage { return at(b.srv.URL) }
	channeltest.Run(t, channeltest.Harness{
		Channel:  ch,
		Config:   config,
		ConfigAt: func(_ *testing.T, addr string) json.RawMessage { return at("http://" + addr) },
		Received: func(t *testing.T, raw json.RawMessage) []channeltest.Message {
			cfg, err := push.ParseConfig(raw)
			if err != nil {
				t.Fatal(err)
			}
			u, _ := url.Parse(cfg.Endpoint)
			b.mu.Lock()
			defer b.mu.Unlock()
			if len(b.errs) > 0 {
				t.Fatalf("the push service refused: %v", b.errs)
			}
			var out []channeltest.Message
			for i, p := range b.paths {
				if p != u.Path {
					continue
				}
				// The payload as the service worker reads it: the data
				// member's bytes.
				var n struct {
					Body    string          `json:"body"`
					EventID string          `json:"event_id"`
					Data    json.RawMessage `json:"data"`
				}
				if err := json.Unmarshal(b.plain[i], &n); err != nil {
					t.Fatal(err)
				}
				out = append(out, channeltest.Message{EventID: n.EventID, Key: keyFromBody(t, n.Body), Payload: n.Data})
			}
			return out
		},
		Secrets:      []string{"link_key", "keys"},
		SecretConfig: config,
	})
}

func conformanceFCM(t *testing.T) {
	t.Parallel()
	f := &fcmServer{t: t, tokens: map[string]bool{}}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	creds, key := serviceAccount(t, srv.URL+"/token")
	f.key = &key.PublicKey
	// The token exchange always reaches the fake; base is where messages go.
	fcmAt := func(t *testing.T, base string) channel.Channel {
		fcm, err := push.NewFCM(push.FCMConfig{Credentials: creds, BaseURL: base})
		if err != nil {
			t.Fatal(err)
		}
		ch, err := push.NewChannel(push.ChannelConfig{FCM: fcm, PublicURL: func() string { return "https://herald.example" }})
		if err != nil {
			t.Fatal(err)
		}
		return ch
	}
	var n atomic.Int64
	config := func(*testing.T) json.RawMessage {
		return json.RawMessage(fmt.Sprintf(`{"provider":"fcm","token":"conformance-device-%d","body":"k:{{.Key}}"}`, n.Add(1)))
	}
	channeltest.Run(t, channeltest.Harness{
		Channel:   fcmAt(t, srv.URL),
		Config:    config,
		ChannelAt: func(t *testing.T, addr string) channel.Channel { return fcmAt(t, "http://"+addr) },
		Received: func(t *testing.T, raw json.RawMessage) []channeltest.Message {
			cfg, err := push.ParseConfig(raw)
			if err != nil {
				t.Fatal(err)
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			if len(f.errs) > 0 {
				t.Fatalf("the FCM fake refused: %v", f.errs)
			}
			var out []channeltest.Message
			for _, m := range f.messages {
				if m["token"] != cfg.Token {
					continue
				}
				d := m["data"].(map[string]any)
				body := m["notification"].(map[string]any)["body"].(string)
				payload, _ := d["payload"].(string)
				out = append(out, channeltest.Message{EventID: d["event_id"].(string), Key: keyFromBody(t, body), Payload: []byte(payload)})
			}
			return out
		},
		Secrets:      []string{"link_key"},
		SecretConfig: config,
	})
}

func conformanceAPNs(t *testing.T) {
	t.Parallel()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	a := &apnsServer{key: &k.PublicKey, tokens: map[string]int{}}
	srv := httptest.NewUnstartedServer(a)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	apnsAt := func(t *testing.T, base string) channel.Channel {
		apns, err := push.NewAPNs(push.APNsConfig{Key: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), KeyID: "KEY1234567", TeamID: "TEAM123456",
			Topic: "com.example.app", BaseURL: base, Client: srv.Client()})
		if err != nil {
			t.Fatal(err)
		}
		ch, err := push.NewChannel(push.ChannelConfig{APNs: apns, PublicURL: func() string { return "https://herald.example" }})
		if err != nil {
			t.Fatal(err)
		}
		return ch
	}
	var n atomic.Int64
	config := func(*testing.T) json.RawMessage {
		return json.RawMessage(fmt.Sprintf(`{"provider":"apns","token":"%064x","body":"k:{{.Key}}"}`, n.Add(1)))
	}
	channeltest.Run(t, channeltest.Harness{
		Channel:   apnsAt(t, srv.URL),
		Config:    config,
		ChannelAt: func(t *testing.T, addr string) channel.Channel { return apnsAt(t, "https://"+addr) },
		Received: func(t *testing.T, raw json.RawMessage) []channeltest.Message {
			cfg, err := push.ParseConfig(raw)
			if err != nil {
				t.Fatal(err)
			}
			a.mu.Lock()
			defer a.mu.Unlock()
			if len(a.errs) > 0 {
				t.Fatalf("the APNs fake refused: %v", a.errs)
			}
			var out []channeltest.Message
			for i, d := range a.devices {
				if d != cfg.Token {
					continue
				}
				h := a.got[i]["herald"].(map[string]any)
				body := a.got[i]["aps"].(map[string]any)["alert"].(map[string]any)["body"].(string)
				payload, _ := h["payload"].(string)
				out = append(out, channeltest.Message{EventID: h["event_id"].(string), Key: keyFromBody(t, body), Payload: []byte(payload)})
			}
			return out
		},
		Secrets:      []string{"link_key"},
		SecretConfig: config,
	})
}
