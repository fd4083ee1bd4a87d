package webhook

import (
	"errors"
	"strings"
	"testing"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/channel"
)

func TestValidateURL(t *testing.T) {
	long := "https://example.com/" + strings.Repeat("a", MaxURLLen)
	cases := []struct {
		url          string
		allowPrivate bool
		ok           bool
		refused      bool // the error names the setting and wraps channel.ErrDestinationRefused
	}{
		{"https://example.com/hook", false, true, false},
		{"http://example.com:8080/hooks/1?token=abc", false, true, false},
		{"HTTPS://Example.COM/", false, true, false},
		{"https://8.8.8.8/", false, true, false},
		{"https://[2606:4700:4700::1111]:8443/x", false, true, false},
		{"https://localhost.example.com/", false, true, false},
		{"https://my-localhost/", false, true, false},
		{"https://1password.com/", false, true, false},
		{"https://10.example/", false, true, false},

		{"", false, false, false},
		{"example.com/hook", false, false, false},
		{"//example.com/hook", false, false, false},
		{"/hook", false, false, false},
		{"ftp://example.com/", false, false, false},
		{"javascript:alert(1)", false, false, false},
		{"http:example.com", false, false, false},
		{"https://", false, false, false},
		{"https:///path", false, false, false},
		{"https://:443/", false, false, false},
		{"https://user:pass@example.com/", false, false, false},
		{"https://token@example.com/", false, false, false},
		{"https://example.com:0/", false, false, false},
		{"https://example.com:65536/", false, false, false},
		{"https://example.com:99999999999999999999/", false, false, false},
		{"https://exa mple.com/", false, false, false},
		{long, false, false, false},
		{"http://127.1/", false, false, false},
		{"http://2130706433/", false, false, false},
		{"http://0x7f000001/", false, false, false},
		{"http://0x7f.0.0.1/", false, false, false},
		{"http://127.0.0.01/", false, false, false},
		{"http://127.1/", true, false, false},

		{"http://127.0.0.1:8080/", false, false, true},
		{"http://[::1]/", false, false, true},
		{"http://[::ffff:127.0.0.1]/", false, false, true},
		{"http://169.254.169.254/latest/meta-data/", false, false, true},
		{"http://10.0.0.7/", false, false, true},
		{"http://192.168.0.1/", false, false, true},
		{"http://100.64.1.1/", false, false, true},
		{"http://0.0.0.0:8080/", false, false, true},
		{"http://[fe80::1%25eth0]/", false, false, true},
		{"http://[fd00::1]/", false, false, true},
		{"http://localhost:8080/", false, false, true},
		{"http://LOCALHOST./", false, false, true},
		{"http://api.localhost/", false, false, true},

		{"http://127.0.0.1:8080/", true, true, false},
		{"http://[::1]/", true, true, false},
		{"http://localhost:8080/", true, true, false},
		{"http://10.0.0.7/", true, true, false},
	}
	for _, c := range cases {
		err := ValidateURL(c.url, c.allowPrivate)
		if c.ok {
			if err != nil {
				t.Errorf("ValidateURL(%q, %v) = %v, want nil", c.url, c.allowPrivate, err)
			}
			continue
		}
		e, ok := errors.AsType[*herald.Error](err)
		if !ok || e.Code != herald.CodeInvalid || e.Field != "url" {
			t.Errorf("ValidateURL(%q, %v) = %#v, want CodeInvalid on field url", c.url, c.allowPrivate, err)
			continue
		}
		if got := errors.Is(err, channel.ErrDestinationRefused); got != c.refused {
			t.Errorf("ValidateURL(%q): errors.Is(channel.ErrDestinationRefused) = %v, want %v (%v)", c.url, got, c.refused, err)
		}
		if got := strings.Contains(e.Message, "HERALD_ALLOW_PRIVATE_DESTINATIONS"); got != c.refused {
			t.Errorf("ValidateURL(%q): message %q names the setting = %v, want %v", c.url, e.Message, got, c.refused)
		}
		if strings.Contains(err.Error(), "pass@") {
			t.Errorf("ValidateURL(%q): error %q repeats the credentials", c.url, err)
		}
	}
}
