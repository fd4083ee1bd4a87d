package sms_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald/channel"
	"github.com/heraldhq/herald/channel/channeltest"
	"github.com/heraldhq/herald/channel/sms"
)

// The sms channel passes the channel conformance suite against a local
// server with the Twilio Messages API's shape: each config is a fresh
// number, and its template writes the event id, key and payload text into
// the message, which the harness reads back from the form the provider
// received (up to the Stop line every message ends with).
func TestConformance(t *testing.T) {
	t.Parallel()
	tw := newTwilio(t)
	twilioAt := func(t *testing.T, base string) channel.Channel {
		p, err := sms.NewTwilio(sms.TwilioConfig{BaseURL: base, AccountSID: "AC123", AuthToken: "tok", From: "+15005550006", Timeout: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		return newChannel(t, p)
	}
	var n atomic.Int64
	config := func(*testing.T) json.RawMessage {
		return json.RawMessage(fmt.Sprintf(`{"phone":"+1415555%04d","text":"{{.ID}} {{.Key}} {{.Text}}"}`, n.Add(1)))
	}
	channeltest.Run(t, channeltest.Harness{
		Channel:   twilioAt(t, tw.srv.URL),
		Config:    config,
		ChannelAt: func(t *testing.T, addr string) channel.Channel { return twilioAt(t, "http://"+addr) },
		Received: func(t *testing.T, raw json.RawMessage) []channeltest.Message {
			cfg, err := sms.ParseConfig(raw)
			if err != nil {
				t.Fatal(err)
			}
			var out []channeltest.Message
			for _, m := range tw.sent() {
				if m.Get("To") != cfg.Phone {
					continue
				}
				body, _, _ := strings.Cut(m.Get("Body"), "\nStop: ")
				parts := strings.SplitN(body, " ", 3)
				if len(parts) != 3 {
					t.Fatalf("message %q is not the template's", body)
				}
				out = append(out, channeltest.Message{EventID: parts[0], Key: parts[1], Payload: []byte(parts[2])})
			}
			return out
		},
		Secrets:      []string{"link_key"},
		SecretConfig: config,
	})
}
