package sms_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/channel"
	"github.com/heraldhq/herald/channel/sms"
)

func TestCount(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		body  string
		enc   string
		units int
		segs  int
	}{
		{"", sms.GSM7, 0, 1},
		{"hello", sms.GSM7, 5, 1},
		{strings.Repeat("a", 160), sms.GSM7, 160, 1},
		{strings.Repeat("a", 161), sms.GSM7, 161, 2},
		{strings.Repeat("a", 306), sms.GSM7, 306, 2},
		{strings.Repeat("a", 307), sms.GSM7, 307, 3},
		{"price: 5€ [ok]", sms.GSM7, 17, 1}, // € [ ] take two septets each
		{strings.Repeat("€", 80), sms.GSM7, 160, 1},
		{strings.Repeat("€", 81), sms.GSM7, 162, 2},
		// An escape pair is not split: 152 'a' then '€' starts segment 2.
		{strings.Repeat("a", 152) + "€" + strings.Repeat("a", 10), sms.GSM7, 164, 2},
		{"Grüße, Jürgen", sms.GSM7, 13, 1}, // ü is GSM-7; ß too
		{"привет", sms.UCS2, 6, 1},
		{strings.Repeat("я", 70), sms.UCS2, 70, 1},
		{strings.Repeat("я", 71), sms.UCS2, 71, 2},
		{"ok 👍", sms.UCS2, 5, 1}, // the emoji is a surrogate pair
		{strings.Repeat("👍", 35), sms.UCS2, 70, 1},
		{strings.Repeat("👍", 36), sms.UCS2, 72, 2},
	} {
		got := sms.Count(c.body)
		if got.Encoding != c.enc || got.Units != c.units || got.Count != c.segs {
			t.Errorf("Count(%.20q...) = %+v, want %s %d units %d segments", c.body, got, c.enc, c.units, c.segs)
		}
	}
}

