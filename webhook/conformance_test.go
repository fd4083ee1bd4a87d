package webhook_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/channel/channeltest"
	"github.com/heraldhq/herald/webhook"
)

// receiver records what each path of it received, and answers 204.
type receiver struct {
	mu     sync.Mutex
	byPath map[string][]channeltest.Message
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	r.byPath[req.URL.Path] = append(r.byPath[req.URL.Path], channeltest.Message{
		EventID: req.Header.Get("Webhook-Id"), Key: req.Header.Get("Herald-Event-Key"), Payload: body,
	})
	r.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func TestConformance(t *testing.T) {
	rec := &receiver{byPath: map[string][]channeltest.Message{}}
	srv := httptest.NewServer(rec)
	t.Cleanup(srv.Close)
	sender := webhook.NewSender(webhook.SenderConfig{AllowPrivate: true})
	t.Cleanup(sender.Close)
	ch := webhook.NewChannel(sender, webhook.ChannelConfig{AllowPrivate: true})
	channeltest.Run(t, channeltest.Harness{
		Channel: ch,
		Config: func(t *testing.T) json.RawMessage {
			path := "/" + strings.NewReplacer("/", "-", "#", "-").Replace(t.Name()) + "/" + herald.NewKeyID()
			return json.RawMessage(`{"url":"` + srv.URL + path + `","headers":{"X-Team":"conformance"}}`)
		},
		ConfigAt: func(t *testing.T, addr string) json.RawMessage {
			return json.RawMessage(`{"url":"http://` + addr + `/hook"}`)
		},
		Received: func(t *testing.T, config json.RawMessage) []channeltest.Message {
			c, err := webhook.ParseConfig(config)
			if err != nil {
				t.Fatal(err)
			}
			u, err := url.Parse(c.URL)
			if err != nil {
				t.Fatal(err)
			}
			rec.mu.Lock()
			defer rec.mu.Unlock()
			return append([]channeltest.Message(nil), rec.byPath[u.Path]...)
		},
		Secrets: []string{"secret"},
		SecretConfig: func(t *testing.T) json.RawMessage {
			return json.RawMessage(`{"url":"` + srv.URL + `/s","secret":"` + webhook.NewSecret() + `"}`)
		},
	})
}
