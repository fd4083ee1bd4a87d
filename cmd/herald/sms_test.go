package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
)

// smsProvider is a local server with the Twilio Messages API's shape.
type smsProvider struct {
	mu   sync.Mutex
	msgs []url.Values
}

func (p *smsProvider) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	user, pass, _ := r.BasicAuth()
	if r.URL.Path != "/2010-04-01/Accounts/ACtest/Messages.json" || user != "ACtest" || pass != "sms-token" {
		w.WriteHeader(401)
		return
	}
	b, _ := io.ReadAll(r.Body)
	form, _ := url.ParseQuery(string(b))
	p.mu.Lock()
	p.msgs = append(p.msgs, form)
	p.mu.Unlock()
	w.WriteHeader(201)
	io.WriteString(w, `{"sid":"SMtest","status":"queued"}`)
}

func (p *smsProvider) to(phone string) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, m := range p.msgs {
		if m.Get("To") == phone {
			out = append(out, m.Get("Body"))
		}
	}
	return out
}

// An SMS subscription through the real server and a Twilio-shaped
// provider: a code, nothing before it is typed, a wrong code refused, the
// right one confirms; events arrive with a Stop link; the attempt log
// reports the segments; the link unsubscribes.
func TestSMSSubscribeCodeDeliverUnsubscribe(t *testing.T) {
	t.Parallel()
	p := &smsProvider{}
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	m, _ := testServer(t, t.TempDir(), func(c *Config) {
		c.SMSProvider, c.SMSTwilioURL, c.SMSTwilioAccountSID, c.SMSTwilioAuthToken, c.SMSFrom = "twilio", srv.URL, "ACtest", "sms-token", "+15005550006"
	})
	emailMust(t, m, 201, "PUT", "/v1/topics/pager", `{}`)
	if status, b := emailAPICall(t, m, "POST", "/v1/subscriptions", `{"topic":"pager","channel":"sms","config":{"phone":"555-1234"}}`); status != 400 || !strings.Contains(string(b), `"config.phone"`) {
		t.Fatalf("a number that is not E.164 = %d %s", status, b)
	}
	var sub emailSub
	_ = json.Unmarshal(emailMust(t, m, 201, "POST", "/v1/subscriptions", `{"topic":"pager","channel":"sms","config":{"phone":"+14155550123","text":"{{.Payload.msg}}"}}`), &sub)
	if sub.State != "pending" {
		t.Fatalf("created %+v", sub)
	}
	emailMust(t, m, 201, "POST", "/v1/topics/pager/events", `{"msg":"before"}`)
	eventually(t, "the code", func() bool { return len(p.to("+14155550123")) > 0 })
	code := regexp.MustCompile(`\b\d{6}\b`).FindString(p.to("+14155550123")[0])
	if code == "" || len(p.to("+14155550123")) != 1 {
		t.Fatalf("messages before confirming: %q", p.to("+14155550123"))
	}
	wrong := "000000"
	if code == wrong {
		wrong = "111111"
	}
	if status, b := emailAPICall(t, m, "POST", "/v1/subscriptions/"+sub.ID+"/verify", `{"code":"`+wrong+`"}`); status != 400 || !strings.Contains(string(b), `"code"`) {
		t.Fatalf("wrong code = %d %s", status, b)
	}
	if s := emailGetSub(t, m, sub.ID); s.State != "pending" {
		t.Fatalf("after a wrong code: %+v", s)
	}
	emailMust(t, m, 200, "POST", "/v1/subscriptions/"+sub.ID+"/verify", `{"code":"`+code+`"}`)
	emailMust(t, m, 201, "POST", "/v1/topics/pager/events", `{"msg":"disk full"}`)
	var alert string
	eventually(t, "the alert", func() bool {
		for _, b := range p.to("+14155550123") {
			if strings.HasPrefix(b, "disk full\nStop: ") {
				alert = b
				return true
			}
		}
		return false
	})
	var attempts string
	eventually(t, "the attempt recorded", func() bool {
		attempts = string(emailMust(t, m, 200, "GET", "/v1/subscriptions/"+sub.ID+"/attempts", ""))
		return strings.Contains(attempts, `"outcome":"success"`)
	})
	if !strings.Contains(attempts, `\"encoding\":\"GSM-7\"`) || !strings.Contains(attempts, `\"segments\":1`) {
		t.Fatalf("attempts do not report the segments: %s", attempts)
	}
	stop := alert[strings.Index(alert, "Stop: ")+len("Stop: "):]
	if status, b := emailCallURL(t, "POST", stop, ""); status != 200 {
		t.Fatalf("unsubscribe = %d %s", status, b)
	}
	if s := emailGetSub(t, m, sub.ID); s.State != "disabled" || s.StateReason != "unsubscribed by the recipient" {
		t.Fatalf("after unsubscribing: %+v", s)
	}
}
