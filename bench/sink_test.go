package bench

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/webhook"
)

// signedRequest builds a webhook request to endpoint i signed with secret,
// as Herald sends it.
func signedRequest(t *testing.T, i int, secret, id string, attempt int, body []byte) *http.Request {
	t.Helper()
	key, err := webhook.ParseSecret(secret)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	r := httptest.NewRequest(http.MethodPost, EndpointPath(i), bytes.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set(webhook.HeaderID, id)
	r.Header.Set(webhook.HeaderTimestamp, strconv.FormatInt(now.Unix(), 10))
	r.Header.Set(webhook.HeaderSignature, webhook.Sign(key, id, now, body))
	r.Header.Set("Herald-Attempt", strconv.Itoa(attempt))
	return r
}

func serve(s *Sink, r *http.Request) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	s.ServeHTTP(w, r)
	return w
}

func newTestSink(t *testing.T, cfg SinkConfig) (*Sink, []string) {
	t.Helper()
	s := NewSink(cfg)
	var secrets []string
	for i := range max(cfg.Endpoints, 1) {
		secrets = append(secrets, webhook.NewSecret())
		if err := s.SetSecret(i, secrets[i]); err != nil {
			t.Fatal(err)
		}
	}
	return s, secrets
}

func TestSinkVerifiesSignatures(t *testing.T) {
	s, secrets := newTestSink(t, SinkConfig{Endpoints: 2, MaxEvents: 10})
	body := appendPayload(nil, 3, 0, 100)

	if w := serve(s, signedRequest(t, 1, secrets[1], "evt-3", 1, body)); w.Code != http.StatusNoContent {
		t.Fatalf("genuine delivery: status %d %s", w.Code, w.Body)
	}
	// Signed with the other endpoint's secret: a forgery for endpoint 1.
	if w := serve(s, signedRequest(t, 1, secrets[0], "evt-4", 1, appendPayload(nil, 4, 0, 100))); w.Code != http.StatusUnauthorized {
		t.Fatalf("forged delivery: status %d, want 401", w.Code)
	}
	// A genuine signature over other bytes.
	r := signedRequest(t, 1, secrets[1], "evt-5", 1, appendPayload(nil, 5, 0, 100))
	r.Body = io.NopCloser(bytes.NewReader(appendPayload(nil, 6, 0, 100)))
	if w := serve(s, r); w.Code != http.StatusUnauthorized {
		t.Fatalf("tampered body: status %d, want 401", w.Code)
	}
	unsigned := httptest.NewRequest(http.MethodPost, EndpointPath(0), bytes.NewReader(body))
	if w := serve(s, unsigned); w.Code != http.StatusUnauthorized {
		t.Fatalf("unsigned delivery: status %d, want 401", w.Code)
	}

	st := s.Stats()
	if st.Rejected != 3 || st.Unique != 1 || st.Deliveries != 1 {
		t.Fatalf("stats %+v: want 3 rejected, 1 delivery", st)
	}
	if !s.endpoints[1].delivered.has(3) || s.endpoints[1].delivered.has(4) || s.endpoints[0].delivered.has(3) {
		t.Fatal("deliveries recorded against the wrong events or endpoints")
	}
}

func TestSinkCountsDuplicatesPerEndpoint(t *testing.T) {
	s, secrets := newTestSink(t, SinkConfig{Endpoints: 2, MaxEvents: 10})
	body := appendPayload(nil, 7, 0, 100)
	for _, d := range []struct {
		ep      int
		attempt int
	}{{0, 1}, {0, 2}, {1, 1}, {0, 3}} {
		if w := serve(s, signedRequest(t, d.ep, secrets[d.ep], "evt-7", d.attempt, body)); w.Code != http.StatusNoContent {
			t.Fatalf("delivery %+v: status %d", d, w.Code)
		}
	}
	st := s.Stats()
	if st.Deliveries != 4 || st.Unique != 2 || st.Duplicates != 2 {
		t.Fatalf("stats %+v: want 4 deliveries, 2 unique (one per endpoint), 2 duplicates", st)
	}
	if l := s.Latency(); l.Count != 2 {
		t.Fatalf("latency recorded %d times, want once per first delivery (2)", l.Count)
	}
	acked := newBitset(10)
	acked.add(7)
	acked.add(8)
	if m0, m1 := s.missing(0, acked), s.missing(1, acked); m0 != 1 || m1 != 1 {
		t.Fatalf("missing %d and %d, want 1 and 1 (event 8)", m0, m1)
	}
}

