package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/webhook"
)

// SinkConfig configures a Sink. Zero values mean the defaults.
type SinkConfig struct {
	// Endpoints is the number of endpoints, served at /e/0 to /e/<N-1>.
	Endpoints int
	// MaxEvents bounds the event numbers tracked: payload "n" must be in
	// [0, MaxEvents). Memory is MaxEvents bits per endpoint.
	MaxEvents int64
	// Addr is the listen address of Start; default 127.0.0.1:0.
	Addr string
	// Epoch is the instant payload "t" counts nanoseconds from; the
	// publisher in the same process uses the same one.
	Epoch time.Time
	// FailRate is the fraction of verified event deliveries answered 500,
	// chosen by a hash of webhook-id and Herald-Attempt so that a given
	// attempt always gets the same answer and retries eventually pass.
	FailRate float64
	// FailEndpoints limits FailRate to endpoints 0 to FailEndpoints-1;
	// 0 means every endpoint.
	FailEndpoints int
	// SecretWait is how long a request to an endpoint whose secret is not
	// known yet waits for SetSecret before it is answered 503; default 2s.
	// Herald may send the verification challenge before the create call
	// that returns the secret has returned to the bench.
	SecretWait time.Duration
}

// Sink is the receiver of a benchmark: one HTTP listener serving numbered
// endpoints. For each request it verifies the Standard Webhooks signature
// with the endpoint's secret (a bad one is answered 401 and counted as
// rejected), answers verification challenges by echoing the token, and
// counts deliveries per endpoint, duplicates (a second 2xx for the same
// event) and the end-to-end latency of each first delivery, from the
// publish time carried in the payload.
//
// It is safe for concurrent use. Start listens; Stop shuts the listener
// down. It also serves as an http.Handler without Start.
type Sink struct {
	cfg       SinkConfig
	endpoints []*sinkEndpoint
	e2e       *histogram
	refuse    atomic.Bool

	deliveries, unique, duplicates    atomic.Int64
	rejected, injected, refused       atomic.Int64
	challenges, malformed, notYetKeys atomic.Int64
	first, last                       atomic.Int64 // ns since Epoch of the first and last unique delivery; 0: none

	mu   sync.Mutex
	srv  *http.Server
	base string
	done chan struct{} // closed when Serve returns
}

type sinkEndpoint struct {
	key       atomic.Pointer[[]byte]
	ready     chan struct{} // closed once key is set
	readyOnce sync.Once
	delivered *bitset
}

// NewSink returns a sink; it starts nothing.
func NewSink(cfg SinkConfig) *Sink {
	cfg.Endpoints = max(cfg.Endpoints, 1)
	cfg.MaxEvents = max(cfg.MaxEvents, 1)
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	if cfg.Epoch.IsZero() {
		cfg.Epoch = time.Now()
	}
	if cfg.SecretWait <= 0 {
		cfg.SecretWait = 2 * time.Second
	}
	s := &Sink{cfg: cfg, e2e: newHistogram()}
	for range cfg.Endpoints {
		s.endpoints = append(s.endpoints, &sinkEndpoint{ready: make(chan struct{}), delivered: newBitset(cfg.MaxEvents)})
	}
	return s
}

// Start listens on the configured address and serves in a goroutine that
// Stop ends. It fails if the sink was started before or the address cannot
// be bound.
func (s *Sink) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil {
		return errors.New("sink: already started")
	}
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("sink: listen on %s: %w", s.cfg.Addr, err)
	}
	s.base = "http://" + ln.Addr().String()
	s.srv = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	done, srv := make(chan struct{}), s.srv
	s.done = done
	go func() {
		defer close(done)
		_ = srv.Serve(ln) // returns http.ErrServerClosed after Shutdown
	}()
	return nil
}

// Stop shuts the listener down, waiting for requests in progress until
// ctx ends. It is idempotent and safe before Start.
func (s *Sink) Stop(ctx context.Context) error {
	s.mu.Lock()
	srv, done := s.srv, s.done
	s.done = nil // a second Stop has nothing to do; Start still refuses
	s.mu.Unlock()
	if srv == nil || done == nil {
		return nil
	}
	err := srv.Shutdown(ctx)
	if err != nil {
		_ = srv.Close()
	}
	<-done
	return err
}

// Addr returns the base URL the sink listens on ("http://127.0.0.1:port"),
// or "" before Start.
func (s *Sink) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.base
}

