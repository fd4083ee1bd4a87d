package email_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald/channel"
	"github.com/heraldhq/herald/channel/channeltest"
	"github.com/heraldhq/herald/channel/email"
	"github.com/heraldhq/herald/channel/email/smtptest"
)

// The email channel passes the channel conformance suite against a real
// SMTP server (STARTTLS, AUTH): each config is a fresh address, and what
// reached it is read back from the server, the event id and key from the
// X-Herald-Event-* headers and the payload from the text part, which the
// config's template makes the payload's text alone.
func TestConformance(t *testing.T) {
	t.Parallel()
	srv := smtptest.Start(t, smtptest.Options{TLS: smtptest.StartTLS, Username: "herald", Password: "s3cret-pass"})
	auth := func(c *email.ServerConfig) {
		c.Username, c.Password, c.Timeout = "herald", "s3cret-pass", 2*time.Second
	}
	var n atomic.Int64
	config := func(*testing.T) json.RawMessage {
		return json.RawMessage(fmt.Sprintf(`{"address":"conf%d@example.com","text":"{{.Text}}"}`, n.Add(1)))
	}
	channeltest.Run(t, channeltest.Harness{
		Channel: newChannel(t, srv, auth),
		Config:  config,
		ChannelAt: func(t *testing.T, addr string) channel.Channel {
			return newChannel(t, srv, func(c *email.ServerConfig) {
				auth(c)
				host, port, _ := strings.Cut(addr, ":")
				c.Host = host
				fmt.Sscan(port, &c.Port)
			})
		},
		Received: func(t *testing.T, raw json.RawMessage) []channeltest.Message {
			cfg, err := email.ParseConfig(raw)
			if err != nil {
				t.Fatal(err)
			}
			var out []channeltest.Message
			for _, m := range srv.To(cfg.Address) {
				// MIME lines end in CRLF; the footer follows the rendered text.
				text, _, _ := strings.Cut(strings.ReplaceAll(m.Text, "\r\n", "\n"), "\n\n--\nUnsubscribe: ")
				out = append(out, channeltest.Message{EventID: m.Header.Get("X-Herald-Event-Id"), Key: m.Header.Get("X-Herald-Event-Key"), Payload: []byte(text)})
			}
			return out
		},
		Secrets:      []string{"link_key"},
		SecretConfig: config,
	})
}
