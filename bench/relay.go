package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/webhook"
)

// RelayConfig configures a Relay. Zero values mean the defaults.
type RelayConfig struct {
	// Endpoints are the URLs every published event is forwarded to; with
	// none, the relay only accepts publishes.
	Endpoints []string
	// Secrets are the signing secrets ("whsec_..."), one per endpoint.
	Secrets []string
	// MaxInFlight is the number of concurrent requests per endpoint;
	// default 16, Herald's default per subscription.
	MaxInFlight int
	// Queue bounds the events waiting per endpoint; a publish waits for
	// room. Default 4096.
	Queue int
	// Addr is the listen address; default 127.0.0.1:0.
	Addr string
	// MaxAttempts bounds the tries per event and endpoint (default 100);
	// RetryInitial (default 10ms) doubles up to RetryMax (default 1s)
	// between them.
	MaxAttempts  int
	RetryInitial time.Duration
	RetryMax     time.Duration
}

// Relay is the raw HTTP relay of a --raw run: the least a webhook relay
// can do. It accepts publishes, keeps nothing but a bounded in-memory queue
// per endpoint, and forwards each event to every endpoint as a signed
// Standard Webhooks request, retrying failures. Its delivery rate, with the
// same publisher and sink, is the machine's ceiling for Herald's.
//
// It serves POST /publish (the body is one payload) and POST
// /publish:batch (Herald's batch body, {"events":[{"data_base64":...}]}),
// and answers 202 once every event is queued for every endpoint. Start
// listens and starts the senders; Stop ends them, dropping what is queued.
type Relay struct {
	cfg    RelayConfig
	keys   [][]byte
	queues []chan relayItem
	hc     *http.Client
	seq    atomic.Int64

	forwarded, retries, dropped atomic.Int64

	mu     sync.Mutex
	srv    *http.Server
	base   string
	ctx    context.Context // cancelled by Stop: ends senders and their requests
	cancel context.CancelFunc
	done   chan struct{} // closed when Serve returns
	wg     sync.WaitGroup
}

type relayItem struct {
	id   string
	body []byte
}

// NewRelay returns a relay; it starts nothing. It fails when the secrets
// do not match the endpoints one to one or do not parse.
func NewRelay(cfg RelayConfig) (*Relay, error) {
	if len(cfg.Secrets) != len(cfg.Endpoints) {
		return nil, fmt.Errorf("relay: %d endpoints and %d secrets; want one secret per endpoint", len(cfg.Endpoints), len(cfg.Secrets))
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = herald.DefaultMaxInFlight
	}
	if cfg.Queue <= 0 {
		cfg.Queue = 4096
	}
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 100
	}
	if cfg.RetryInitial <= 0 {
		cfg.RetryInitial = 10 * time.Millisecond
	}
	if cfg.RetryMax < cfg.RetryInitial {
		cfg.RetryMax = max(time.Second, cfg.RetryInitial)
	}
	r := &Relay{cfg: cfg}
	for i, s := range cfg.Secrets {
		k, err := webhook.ParseSecret(s)
		if err != nil {
			return nil, fmt.Errorf("relay: secret %d: %w", i, err)
		}
		r.keys = append(r.keys, k)
	}
	conns := max(cfg.MaxInFlight*len(cfg.Endpoints), 1)
	r.hc = &http.Client{
		Timeout: 15 * time.Second,
		Transport: &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			MaxIdleConns:        conns,
			MaxIdleConnsPerHost: conns,
			IdleConnTimeout:     90 * time.Second,
			DisableCompression:  true,
		},
	}
	return r, nil
}

// Start listens and starts MaxInFlight senders per endpoint. It fails if
// the relay was started before or the address cannot be bound.
func (r *Relay) Start(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.srv != nil {
		return errors.New("relay: already started")
	}
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", r.cfg.Addr)
	if err != nil {
		return fmt.Errorf("relay: listen on %s: %w", r.cfg.Addr, err)
	}
	r.base = "http://" + ln.Addr().String()
	r.ctx, r.cancel = context.WithCancel(context.WithoutCancel(ctx))
	r.queues = make([]chan relayItem, len(r.cfg.Endpoints))
	for i := range r.queues {
		r.queues[i] = make(chan relayItem, r.cfg.Queue)
		for range r.cfg.MaxInFlight {
			r.wg.Go(func() { r.sender(i) })
		}
	}
	r.srv = &http.Server{Handler: r, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	done, srv := make(chan struct{}), r.srv
	r.done = done
	go func() {
		defer close(done)
		_ = srv.Serve(ln) // returns http.ErrServerClosed after Shutdown
	}()
	return nil
}

// Stop stops accepting publishes (waiting for those in progress until ctx
// ends), then stops the senders, dropping queued events, and waits for
// them. It is idempotent and safe before Start.
func (r *Relay) Stop(ctx context.Context) error {
	r.mu.Lock()
	srv, done, cancel := r.srv, r.done, r.cancel
	r.done = nil // a second Stop has nothing to do; Start still refuses
	r.mu.Unlock()
	if srv == nil || done == nil {
		return nil
	}
	err := srv.Shutdown(ctx)
	if err != nil {
		_ = srv.Close()
	}
	<-done
	cancel()
	r.wg.Wait()
	r.hc.CloseIdleConnections()
	return err
}

// URL returns the relay's base URL, or "" before Start.
func (r *Relay) URL() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.base
}