// EndpointPath returns the path of endpoint i, "/e/<i>".
func EndpointPath(i int) string { return "/e/" + strconv.Itoa(i) }

// SetSecret sets the signing secret ("whsec_...") endpoint i verifies
// requests with. Requests waiting for it go on.
func (s *Sink) SetSecret(i int, secret string) error {
	if i < 0 || i >= len(s.endpoints) {
		return fmt.Errorf("sink: no endpoint %d", i)
	}
	key, err := webhook.ParseSecret(secret)
	if err != nil {
		return err
	}
	ep := s.endpoints[i]
	ep.key.Store(&key)
	ep.readyOnce.Do(func() { close(ep.ready) })
	return nil
}

// SetRefuse makes the sink answer every event delivery 503 (on) or handle
// it again (off), for backlog runs. Challenges are answered either way.
func (s *Sink) SetRefuse(on bool) { s.refuse.Store(on) }

// SinkStats are the sink's counters.
type SinkStats struct {
	Deliveries int64 // event deliveries answered 2xx, duplicates included
	Unique     int64 // distinct (endpoint, event) pairs answered 2xx
	Duplicates int64 // 2xx deliveries of a pair already delivered
	Rejected   int64 // requests with a missing or wrong signature (401)
	Injected   int64 // deliveries answered 500 by the failure injection
	Refused    int64 // deliveries answered 503 while refusing
	Challenges int64 // verification challenges answered
	Malformed  int64 // verified bodies that are not a benchmark payload (400)
	NoSecret   int64 // requests answered 503 because the secret was not set in time
	// First and Last are the times since Epoch of the first and the last
	// unique delivery; zero when there was none.
	First, Last time.Duration
}

// Stats returns the counters so far.
func (s *Sink) Stats() SinkStats {
	return SinkStats{
		Deliveries: s.deliveries.Load(), Unique: s.unique.Load(), Duplicates: s.duplicates.Load(),
		Rejected: s.rejected.Load(), Injected: s.injected.Load(), Refused: s.refused.Load(),
		Challenges: s.challenges.Load(), Malformed: s.malformed.Load(), NoSecret: s.notYetKeys.Load(),
		First: time.Duration(s.first.Load()), Last: time.Duration(s.last.Load()),
	}
}

// Latency returns the end-to-end latency of first deliveries so far.
func (s *Sink) Latency() Latency { return s.e2e.summary() }

// missing returns how many members of acked endpoint i has not received.
func (s *Sink) missing(i int, acked *bitset) int64 { return s.endpoints[i].delivered.missing(acked) }

// maxSinkBody bounds a request body: the largest payload a topic accepts
// plus room for a challenge.
const maxSinkBody = herald.MaxEventBytesLimit + 4096

// ServeHTTP handles POST /e/<i>.
func (s *Sink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rest, ok := strings.CutPrefix(r.URL.Path, "/e/")
	i, err := strconv.Atoi(rest)
	if !ok || err != nil || i < 0 || i >= len(s.endpoints) {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxSinkBody))
	if err != nil {
		http.Error(w, "body too large or unreadable", http.StatusBadRequest)
		return
	}
	challenge := r.Header.Get("Herald-Event-Type") == webhook.VerificationType
	if !challenge && s.refuse.Load() {
		s.refused.Add(1)
		http.Error(w, "refusing (backlog run)", http.StatusServiceUnavailable)
		return
	}
	ep := s.endpoints[i]
	key := ep.key.Load()
	if key == nil {
		t := time.NewTimer(s.cfg.SecretWait)
		select {
		case <-ep.ready:
			key = ep.key.Load()
		case <-t.C:
		case <-r.Context().Done():
		}
		t.Stop()
		if key == nil {
			s.notYetKeys.Add(1)
			http.Error(w, "endpoint secret not known yet", http.StatusServiceUnavailable)
			return
		}
	}
	if err := webhook.VerifyKeys([][]byte{*key}, r.Header, body, time.Now(), 0); err != nil {
		s.rejected.Add(1)
		http.Error(w, "signature: "+err.Error(), http.StatusUnauthorized)
		return
	}
	if challenge {
		s.answerChallenge(w, body)
		return
	}
	if s.cfg.FailRate > 0 && (s.cfg.FailEndpoints == 0 || i < s.cfg.FailEndpoints) && failAttempt(r.Header.Get(webhook.HeaderID), r.Header.Get("Herald-Attempt"), s.cfg.FailRate) {
		s.injected.Add(1)
		http.Error(w, "injected failure", http.StatusInternalServerError)
		return
	}
	p, ok := parsePayload(body)
	if !ok {
		s.malformed.Add(1)
		http.Error(w, "not a benchmark payload", http.StatusBadRequest)
		return
	}
	added, inRange := ep.delivered.add(p.N)
	if !inRange {
		s.malformed.Add(1)
		http.Error(w, "event number out of range", http.StatusBadRequest)
		return
	}
	now := time.Since(s.cfg.Epoch)
	s.deliveries.Add(1)
	if !added {
		s.duplicates.Add(1)
	} else {
		s.unique.Add(1)
		s.e2e.record(now - time.Duration(p.T))
		casMin(&s.first, int64(now))
		casMax(&s.last, int64(now))
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Sink) answerChallenge(w http.ResponseWriter, body []byte) {
	var c struct {
		Challenge string `json:"challenge"`
	}
	if err := json.Unmarshal(body, &c); err != nil || c.Challenge == "" {
		s.malformed.Add(1)
		http.Error(w, "challenge without a token", http.StatusBadRequest)
		return
	}
	out, _ := json.Marshal(c) // a struct of one string cannot fail
	s.challenges.Add(1)
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(out)
}

