package webhook

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/channel"
)

// countingServer is an httptest server on 127.0.0.1 that counts the
// connections it accepts and the requests that reach its handler.
type countingServer struct {
	*httptest.Server
	conns    atomic.Int64
	requests atomic.Int64
}

func newServer(t *testing.T, h http.HandlerFunc) *countingServer {
	t.Helper()
	s := &countingServer{}
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		h(w, r)
	}))
	s.Config.ConnState = func(_ net.Conn, state http.ConnState) {
		if state == http.StateNew {
			s.conns.Add(1)
		}
	}
	s.Start()
	t.Cleanup(s.Close)
	return s
}

// newSender returns a sender closed when the test ends.
func newSender(t *testing.T, cfg SenderConfig) *Sender {
	s := NewSender(cfg)
	t.Cleanup(s.Close)
	return s
}

// waitFor polls cond until it holds or ten seconds pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestSendRefusesPrivateDestinations(t *testing.T) {
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {})
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	s := newSender(t, SenderConfig{})
	for _, u := range []string{
		srv.URL,                             // a literal 127.0.0.1
		"http://localhost:" + port + "/",    // a name that resolves to loopback
		"http://[::ffff:127.0.0.1]:" + port, // the IPv4-mapped form
	} {
		res := s.Send(context.Background(), Request{URL: u, Body: []byte(`{}`)})
		if !errors.Is(res.Err, channel.ErrDestinationRefused) {
			t.Errorf("Send(%s).Err = %v, want channel.ErrDestinationRefused", u, res.Err)
		}
		if res.StatusCode != 0 || Classify(res) != OutcomeFailure {
			t.Errorf("Send(%s) = status %d, outcome %s; want 0, failure", u, res.StatusCode, Classify(res))
		}
		if strings.Contains(res.Err.Error(), u) {
			t.Errorf("error %q repeats the URL", res.Err)
		}
	}
	// Refused at dial time: not one connection reached the listener.
	if n := srv.conns.Load(); n != 0 {
		t.Fatalf("the server accepted %d connections", n)
	}
}

func TestSendDelivers(t *testing.T) {
	type seen struct {
		method, ua, ct, id string
		body               []byte
	}
	got := make(chan seen, 2)
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- seen{r.Method, r.UserAgent(), r.Header.Get("Content-Type"), r.Header.Get(HeaderID), b}
		w.WriteHeader(http.StatusAccepted)
		_, _ = io.WriteString(w, "thanks")
	})
	s := newSender(t, SenderConfig{AllowPrivate: true})
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set(HeaderID, "evt_1")
	body := []byte(`{"amount":100}`)
	res := s.Send(context.Background(), Request{URL: srv.URL + "/hook", Headers: h, Body: body})
	if res.Err != nil || res.StatusCode != http.StatusAccepted || Classify(res) != OutcomeSuccess {
		t.Fatalf("Send = %+v, outcome %s; want 202 success", res, Classify(res))
	}
	if string(res.Excerpt) != "thanks" || res.Latency <= 0 {
		t.Fatalf("excerpt %q, latency %s", res.Excerpt, res.Latency)
	}
	r := <-got
	if r.method != http.MethodPost || r.ua != "Herald/"+herald.Version || r.ct != "application/json" ||
		r.id != "evt_1" || !bytes.Equal(r.body, body) {
		t.Fatalf("the receiver saw %+v", r)
	}

	// Send takes the headers over; a caller's own User-Agent is kept.
	h = http.Header{}
	h.Set("User-Agent", "custom/1")
	s.Send(context.Background(), Request{URL: srv.URL, Headers: h, Body: body})
	if r := <-got; r.ua != "custom/1" {
		t.Fatalf("User-Agent = %q, want the caller's", r.ua)
	}
}

// TestSendSignedRoundTrip signs a request the way the dispatcher will and
// checks that a receiver using Verify accepts it.
func TestSendSignedRoundTrip(t *testing.T) {
	secret := NewSecret()
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := Verify(secret, r.Header, body, time.Now(), 0); err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	s := newSender(t, SenderConfig{AllowPrivate: true})
	key, _ := ParseSecret(secret)
	now := time.Now()
	body := []byte(`{"type":"order.created"}`)
	sign := func(keys ...[]byte) http.Header {
		h := http.Header{}
		h.Set(HeaderID, "evt_42")
		h.Set(HeaderTimestamp, strconv.FormatInt(now.Unix(), 10))
		h.Set(HeaderSignature, SignatureHeader(keys, "evt_42", now, body))
		return h
	}
	if res := s.Send(context.Background(), Request{URL: srv.URL, Headers: sign(key), Body: body}); res.StatusCode != http.StatusNoContent {
		t.Fatalf("signed request: status %d, %s", res.StatusCode, res.Excerpt)
	}
	other, _ := ParseSecret(NewSecret())
	if res := s.Send(context.Background(), Request{URL: srv.URL, Headers: sign(other), Body: body}); res.StatusCode != http.StatusUnauthorized {
		t.Fatalf("wrongly signed request: status %d, want 401", res.StatusCode)
	}
}

