package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/client"
)

// SubsConfig configures RunSubs: the cost of many subscriptions on one
// server.
type SubsConfig struct {
	Server, Key string
	// Subs is how many webhook subscriptions to create (verification
	// none, to a receiver in this process).
	Subs int
	// Topics spreads them over this many topics (subscription i on topic
	// i mod Topics); 1 puts all on one.
	Topics int
	// Workers is how many create requests are in flight.
	Workers int
	// Idle is how long the server is watched with nothing happening, for
	// its CPU and RSS.
	Idle time.Duration
	// Churn is how many create, pause, resume and delete calls are timed
	// at the full count (each).
	Churn int
	// FanOut publishes one event to the first topic and waits for every
	// subscription on it to receive it.
	FanOut  bool
	Timeout time.Duration
	// PID is the server's process; 0 finds the one listening on its port.
	PID         int
	AllowRemote bool
	Keep        bool // leave the subscriptions and topics in place
	Progress    io.Writer
}

// SubsDefaults returns the defaults of SubsConfig.
func SubsDefaults() SubsConfig {
	return SubsConfig{Subs: 1000, Topics: 1, Workers: 8, Idle: 30 * time.Second, Churn: 200, FanOut: true, Timeout: 2 * time.Minute}
}

// SubsReport is what RunSubs measured.
type SubsReport struct {
	Machine Machine `json:"machine"`
	Subs    int     `json:"subscriptions"`
	Topics  int     `json:"topics"`
	Workers int     `json:"workers"`
	// Create is the creation of all Subs.
	Create SubsOps `json:"create"`
	// ReadySeconds is how long after the last create the server
	// dispatched every subscription (its herald_dispatch_subscriptions).
	ReadySeconds float64 `json:"ready_seconds"`
	// ColdSeconds is how long after that every subscription's worker was
	// parked cold (herald_dispatch_cold), when the server says.
	ColdSeconds float64  `json:"cold_seconds,omitempty"`
	Idle        SubsIdle `json:"idle"`
	// Churn: one more subscription each, at the full count.
	Churn  map[string]SubsOps `json:"churn,omitempty"`
	FanOut *SubsFanOut        `json:"fan_out,omitempty"`
	Errors []string           `json:"errors,omitempty"`
}

// SubsOps are timed API calls.
type SubsOps struct {
	Calls   int     `json:"calls"`
	Seconds float64 `json:"seconds"`
	PerSec  float64 `json:"per_second"`
	Latency Latency `json:"latency"`
	Failed  int     `json:"failed"`
}

// SubsIdle is the server at rest with every subscription in place.
type SubsIdle struct {
	Seconds        float64 `json:"seconds"`
	CPUCores       float64 `json:"cpu_cores"` // of one core: 0.02 is 2 %
	RSSBytes       int64   `json:"rss_bytes"`
	RSSBeforeBytes int64   `json:"rss_before_bytes"`
	BytesPerSub    float64 `json:"rss_bytes_per_subscription"`
	Goroutines     int     `json:"goroutines,omitempty"` // from /debug or metrics, when offered
}

// SubsFanOut is one event to every subscription of one topic.
type SubsFanOut struct {
	Subscriptions int     `json:"subscriptions"`
	Delivered     int     `json:"delivered"`
	FirstMS       float64 `json:"first_ms"`
	AllMS         float64 `json:"all_ms"`
	PerSec        float64 `json:"deliveries_per_second"`
}