func TestValidatePhone(t *testing.T) {
	t.Parallel()
	for _, ok := range []string{"+14155550123", "+447911123456", "+3312345678"} {
		if _, err := sms.ValidatePhone(ok); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for _, bad := range []string{"14155550123", "+0123456789", "+1 415 555 0123", "+1415555012345678", "+12", "", "+1415abc0123"} {
		if _, err := sms.ValidatePhone(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// twilio is a local server with the Twilio Messages API's shape.
type twilio struct {
	srv   *httptest.Server
	mu    sync.Mutex
	msgs  []url.Values
	reply func(to string) (int, string)
}

func newTwilio(t *testing.T) *twilio {
	tw := &twilio{}
	tw.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, pass, ok := r.BasicAuth()
		if r.Method != "POST" || r.URL.Path != "/2010-04-01/Accounts/AC123/Messages.json" || !ok || user != "AC123" || pass != "tok" ||
			r.Header.Get("Content-Type") != "application/x-www-form-urlencoded" {
			w.WriteHeader(401)
			return
		}
		b, _ := io.ReadAll(r.Body)
		form, _ := url.ParseQuery(string(b))
		if tw.reply != nil {
			if code, body := tw.reply(form.Get("To")); code != 0 {
				w.Header().Set("Retry-After", "7")
				w.WriteHeader(code)
				io.WriteString(w, body)
				return
			}
		}
		tw.mu.Lock()
		tw.msgs = append(tw.msgs, form)
		n := len(tw.msgs)
		tw.mu.Unlock()
		w.WriteHeader(201)
		io.WriteString(w, `{"sid":"SM`+strings.Repeat("0", 30)+string(rune('0'+n%10))+`","status":"queued"}`)
	}))
	t.Cleanup(tw.srv.Close)
	return tw
}

func (tw *twilio) sent() []url.Values {
	tw.mu.Lock()
	defer tw.mu.Unlock()
	return append([]url.Values(nil), tw.msgs...)
}

func newChannel(t *testing.T, p sms.Provider) *sms.Channel {
	ch, err := sms.NewChannel(sms.ChannelConfig{Provider: p, PublicURL: func() string { return "https://h.example" }})
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

func sub(t *testing.T, ch *sms.Channel, config string) *herald.Subscription {
	canon, err := ch.Validate(t.Context(), channel.ValidateParams{Config: json.RawMessage(config)})
	if err != nil {
		t.Fatal(err)
	}
	return &herald.Subscription{ID: "sub_smstest", Topic: "alerts", Channel: "sms", Config: canon, Challenge: "round-1-challenge"}
}

func deliver(t *testing.T, ch *sms.Channel, s *herald.Subscription, payload string) herald.DeliveryResult {
	sink, err := ch.Open(t.Context(), s)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	return sink.Deliver(ctx, &herald.Event{ID: herald.NewID(time.Now()), Topic: "alerts", Type: "cpu", Time: time.Now(), Payload: []byte(payload)}, 1)
}

func TestTwilioDeliverReportsSegments(t *testing.T) {
	t.Parallel()
	tw := newTwilio(t)
	p, err := sms.NewTwilio(sms.TwilioConfig{BaseURL: tw.srv.URL, AccountSID: "AC123", AuthToken: "tok", From: "+15005550006"})
	if err != nil {
		t.Fatal(err)
	}
	ch := newChannel(t, p)
	s := sub(t, ch, `{"phone":"+14155550123","text":"CPU {{.Payload.cpu}}% on {{.Payload.host}}"}`)
	res := deliver(t, ch, s, `{"cpu":97,"host":"db-1"}`)
	if res.Outcome != herald.Delivered || res.StatusCode != 201 {
		t.Fatalf("Deliver = %+v", res)
	}
	got := tw.sent()
	if len(got) != 1 || got[0].Get("To") != "+14155550123" || got[0].Get("From") != "+15005550006" ||
		!strings.HasPrefix(got[0].Get("Body"), "CPU 97% on db-1\nStop: https://h.example/v1/unsubscribe/sub_smstest.") {
		t.Fatalf("sent %v", got)
	}
	var rep sms.Report
	if err := json.Unmarshal(res.Response, &rep); err != nil || rep.Encoding != sms.GSM7 || rep.Count != sms.Count(got[0].Get("Body")).Count || rep.ProviderID == "" || rep.Characters == 0 {
		t.Fatalf("report %s: %v", res.Response, err)
	}
	// The unsubscribe link in the message checks.
	token := got[0].Get("Body")[strings.LastIndex(got[0].Get("Body"), "/")+1:]
	if !channel.CheckLinkToken(token, channel.PurposeUnsubscribe, s.ID, ch.LinkKey(s.Config)) {
		t.Fatalf("unsubscribe token %q does not check", token)
	}
}

func TestTwilioFailuresClassify(t *testing.T) {
	t.Parallel()
	tw := newTwilio(t)
	tw.reply = func(to string) (int, string) {
		switch to {
		case "+14155550100":
			return 400, `{"code":21211,"message":"Invalid 'To' Phone Number"}`
		case "+14155550101":
			return 429, `{"code":20429,"message":"Too Many Requests"}`
		case "+14155550102":
			return 503, `unavailable`
		}
		return 0, ""
	}
	p, _ := sms.NewTwilio(sms.TwilioConfig{BaseURL: tw.srv.URL, AccountSID: "AC123", AuthToken: "tok", MessagingServiceSID: "MG1"})
	ch := newChannel(t, p)
	for _, c := range []struct {
		phone string
		want  herald.DeliveryOutcome
	}{{"+14155550100", herald.Rejected}, {"+14155550101", herald.Failed}, {"+14155550102", herald.Failed}} {
		res := deliver(t, ch, sub(t, ch, `{"phone":"`+c.phone+`"}`), `x`)
		if res.Outcome != c.want || res.Err == "" {
			t.Errorf("%s: %+v, want %v", c.phone, res, c.want)
		}
		if c.want == herald.Failed && res.RetryAfter != 7*time.Second {
			t.Errorf("%s: RetryAfter %v", c.phone, res.RetryAfter)
		}
	}
	bad, _ := sms.NewTwilio(sms.TwilioConfig{BaseURL: tw.srv.URL, AccountSID: "AC123", AuthToken: "wrong", From: "+1"})
	if res := deliver(t, newChannel(t, bad), sub(t, ch, `{"phone":"+14155550123"}`), `x`); res.Outcome != herald.Failed || res.StatusCode != 401 {
		t.Fatalf("wrong token: %+v, want Failed (credentials are fixed, not the message)", res)
	}
}

func TestHTTPProviderAndVerifyCode(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var bodies []map[string]string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer k" || r.Method != "PUT" {
			w.WriteHeader(403)
			return
		}
		var m map[string]string
		_ = json.NewDecoder(r.Body).Decode(&m)
		mu.Lock()
		bodies = append(bodies, m)
		mu.Unlock()
		io.WriteString(w, `{"id":"msg-1"}`)
	}))
	defer srv.Close()
	p, err := sms.NewHTTP(sms.HTTPConfig{URL: srv.URL, Method: "PUT", Headers: map[string]string{"Authorization": "Bearer k"},
		Body: `{"number":{{json .To}},"message":{{json .Text}}}`})
	if err != nil {
		t.Fatal(err)
	}
	ch := newChannel(t, p)
	s := sub(t, ch, `{"phone":"+33612345678"}`)
	if res := ch.Verify(t.Context(), s); res.Outcome != herald.Sent {
		t.Fatalf("Verify = %+v", res)
	}
	code := channel.ConfirmCode(s)
	if len(bodies) != 1 || bodies[0]["number"] != "+33612345678" || !strings.Contains(bodies[0]["message"], code) {
		t.Fatalf("sent %v, want the code %s", bodies, code)
	}
	s2 := *s
	s2.Challenge = "round-2"
	if channel.ConfirmCode(&s2) == code {
		t.Fatal("a new round has the same code")
	}
	if res := deliver(t, ch, s, "Привет"); res.Outcome != herald.Delivered || !strings.Contains(string(res.Response), `"encoding":"UCS-2"`) {
		t.Fatalf("Deliver = %+v %s", res, res.Response)
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	ch := newChannel(t, mustHTTP(t))
	for _, c := range []struct{ config, field string }{
		{`{}`, "phone"}, {`{"phone":"0612345678"}`, "phone"}, {`{"phone":"+14155550123","text":"{{.Nope}}"}`, "text"},
		{`{"phone":"+14155550123","html":"x"}`, "html"},
	} {
		_, err := ch.Validate(t.Context(), channel.ValidateParams{Config: json.RawMessage(c.config)})
		if e, ok := err.(*herald.Error); !ok || e.Field != c.field {
			t.Errorf("Validate(%s) = %v, want field %s", c.config, err, c.field)
		}
	}
	canon, _ := ch.Validate(t.Context(), channel.ValidateParams{Config: json.RawMessage(`{"phone":"+14155550123"}`)})
	if strings.Contains(string(ch.Public(canon)), "link_key") || !ch.Reverify(canon, json.RawMessage(`{"phone":"+14155550124"}`)) {
		t.Fatal("Public or Reverify")
	}
}

func mustHTTP(t *testing.T) *sms.HTTP {
	p, err := sms.NewHTTP(sms.HTTPConfig{URL: "https://sms.example/send"})
	if err != nil {
		t.Fatal(err)
	}
	return p
}