// failAttempt decides the failure injection for one attempt: the same id
// and attempt always get the same answer, and each attempt of an event
// fails independently with probability rate.
func failAttempt(id, attempt string, rate float64) bool {
	h := fnv.New64a()
	_, _ = io.WriteString(h, id)
	_, _ = h.Write([]byte{'#'})
	_, _ = io.WriteString(h, attempt)
	// FNV alone spreads a change in the last bytes (the attempt number)
	// badly over the high bits; the splitmix64 finalizer mixes them.
	x := h.Sum64()
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return float64(x>>11)/(1<<53) < rate
}

// casMin lowers a (0 meaning unset) to v.
func casMin(a *atomic.Int64, v int64) {
	for {
		old := a.Load()
		if old != 0 && old <= v || a.CompareAndSwap(old, v) {
			return
		}
	}
}

// casMax raises a to v.
func casMax(a *atomic.Int64, v int64) {
	for {
		old := a.Load()
		if old >= v || a.CompareAndSwap(old, v) {
			return
		}
	}
}

// payload is what the benchmark publishes: the event number and the time
// it was meant to be sent, in nanoseconds since the run's epoch.
type payload struct {
	N int64 `json:"n"`
	T int64 `json:"t"`
}

// payloadPrefix starts every payload, so parsePayload can skip the JSON
// decoder for the fast path.
const payloadPrefix = `{"n":`

// appendPayload appends the JSON payload {"n":N,"t":T,"pad":"xxx..."},
// padded to size bytes when size allows.
func appendPayload(b []byte, n, t int64, size int) []byte {
	start := len(b)
	b = append(b, payloadPrefix...)
	b = strconv.AppendInt(b, n, 10)
	b = append(b, `,"t":`...)
	b = strconv.AppendInt(b, t, 10)
	b = append(b, `,"pad":"`...)
	if pad := size - (len(b) - start) - 2; pad > 0 {
		b = append(b, bytes.Repeat([]byte{'x'}, pad)...)
	}
	return append(b, `"}`...)
}

// parsePayload reads n and t from a payload made by appendPayload, or,
// failing that, from any JSON object with integer "n" and "t".
func parsePayload(b []byte) (payload, bool) {
	if rest, ok := bytes.CutPrefix(b, []byte(payloadPrefix)); ok {
		if nText, rest, ok := bytes.Cut(rest, []byte(`,"t":`)); ok {
			if tText, _, ok := bytes.Cut(rest, []byte(`,`)); ok {
				n, err1 := strconv.ParseInt(string(nText), 10, 64)
				t, err2 := strconv.ParseInt(string(tText), 10, 64)
				if err1 == nil && err2 == nil && n >= 0 {
					return payload{N: n, T: t}, true
				}
			}
		}
	}
	var p struct {
		N *int64 `json:"n"`
		T *int64 `json:"t"`
	}
	if json.Unmarshal(b, &p) != nil || p.N == nil || p.T == nil || *p.N < 0 {
		return payload{}, false
	}
	return payload{N: *p.N, T: *p.T}, true
}