// RunSubs creates Subs subscriptions, watches the idle server, times
// churn at that count, fans one event out, and removes what it made.
func RunSubs(ctx context.Context, cfg SubsConfig) (*SubsReport, error) {
	if cfg.Subs <= 0 || cfg.Topics <= 0 || cfg.Workers <= 0 {
		return nil, herald.Errorf(herald.CodeInvalid, "--subs, --topics and --workers must be positive")
	}
	base, err := url.Parse(cfg.Server)
	if err != nil {
		return nil, herald.FieldErrorf("server", "%v", err)
	}
	if !cfg.AllowRemote {
		if err := checkLoopbackURL(ctx, cfg.Server); err != nil {
			return nil, err
		}
	}
	sc := StreamsConfig{PID: cfg.PID, AllowRemote: cfg.AllowRemote}
	pid, err := sc.serverPID(base)
	if err != nil {
		return nil, fmt.Errorf("find the server's process: %w", err)
	}
	rep := &SubsReport{Machine: Machine{CPUs: runtime.NumCPU(), OS: runtime.GOOS, Arch: runtime.GOARCH, GoVersion: runtime.Version(), Load1: loadAverage()}, Subs: cfg.Subs, Topics: cfg.Topics, Workers: cfg.Workers}
	c := client.New(cfg.Server, client.WithKey(cfg.Key))

	// The receiver: counts deliveries per path.
	recv := &subsReceiver{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: recv, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	target := "http://" + ln.Addr().String()

	prefix := fmt.Sprintf("bench-subs.%d", time.Now().UnixNano()%1e9)
	topic := func(i int) string { return fmt.Sprintf("%s.t%d", prefix, i%cfg.Topics) }
	before, err := readProc(pid)
	if err != nil {
		return nil, err
	}
	nTopics := min(cfg.Topics, cfg.Subs)
	cfg.progress("creating %d topics", nTopics)
	if o := runOps(ctx, nTopics, cfg.Workers, func(ctx context.Context, i int) error {
		_, _, err := c.PutTopic(ctx, topic(i), client.TopicSettings{})
		return err
	}); o.Failed > 0 {
		return nil, fmt.Errorf("%d of %d topics could not be created", o.Failed, nTopics)
	}
	if _, _, err := c.PutTopic(ctx, prefix+".churn", client.TopicSettings{}); err != nil {
		return nil, fmt.Errorf("create topic: %w", err)
	}
	// The server may dispatch subscriptions of its own already: the
	// gauges below count those too.
	baseDispatched, _ := metricValue(ctx, cfg.Server, "herald_dispatch_subscriptions")
	baseCold, _ := metricValue(ctx, cfg.Server, "herald_dispatch_cold")
	ids := make([]string, cfg.Subs)
	cfg.progress("creating %d subscriptions over %d topics with %d workers", cfg.Subs, cfg.Topics, cfg.Workers)
	rep.Create = runOps(ctx, cfg.Subs, cfg.Workers, func(ctx context.Context, i int) error {
		s, err := c.CreateSubscription(ctx, client.SubscriptionSpec{
			Topic: topic(i), URL: fmt.Sprintf("%s/s/%d", target, i), Verification: herald.VerifyNone,
		})
		ids[i] = s.ID
		return err
	})
	cfg.progress("created: %.0f/s, p99 %.1f ms, %d failed", rep.Create.PerSec, rep.Create.Latency.P99, rep.Create.Failed)
	if !cfg.Keep {
		defer func() {
			cctx := context.WithoutCancel(ctx)
			runOps(cctx, len(ids), cfg.Workers, func(ctx context.Context, i int) error {
				if ids[i] == "" {
					return nil
				}
				return c.DeleteSubscription(ctx, ids[i])
			})
			runOps(cctx, nTopics, cfg.Workers, func(ctx context.Context, i int) error { return c.DeleteTopic(ctx, topic(i)) })
			_ = c.DeleteTopic(cctx, prefix+".churn")
		}()
	}

	// Ready: the server dispatches every subscription (its gauge), then
	// let the last starts settle, and watch.
	created := time.Now()
	for {
		n, ok := metricValue(ctx, cfg.Server, "herald_dispatch_subscriptions")
		if !ok || n >= baseDispatched+float64(cfg.Subs) {
			if ok {
				rep.ReadySeconds = time.Since(created).Seconds()
				cfg.progress("dispatching all %d %.1f s after the last create", cfg.Subs, rep.ReadySeconds)
			}
			break
		}
		if time.Since(created) > cfg.Timeout {
			rep.Errors = append(rep.Errors, fmt.Sprintf("only %.0f of %d subscriptions dispatched %s after the last create", n-baseDispatched, cfg.Subs, cfg.Timeout))
			break
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	// Idle workers go cold a while after they park: watch the server
	// once they have (if it says).
	ready := time.Now()
	for {
		n, ok := metricValue(ctx, cfg.Server, "herald_dispatch_cold")
		if !ok {
			break
		}
		if n >= baseCold+float64(cfg.Subs) {
			rep.ColdSeconds = time.Since(ready).Seconds()
			cfg.progress("all %d cold %.1f s later", cfg.Subs, rep.ColdSeconds)
			break
		}
		if time.Since(ready) > cfg.Timeout {
			rep.Errors = append(rep.Errors, fmt.Sprintf("only %.0f of %d subscriptions cold %s after they were dispatched", n-baseCold, cfg.Subs, cfg.Timeout))
			break
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(min(cfg.Idle/3, 5*time.Second)):
	}
	start, t0 := mustProc(pid), time.Now()
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(cfg.Idle):
	}
	end, t1 := mustProc(pid), time.Now()
	rep.Idle = SubsIdle{
		Seconds: t1.Sub(t0).Seconds(), CPUCores: (end.cpu - start.cpu) / t1.Sub(t0).Seconds(),
		RSSBytes: end.rss, RSSBeforeBytes: before.rss,
		BytesPerSub: float64(end.rss-before.rss) / float64(cfg.Subs),
	}
	if g, ok := metricValue(ctx, cfg.Server, "go_goroutines"); ok {
		rep.Idle.Goroutines = int(g)
	}
	cfg.progress("idle: %.1f %% of a core, RSS %s", 100*rep.Idle.CPUCores, mib(end.rss))

	if cfg.Churn > 0 {
		rep.Churn = map[string]SubsOps{}
		churn := make([]string, cfg.Churn)
		rep.Churn["create"] = runOps(ctx, cfg.Churn, cfg.Workers, func(ctx context.Context, i int) error {
			s, err := c.CreateSubscription(ctx, client.SubscriptionSpec{
				Topic: prefix + ".churn", URL: fmt.Sprintf("%s/c/%d", target, i), Verification: herald.VerifyNone,
			})
			churn[i] = s.ID
			return err
		})
		for _, op := range []struct {
			name string
			call func(context.Context, string) error
		}{
			{"pause", func(ctx context.Context, id string) error { _, err := c.PauseSubscription(ctx, id); return err }},
			{"resume", func(ctx context.Context, id string) error { _, err := c.ResumeSubscription(ctx, id); return err }},
			{"delete", c.DeleteSubscription},
		} {
			rep.Churn[op.name] = runOps(ctx, cfg.Churn, cfg.Workers, func(ctx context.Context, i int) error {
				if churn[i] == "" {
					return errors.New("not created")
				}
				return op.call(ctx, churn[i])
			})
		}
		cfg.progress("churn: create p99 %.1f ms, delete p99 %.1f ms", rep.Churn["create"].Latency.P99, rep.Churn["delete"].Latency.P99)
	}

	if cfg.FanOut {
		n := (cfg.Subs + cfg.Topics - 1) / cfg.Topics // subscriptions on topic 0
		recv.reset()
		sent := time.Now()
		if _, err := c.Publish(ctx, topic(0), []byte(`{"bench":"fan-out"}`), client.PublishOptions{ContentType: "application/json"}); err != nil {
			rep.Errors = append(rep.Errors, "publish: "+err.Error())
		} else {
			deadline := time.Now().Add(cfg.Timeout)
			for recv.count.Load() < int64(n) && time.Now().Before(deadline) && ctx.Err() == nil {
				time.Sleep(5 * time.Millisecond)
			}
			first, last, got := recv.times()
			f := &SubsFanOut{Subscriptions: n, Delivered: got}
			if got > 0 {
				f.FirstMS = float64(first.Sub(sent).Microseconds()) / 1000
				f.AllMS = float64(last.Sub(sent).Microseconds()) / 1000
				f.PerSec = float64(got) / last.Sub(sent).Seconds()
			}
			rep.FanOut = f
			if got < n {
				rep.Errors = append(rep.Errors, fmt.Sprintf("fan-out: %d of %d delivered within %s", got, n, cfg.Timeout))
			}
			cfg.progress("fan-out: %d of %d, first %.1f ms, all %.1f ms", got, n, f.FirstMS, f.AllMS)
		}
	}
	if rep.Create.Failed > 0 {
		rep.Errors = append(rep.Errors, fmt.Sprintf("%d creates failed", rep.Create.Failed))
	}
	return rep, nil
}

func mustProc(pid int) procSample { s, _ := readProc(pid); return s }

func (c SubsConfig) progress(format string, args ...any) {
	if c.Progress != nil {
		fmt.Fprintf(c.Progress, "bench subscriptions: "+format+"\n", args...)
	}
}

// metricValue reads one unlabelled series from the server's /metrics.
func metricValue(ctx context.Context, server, name string) (float64, bool) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(server, "/")+"/metrics", nil)
	if err != nil {
		return 0, false
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, false
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(res.Body, 16<<20))
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, name+" "); ok {
			var v float64
			if _, err := fmt.Sscan(rest, &v); err == nil {
				return v, true
			}
		}
	}
	return 0, false
}