func TestSendDoesNotFollowRedirects(t *testing.T) {
	target := newServer(t, func(w http.ResponseWriter, r *http.Request) {})
	for _, code := range []int{http.StatusMovedPermanently, http.StatusFound, http.StatusTemporaryRedirect, http.StatusPermanentRedirect} {
		srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, target.URL+"/elsewhere", code)
		})
		s := newSender(t, SenderConfig{AllowPrivate: true})
		res := s.Send(context.Background(), Request{URL: srv.URL, Body: []byte(`{}`)})
		if res.Err != nil || res.StatusCode != code || Classify(res) != OutcomeFailure {
			t.Errorf("redirect %d: %+v, outcome %s; want status %d, failure", code, res, Classify(res), code)
		}
	}
	if n := target.requests.Load() + target.conns.Load(); n != 0 {
		t.Fatalf("the redirect target was contacted (%d)", n)
	}
}

func TestSendRetryAfter(t *testing.T) {
	date := time.Now().Add(90 * time.Second).UTC().Format(http.TimeFormat)
	cases := []struct {
		status     int
		retryAfter string
		wantMin    time.Duration
		wantMax    time.Duration
		outcome    Outcome
	}{
		{http.StatusTooManyRequests, "120", 120 * time.Second, 120 * time.Second, OutcomeRetryAfter},
		{http.StatusServiceUnavailable, "7", 7 * time.Second, 7 * time.Second, OutcomeRetryAfter},
		{http.StatusServiceUnavailable, date, 80 * time.Second, 90 * time.Second, OutcomeRetryAfter},
		{http.StatusTooManyRequests, "", 0, 0, OutcomeFailure},
		{http.StatusTooManyRequests, "0", 0, 0, OutcomeFailure},
		{http.StatusTooManyRequests, "soon", 0, 0, OutcomeFailure},
		{http.StatusTooManyRequests, "9999999999", MaxRetryAfter, MaxRetryAfter, OutcomeRetryAfter},
		{http.StatusInternalServerError, "120", 0, 0, OutcomeFailure}, // only 429 and 503 count
		{http.StatusGone, "", 0, 0, OutcomeGone},
		{http.StatusNotFound, "", 0, 0, OutcomeFailure},
		{http.StatusOK, "120", 0, 0, OutcomeSuccess},
	}
	s := newSender(t, SenderConfig{AllowPrivate: true})
	for _, c := range cases {
		srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
			if c.retryAfter != "" {
				w.Header().Set("Retry-After", c.retryAfter)
			}
			w.WriteHeader(c.status)
		})
		res := s.Send(context.Background(), Request{URL: srv.URL})
		if res.StatusCode != c.status || res.RetryAfter < c.wantMin || res.RetryAfter > c.wantMax || Classify(res) != c.outcome {
			t.Errorf("%d Retry-After %q: status %d, RetryAfter %s, outcome %s; want %s..%s, %s",
				c.status, c.retryAfter, res.StatusCode, res.RetryAfter, Classify(res), c.wantMin, c.wantMax, c.outcome)
		}
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"0", 0, true},
		{"30", 30 * time.Second, true},
		{"86400", 24 * time.Hour, true},
		{"86401", MaxRetryAfter, true},
		{"18446744073709551615", MaxRetryAfter, true},
		{"Sat, 01 Mar 2025 12:02:00 GMT", 2 * time.Minute, true},
		{"Saturday, 01-Mar-25 12:00:30 GMT", 30 * time.Second, true}, // RFC 850
		{"Sat Mar  1 12:00:10 2025", 10 * time.Second, true},         // ANSI C
		{"Sat, 01 Mar 2025 11:00:00 GMT", 0, true},                   // in the past
		{"Sun, 01 Mar 2026 12:00:00 GMT", MaxRetryAfter, true},
		{"", 0, false},
		{"-5", 0, false},
		{"1.5", 0, false},
		{" 5", 0, false},
		{"tomorrow", 0, false},
	}
	for _, c := range cases {
		got, ok := ParseRetryAfter(c.in, now)
		if got != c.want || ok != c.ok {
			t.Errorf("ParseRetryAfter(%q) = %s, %v; want %s, %v", c.in, got, ok, c.want, c.ok)
		}
	}
}

func TestSendExcerptCappedAndBodyDrained(t *testing.T) {
	body := bytes.Repeat([]byte("0123456789abcdef"), 1000) // 16000 bytes, under MaxDrain
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = w.Write(body)
	})
	s := newSender(t, SenderConfig{AllowPrivate: true})
	for range 3 {
		res := s.Send(context.Background(), Request{URL: srv.URL})
		if res.StatusCode != 500 || !bytes.Equal(res.Excerpt, body[:MaxExcerpt]) {
			t.Fatalf("status %d, excerpt of %d bytes; want 500 and the first %d bytes", res.StatusCode, len(res.Excerpt), MaxExcerpt)
		}
	}
	// The rest of each body was drained, so one connection served all three.
	if n := srv.conns.Load(); n != 1 {
		t.Fatalf("%d connections for 3 sequential sends, want 1", n)
	}
}

