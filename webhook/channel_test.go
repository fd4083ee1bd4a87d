package webhook

import (
	"maps"
	"strings"
	"testing"

	"github.com/heraldhq/herald"
)

func TestDestination(t *testing.T) {
	c := NewChannel(NewSender(SenderConfig{}), ChannelConfig{})
	for _, tc := range []struct{ url, want string }{
		{"https://Hooks.Example.com/a?b=c", "https://hooks.example.com"},
		{"http://127.0.0.1:8080/x?token=s3cret", "http://127.0.0.1:8080"},
	} {
		if got := c.Destination(Config{URL: tc.url}.Encode()); got != tc.want {
			t.Errorf("Destination(%q) = %q, want %q", tc.url, got, tc.want)
		}
	}
	if got := c.Destination([]byte(`not json`)); got != "" {
		t.Errorf("Destination of a broken config = %q, want none", got)
	}
}

func TestReservedHeaders(t *testing.T) {
	for _, name := range []string{"webhook-id", "Webhook-Signature", "webhook-anything", "Herald-Topic", "herald-x",
		"Content-Type", "content-length", "Host", "User-Agent", "Connection", "Transfer-Encoding"} {
		_, err := validateHeaders(map[string]string{name: "v"})
		if !herald.IsCode(err, herald.CodeInvalid) || !strings.Contains(err.Error(), "reserved") {
			t.Errorf("header %q: err = %v, want reserved", name, err)
		}
	}
	for _, name := range []string{"Authorization", "X-Webhook-Id", "X-Herald", "Accept", "content-md5"} {
		if _, err := validateHeaders(map[string]string{name: "v"}); err != nil {
			t.Errorf("header %q refused: %v", name, err)
		}
	}
	got, err := validateHeaders(map[string]string{"authorization": "Bearer x", "x-api-key": "k\tv"})
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]string{"Authorization": "Bearer x", "X-Api-Key": "k\tv"}; !maps.Equal(got, want) {
		t.Errorf("canonical headers %v, want %v", got, want)
	}
}