// runOps runs n calls with workers in flight and times them.
func runOps(ctx context.Context, n, workers int, call func(context.Context, int) error) SubsOps {
	lat := make([]float64, n)
	var next, failed atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range min(workers, max(n, 1)) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				t := time.Now()
				if err := call(ctx, i); err != nil {
					failed.Add(1)
				}
				lat[i] = float64(time.Since(t).Microseconds()) / 1000
			}
		})
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	slices.Sort(lat)
	q := func(p float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		return lat[min(len(lat)-1, int(p*float64(len(lat))))]
	}
	return SubsOps{Calls: n, Seconds: secs, PerSec: float64(n) / secs, Failed: int(failed.Load()),
		Latency: Latency{P50: q(0.5), P90: q(0.9), P99: q(0.99), Max: q(1)}}
}

type subsReceiver struct {
	mu          sync.Mutex
	first, last time.Time
	count       atomic.Int64
}

func (r *subsReceiver) reset() {
	r.mu.Lock()
	r.first, r.last = time.Time{}, time.Time{}
	r.count.Store(0)
	r.mu.Unlock()
}

func (r *subsReceiver) times() (time.Time, time.Time, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.first, r.last, int(r.count.Load())
}

func (r *subsReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	_, _ = io.Copy(io.Discard, req.Body)
	now := time.Now()
	r.mu.Lock()
	if r.first.IsZero() {
		r.first = now
	}
	r.last = now
	r.mu.Unlock()
	r.count.Add(1)
	w.WriteHeader(http.StatusNoContent)
}