// RelayStats are the relay's counters.
type RelayStats struct {
	Forwarded int64 // requests answered 2xx by an endpoint
	Retries   int64 // failed tries that were retried
	Dropped   int64 // events given up on an endpoint after MaxAttempts
}

// Stats returns the counters so far.
func (r *Relay) Stats() RelayStats {
	return RelayStats{Forwarded: r.forwarded.Load(), Retries: r.retries.Load(), Dropped: r.dropped.Load()}
}

// maxRelayBody is the batch limit of Herald's API.
const maxRelayBody = 16 << 20

// ServeHTTP handles POST /publish and POST /publish:batch.
func (r *Relay) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, req.Body, maxRelayBody))
	if err != nil {
		http.Error(w, "body too large or unreadable", http.StatusRequestEntityTooLarge)
		return
	}
	var payloads [][]byte
	switch req.URL.Path {
	case "/publish":
		payloads = [][]byte{body}
	case "/publish:batch":
		var b struct {
			Events []struct {
				Data []byte `json:"data_base64"`
			} `json:"events"`
		}
		if err := json.Unmarshal(body, &b); err != nil || len(b.Events) == 0 {
			http.Error(w, `want {"events":[{"data_base64":"..."}]}`, http.StatusBadRequest)
			return
		}
		for _, e := range b.Events {
			payloads = append(payloads, e.Data)
		}
	default:
		http.NotFound(w, req)
		return
	}
	for _, p := range payloads {
		it := relayItem{id: "rel_" + strconv.FormatInt(r.seq.Add(1), 10), body: p}
		for _, q := range r.queues {
			select {
			case q <- it:
			case <-req.Context().Done():
				http.Error(w, "gave up waiting for room", http.StatusServiceUnavailable)
				return // what was queued may still go
			case <-r.ctx.Done():
				http.Error(w, "stopping", http.StatusServiceUnavailable)
				return
			}
		}
	}
	w.WriteHeader(http.StatusAccepted)
}

// sender forwards the events of endpoint i until Stop.
func (r *Relay) sender(i int) {
	for {
		select {
		case <-r.ctx.Done():
			return
		case it := <-r.queues[i]:
			r.forward(i, it)
		}
	}
}

// forward sends one event to endpoint i, retrying with backoff until it
// is accepted, MaxAttempts is used up or the relay stops.
func (r *Relay) forward(i int, it relayItem) {
	wait := r.cfg.RetryInitial
	for attempt := 1; ; attempt++ {
		if r.send(i, it, attempt) {
			r.forwarded.Add(1)
			return
		}
		if attempt >= r.cfg.MaxAttempts {
			r.dropped.Add(1)
			return
		}
		r.retries.Add(1)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-r.ctx.Done():
			t.Stop()
			return
		}
		wait = min(2*wait, r.cfg.RetryMax)
	}
}

// send makes one signed request and reports whether it was answered 2xx.
func (r *Relay) send(i int, it relayItem, attempt int) bool {
	req, err := http.NewRequestWithContext(r.ctx, http.MethodPost, r.cfg.Endpoints[i], bytes.NewReader(it.body))
	if err != nil {
		return false
	}
	now := time.Now()
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(webhook.HeaderID, it.id)
	req.Header.Set(webhook.HeaderTimestamp, strconv.FormatInt(now.Unix(), 10))
	req.Header.Set(webhook.HeaderSignature, webhook.Sign(r.keys[i], it.id, now, it.body))
	req.Header.Set("Herald-Attempt", strconv.Itoa(attempt))
	resp, err := r.hc.Do(req)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	return resp.StatusCode >= 200 && resp.StatusCode <= 299
}