func TestSinkRejectsPayloadsItDidNotPublish(t *testing.T) {
	s, secrets := newTestSink(t, SinkConfig{Endpoints: 1, MaxEvents: 10})
	for _, body := range []string{`{"hello":"world"}`, `{"n":10,"t":0,"pad":""}`, `{"n":-1,"t":0}`, `not json`} {
		if w := serve(s, signedRequest(t, 0, secrets[0], "x", 1, []byte(body))); w.Code != http.StatusBadRequest {
			t.Errorf("body %s: status %d, want 400", body, w.Code)
		}
	}
	if st := s.Stats(); st.Malformed != 4 || st.Deliveries != 0 {
		t.Fatalf("stats %+v: want 4 malformed, no delivery", st)
	}
}

func challengeRequest(t *testing.T, secret, token string) *http.Request {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"type": webhook.VerificationType, "subscription_id": "sub_1", "challenge": token})
	r := signedRequest(t, 0, secret, "chal-1", 1, body)
	r.Header.Set("Herald-Event-Type", webhook.VerificationType)
	r.Header.Del("Herald-Attempt")
	return r
}

func TestSinkAnswersChallenge(t *testing.T) {
	s, secrets := newTestSink(t, SinkConfig{Endpoints: 1, MaxEvents: 10, FailRate: 0.9})
	s.SetRefuse(true) // neither refusal nor failure injection applies to challenges
	w := serve(s, challengeRequest(t, secrets[0], "tok-123"))
	if w.Code != http.StatusOK {
		t.Fatalf("challenge: status %d %s", w.Code, w.Body)
	}
	var got struct {
		Challenge string `json:"challenge"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil || got.Challenge != "tok-123" {
		t.Fatalf("challenge answer %q (%v), want the token echoed", w.Body, err)
	}
	if w := serve(s, challengeRequest(t, webhook.NewSecret(), "tok-123")); w.Code != http.StatusUnauthorized {
		t.Fatalf("forged challenge: status %d, want 401", w.Code)
	}
	if st := s.Stats(); st.Challenges != 1 || st.Rejected != 1 {
		t.Fatalf("stats %+v: want 1 challenge answered, 1 rejected", st)
	}
}

func TestSinkChallengeWaitsForSecret(t *testing.T) {
	// Herald may send the challenge before the create call that returns
	// the secret has returned; the request waits for SetSecret.
	s := NewSink(SinkConfig{Endpoints: 1, MaxEvents: 1, SecretWait: time.Minute})
	secret := webhook.NewSecret()
	r := challengeRequest(t, secret, "early")
	var w *httptest.ResponseRecorder
	var wg sync.WaitGroup
	wg.Go(func() { w = serve(s, r) })
	if err := s.SetSecret(0, secret); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if w.Code != http.StatusOK {
		t.Fatalf("early challenge: status %d %s", w.Code, w.Body)
	}

	// Without a secret at all, the sink gives up after SecretWait.
	s = NewSink(SinkConfig{Endpoints: 1, MaxEvents: 1, SecretWait: time.Millisecond})
	if w := serve(s, challengeRequest(t, secret, "never")); w.Code != http.StatusServiceUnavailable {
		t.Fatalf("no secret: status %d, want 503", w.Code)
	}
	if st := s.Stats(); st.NoSecret != 1 {
		t.Fatalf("stats %+v: want 1 NoSecret", st)
	}
}

func TestSinkRefusesWhileHoldingBacklog(t *testing.T) {
	s, secrets := newTestSink(t, SinkConfig{Endpoints: 1, MaxEvents: 10})
	body := appendPayload(nil, 1, 0, 100)
	s.SetRefuse(true)
	if w := serve(s, signedRequest(t, 0, secrets[0], "e1", 1, body)); w.Code != http.StatusServiceUnavailable {
		t.Fatalf("refusing: status %d, want 503", w.Code)
	}
	s.SetRefuse(false)
	if w := serve(s, signedRequest(t, 0, secrets[0], "e1", 2, body)); w.Code != http.StatusNoContent {
		t.Fatalf("accepting again: status %d", w.Code)
	}
	if st := s.Stats(); st.Refused != 1 || st.Unique != 1 {
		t.Fatalf("stats %+v: want 1 refused, 1 delivered", st)
	}
}

func TestSinkFailureInjectionIsPerAttempt(t *testing.T) {
	const n, rate = 2000, 0.3
	s, secrets := newTestSink(t, SinkConfig{Endpoints: 1, MaxEvents: n, FailRate: rate})
	failedFirst := 0
	for i := range n {
		id := fmt.Sprintf("evt-%d", i)
		body := appendPayload(nil, int64(i), 0, 100)
		attempt := 1
		for ; attempt <= 20; attempt++ {
			w := serve(s, signedRequest(t, 0, secrets[0], id, attempt, body))
			if w.Code == http.StatusNoContent {
				break
			}
			if w.Code != http.StatusInternalServerError {
				t.Fatalf("%s attempt %d: status %d", id, attempt, w.Code)
			}
			// The same attempt again gets the same answer.
			if again := serve(s, signedRequest(t, 0, secrets[0], id, attempt, body)); again.Code != http.StatusInternalServerError {
				t.Fatalf("%s attempt %d failed, then passed when repeated", id, attempt)
			}
		}
		if attempt > 20 {
			t.Fatalf("%s never got through in 20 attempts", id)
		}
		if attempt > 1 {
			failedFirst++
		}
	}
	if f := float64(failedFirst) / n; f < rate-0.05 || f > rate+0.05 {
		t.Fatalf("%.3f of first attempts failed, want about %g", f, rate)
	}
	if st := s.Stats(); st.Unique != n || st.Duplicates != 0 || st.Injected < int64(failedFirst) {
		t.Fatalf("stats %+v", st)
	}
}

func TestSinkRoutes(t *testing.T) {
	s, _ := newTestSink(t, SinkConfig{Endpoints: 2, MaxEvents: 1})
	for _, c := range []struct {
		method, path string
		want         int
	}{
		{http.MethodPost, "/e/2", http.StatusNotFound},
		{http.MethodPost, "/e/-1", http.StatusNotFound},
		{http.MethodPost, "/x", http.StatusNotFound},
		{http.MethodGet, "/e/0", http.StatusMethodNotAllowed},
	} {
		if w := serve(s, httptest.NewRequest(c.method, c.path, nil)); w.Code != c.want {
			t.Errorf("%s %s: status %d, want %d", c.method, c.path, w.Code, c.want)
		}
	}
}

func TestPayloadRoundTrip(t *testing.T) {
	for _, size := range []int{MinSize, 200, 4096} {
		b := appendPayload([]byte("junk"), 123456, -42, size)[4:]
		if len(b) != size {
			t.Errorf("size %d: payload is %d bytes", size, len(b))
		}
		if !json.Valid(b) {
			t.Errorf("size %d: payload is not JSON: %s", size, b)
		}
		p, ok := parsePayload(b)
		if !ok || p.N != 123456 || p.T != -42 {
			t.Errorf("size %d: parsed %+v %v", size, p, ok)
		}
	}
	// Another producer's field order still parses.
	if p, ok := parsePayload([]byte(`{"t":5,"pad":"","n":9}`)); !ok || p.N != 9 || p.T != 5 {
		t.Errorf("reordered payload parsed as %+v %v", p, ok)
	}
}

func TestSinkAndRelayLifecycle(t *testing.T) {
	s := NewSink(SinkConfig{})
	if err := s.Stop(t.Context()); err != nil {
		t.Fatalf("Stop before Start: %v", err)
	}
	if err := s.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(t.Context()); err == nil {
		t.Fatal("a second Start succeeded")
	}
	for range 2 {
		if err := s.Stop(t.Context()); err != nil {
			t.Fatalf("Stop: %v", err)
		}
	}
	if err := s.Start(t.Context()); err == nil {
		t.Fatal("Start after Stop succeeded")
	}

	r, err := NewRelay(RelayConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Stop(t.Context()); err != nil {
		t.Fatalf("relay Stop before Start: %v", err)
	}
	if err := r.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := r.Stop(t.Context()); err != nil {
			t.Fatalf("relay Stop: %v", err)
		}
	}
	if _, err := NewRelay(RelayConfig{Endpoints: []string{"http://127.0.0.1:1/e/0"}}); err == nil {
		t.Fatal("a relay without the endpoint's secret was built")
	}
}