// WriteJSON writes the report as JSON.
func (r *SubsReport) WriteJSON(w io.Writer) error {
	e := json.NewEncoder(w)
	e.SetIndent("", "  ")
	return e.Encode(r)
}

// WriteText writes the report for a person.
func (r *SubsReport) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "subscriptions  %d over %d topic(s), %d workers; %s, %d cores, load %.1f\n",
		r.Subs, r.Topics, r.Workers, runtime.GOOS, r.Machine.CPUs, r.Machine.Load1)
	ops := func(name string, o SubsOps) {
		fmt.Fprintf(&b, "%-14s %.0f/s  p50 %s  p99 %s  max %s  failed %d\n", name, o.PerSec, ms(o.Latency.P50), ms(o.Latency.P99), ms(o.Latency.Max), o.Failed)
	}
	ops("create", r.Create)
	fmt.Fprintf(&b, "ready          all dispatched %.1f s after the last create; all cold %.1f s later\n", r.ReadySeconds, r.ColdSeconds)
	fmt.Fprintf(&b, "idle           %.1f %% of a core over %.0f s; RSS %s (%s before; %.1f KiB per subscription); goroutines %d\n",
		100*r.Idle.CPUCores, r.Idle.Seconds, mib(r.Idle.RSSBytes), mib(r.Idle.RSSBeforeBytes), r.Idle.BytesPerSub/1024, r.Idle.Goroutines)
	for _, k := range []string{"create", "pause", "resume", "delete"} {
		if o, ok := r.Churn[k]; ok {
			ops("churn "+k, o)
		}
	}
	if f := r.FanOut; f != nil {
		fmt.Fprintf(&b, "fan-out        %d of %d; first %s, all %s; %.0f deliveries/s\n", f.Delivered, f.Subscriptions, ms(f.FirstMS), ms(f.AllMS), f.PerSec)
	}
	for _, e := range r.Errors {
		fmt.Fprintf(&b, "error          %s\n", e)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// Problems names what went wrong.
func (r *SubsReport) Problems() []string { return r.Errors }