func TestSendHugeResponseDoesNotHang(t *testing.T) {
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		chunk := make([]byte, 32<<10)
		for i := 0; i < 1<<12; i++ { // 128 MiB, far past MaxDrain
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	})
	s := newSender(t, SenderConfig{AllowPrivate: true})
	res := s.Send(context.Background(), Request{URL: srv.URL})
	if res.StatusCode != 200 || len(res.Excerpt) != MaxExcerpt {
		t.Fatalf("status %d, excerpt %d bytes", res.StatusCode, len(res.Excerpt))
	}
}

func TestSendTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	t.Cleanup(func() { close(release) }) // runs before srv.Close
	s := newSender(t, SenderConfig{AllowPrivate: true})
	res := s.Send(context.Background(), Request{URL: srv.URL, Timeout: 50 * time.Millisecond})
	if !errors.Is(res.Err, context.DeadlineExceeded) || res.StatusCode != 0 || Classify(res) != OutcomeFailure {
		t.Fatalf("Send to a stalled endpoint = %+v, outcome %s; want a deadline failure", res, Classify(res))
	}
	if !strings.Contains(res.Err.Error(), "no response within 50ms") {
		t.Fatalf("error %q does not say it timed out", res.Err)
	}
	// The sender's default applies when the request sets none.
	s2 := newSender(t, SenderConfig{AllowPrivate: true, RequestTimeout: 50 * time.Millisecond})
	if res := s2.Send(context.Background(), Request{URL: srv.URL}); !errors.Is(res.Err, context.DeadlineExceeded) {
		t.Fatalf("Send with the sender's timeout = %+v", res)
	}
}

func TestSendConnectionReuse(t *testing.T) {
	srv := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, `{"ok":true}`)
	})
	s := newSender(t, SenderConfig{AllowPrivate: true})
	body := bytes.Repeat([]byte("x"), 4096)
	for i := range 50 {
		if res := s.Send(context.Background(), Request{URL: srv.URL, Body: body}); res.StatusCode != 200 {
			t.Fatalf("send %d: %+v", i, res)
		}
	}
	if n := srv.conns.Load(); n != 1 {
		t.Fatalf("50 sequential sends opened %d connections, want 1", n)
	}
}

func TestSendBadURL(t *testing.T) {
	s := newSender(t, SenderConfig{})
	for _, u := range []string{"", "://nope", "http://exa mple.com/", "ftp://example.com/x"} {
		res := s.Send(context.Background(), Request{URL: u})
		if res.Err == nil || Classify(res) != OutcomeFailure {
			t.Errorf("Send(%q) = %+v, want a failure", u, res)
		}
	}
}

func TestSendHTTP2(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.Proto)
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	s := newSender(t, SenderConfig{AllowPrivate: true, TLSClientConfig: &tls.Config{RootCAs: roots}})
	res := s.Send(context.Background(), Request{URL: srv.URL})
	if res.Err != nil || string(res.Excerpt) != "HTTP/2.0" {
		t.Fatalf("Send over TLS = %+v (%q), want HTTP/2.0", res, res.Excerpt)
	}
}

func TestClassify(t *testing.T) {
	cases := []struct {
		r    Result
		want Outcome
	}{
		{Result{StatusCode: 200}, OutcomeSuccess},
		{Result{StatusCode: 204}, OutcomeSuccess},
		{Result{StatusCode: 299}, OutcomeSuccess},
		{Result{StatusCode: 199}, OutcomeFailure},
		{Result{StatusCode: 300}, OutcomeFailure},
		{Result{StatusCode: 302}, OutcomeFailure},
		{Result{StatusCode: 400}, OutcomeFailure},
		{Result{StatusCode: 410}, OutcomeGone},
		{Result{StatusCode: 410, RetryAfter: time.Minute}, OutcomeGone},
		{Result{StatusCode: 429}, OutcomeFailure},
		{Result{StatusCode: 429, RetryAfter: time.Minute}, OutcomeRetryAfter},
		{Result{StatusCode: 503, RetryAfter: time.Second}, OutcomeRetryAfter},
		{Result{StatusCode: 502, RetryAfter: time.Second}, OutcomeFailure},
		{Result{StatusCode: 500}, OutcomeFailure},
		{Result{Err: context.DeadlineExceeded}, OutcomeFailure},
		{Result{Err: channel.ErrDestinationRefused}, OutcomeFailure},
		{Result{}, OutcomeFailure},
	}
	for _, c := range cases {
		if got := Classify(c.r); got != c.want {
			t.Errorf("Classify(%+v) = %s, want %s", c.r, got, c.want)
		}
	}
	for o, s := range map[Outcome]string{OutcomeSuccess: "success", OutcomeFailure: "failure", OutcomeGone: "gone", OutcomeRetryAfter: "retry_after"} {
		if o.String() != s {
			t.Errorf("%d.String() = %q, want %q", o, o.String(), s)
		}
	}
}
