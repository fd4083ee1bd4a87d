package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/client"
)

// RulesConfig is a run of "herald bench rules": the seed's flagger (a
// sliding two-minute sum per wallet over 10,000) and a balance view over
// Keys wallets, then view reads.
type RulesConfig struct {
	Server, Key string
	Keys        int           // wallets
	Events      int           // deposits
	Batch       int           // deposits per publish request
	Workers     int           // publish requests in flight
	Reads       int           // view reads
	ReadRate    float64       // view reads per second, open loop
	Readers     int           // concurrent readers
	Timeout     time.Duration // the longest a processor may take to catch up
	PID         int
	AllowRemote bool
	Keep        bool
	Progress    io.Writer
}

// RulesDefaults are the scenario: 100,000 wallets, view reads at
// 5,000/s.
func RulesDefaults() RulesConfig {
	return RulesConfig{Keys: 100000, Events: 200000, Batch: 500, Workers: 4, Reads: 25000, ReadRate: 5000, Readers: 32, Timeout: 10 * time.Minute}
}

// RulesReport is what "herald bench rules" measured.
type RulesReport struct {
	Machine Machine `json:"machine"`
	Keys    int     `json:"keys"`
	Events  int     `json:"events"`
	// Publish is the backlog's publish, with the rule and view paused.
	PublishPerSec float64 `json:"publish_per_second"`
	// Rule and View are each processor's drain of the backlog, alone.
	Rule ProcessorRun `json:"rule"`
	View ProcessorRun `json:"view"`
	// Reads are GET /v1/views/{name}/{key} of random wallets.
	Reads ReadRun  `json:"reads"`
	Notes []string `json:"notes,omitempty"`
	// Errors name what went wrong.
	Errors []string `json:"errors,omitempty"`
}

// ProcessorRun is one rule's or view's drain of a backlog.
type ProcessorRun struct {
	Seconds         float64 `json:"seconds"`
	EventsPerSec    float64 `json:"events_per_second"`
	ServerCPUPerSec float64 `json:"server_cpu_seconds_per_second"`
	// CPUMicrosPerEvent is the server's CPU time per event: the figure
	// that does not depend on how loaded the machine is.
	CPUMicrosPerEvent float64 `json:"server_cpu_us_per_event"`
}

// ReadRun is the view read scenario.
type ReadRun struct {
	Target  float64 `json:"target_per_second"`
	PerSec  float64 `json:"per_second"`
	Latency Latency `json:"latency"`
	Failed  int64   `json:"failed"`
}

func (c RulesConfig) progress(format string, args ...any) {
	if c.Progress != nil {
		fmt.Fprintf(c.Progress, "bench rules: "+format+"\n", args...)
	}
}

// RunRules publishes a backlog of deposits with the flagger and the
// balance view paused, resumes each alone and times its drain, reads the
// view at ReadRate, and removes what it made.
func RunRules(ctx context.Context, cfg RulesConfig) (*RulesReport, error) {
	if cfg.Keys <= 0 || cfg.Events <= 0 || cfg.Batch <= 0 || cfg.Batch > 1000 || cfg.Workers <= 0 || cfg.Readers <= 0 || cfg.Reads < 0 || cfg.ReadRate <= 0 {
		return nil, herald.Errorf(herald.CodeInvalid, "--keys, --events, --workers, --readers and --read-rate must be positive, --batch 1 to 1000")
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
	rep := &RulesReport{Machine: Machine{CPUs: runtime.NumCPU(), OS: runtime.GOOS, Arch: runtime.GOARCH, GoVersion: runtime.Version(), Load1: loadAverage()},
		Keys: cfg.Keys, Events: cfg.Events}
	pid, err := StreamsConfig{PID: cfg.PID, AllowRemote: cfg.AllowRemote}.serverPID(base)
	if err != nil {
		rep.Notes = append(rep.Notes, "no server CPU: "+err.Error())
	}
	c := client.New(cfg.Server, client.WithKey(cfg.Key))
	n := time.Now().UnixNano() % 1e9
	topic := fmt.Sprintf("bench-rules.%d.deposits", n)
	ruleName, viewName := fmt.Sprintf("bench-flagger-%d", n), fmt.Sprintf("bench-balance-%d", n)
	if _, _, err := c.PutTopic(ctx, topic, client.TopicSettings{}); err != nil {
		return nil, fmt.Errorf("create topic: %w", err)
	}
	if !cfg.Keep {
		defer func() {
			cctx := context.WithoutCancel(ctx)
			_ = c.DeleteProcessor(cctx, "rule", ruleName)
			_ = c.DeleteProcessor(cctx, "view", viewName)
			_ = c.DeleteTopic(cctx, topic)
			_ = c.DeleteTopic(cctx, topic+".flagged")
		}()
	}
	rule := fmt.Sprintf(`{"input": %q, "key": "wallet_id", "time": "ts", "window": {"kind": "sliding", "size": "2m"},
		"aggregate": {"op": "sum", "field": "amount"}, "when": "value > 10000", "emit": {"topic": %q, "type": "wallet.flagged"}}`, topic, topic+".flagged")
	if _, err := c.PutRule(ctx, ruleName, json.RawMessage(rule)); err != nil {
		return nil, fmt.Errorf("create the rule: %w", err)
	}
	view := fmt.Sprintf(`{"input": %q, "key": "wallet_id", "aggregate": {"op": "sum", "field": "amount"}}`, topic)
	if _, err := c.PutView(ctx, viewName, json.RawMessage(view)); err != nil {
		return nil, fmt.Errorf("create the view: %w", err)
	}
	for _, p := range [][2]string{{"rule", ruleName}, {"view", viewName}} {
		if _, err := c.ProcessorAction(ctx, p[0], p[1], "pause"); err != nil {
			return nil, fmt.Errorf("pause %s: %w", p[0], err)
		}
	}

	// The backlog: deposits one millisecond apart in event time, so each
	// wallet's window slides over its deposits.
	cfg.progress("publishing %d deposits over %d wallets", cfg.Events, cfg.Keys)
	t0 := float64(time.Now().Add(-24*time.Hour).UnixMilli()) / 1000
	var next, last atomic.Int64
	var pubErr error
	var errOnce sync.Once
	start := time.Now()
	var wg sync.WaitGroup
	for range cfg.Workers {
		wg.Go(func() {
			batch := make([]client.BatchEvent, 0, cfg.Batch)
			for {
				from := int(next.Add(int64(cfg.Batch))) - cfg.Batch
				if from >= cfg.Events || ctx.Err() != nil {
					return
				}
				batch = batch[:0]
				for i := from; i < min(from+cfg.Batch, cfg.Events); i++ {
					w := fmt.Sprintf("w%d", i%cfg.Keys)
					batch = append(batch, client.BatchEvent{Key: w, ContentType: "application/json",
						Payload: fmt.Appendf(nil, `{"wallet_id":%q,"amount":%d,"ts":%.3f}`, w, 1000+i%7000, t0+float64(i)/1000)})
				}
				res, err := c.PublishBatch(ctx, topic, batch)
				if err != nil {
					errOnce.Do(func() { pubErr = err })
					return
				}
				for _, r := range res {
					for {
						cur := last.Load()
						if r.Seq <= cur || last.CompareAndSwap(cur, r.Seq) {
							break
						}
					}
				}
			}
		})
	}
	wg.Wait()
	if pubErr != nil {
		return nil, fmt.Errorf("publish: %w", pubErr)
	}
	rep.PublishPerSec = float64(cfg.Events) / time.Since(start).Seconds()
	lastSeq := last.Load()

	drain := func(kind, name string) (ProcessorRun, error) {
		var run ProcessorRun
		before, _ := readProc(pid)
		start := time.Now()
		if _, err := c.ProcessorAction(ctx, kind, name, "resume"); err != nil {
			return run, fmt.Errorf("resume %s: %w", kind, err)
		}
		cfg.progress("%s resumed: draining %d deposits", kind, cfg.Events)
		deadline := time.Now().Add(cfg.Timeout)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			raw, err := c.GetProcessor(ctx, kind, name)
			if err != nil {
				return run, err
			}
			var p struct {
				Position int64 `json:"position"`
			}
			_ = json.Unmarshal(raw, &p)
			if p.Position >= lastSeq {
				break
			}
			if time.Now().After(deadline) {
				return run, fmt.Errorf("the %s applied up to seq %d of %d within %s", kind, p.Position, lastSeq, cfg.Timeout)
			}
			select {
			case <-ctx.Done():
				return run, ctx.Err()
			case <-tick.C:
			}
		}
		run.Seconds = time.Since(start).Seconds()
		run.EventsPerSec = float64(cfg.Events) / run.Seconds
		if after, err := readProc(pid); err == nil && pid > 0 {
			cpu := after.cpu - before.cpu
			run.ServerCPUPerSec = cpu / run.Seconds
			run.CPUMicrosPerEvent = cpu / float64(cfg.Events) * 1e6
		}
		cfg.progress("%s: %.0f events/s, %.1f µs of server CPU per event", kind, run.EventsPerSec, run.CPUMicrosPerEvent)
		return run, nil
	}
	if rep.Rule, err = drain("rule", ruleName); err != nil {
		rep.Errors = append(rep.Errors, err.Error())
		return rep, nil
	}
	if rep.View, err = drain("view", viewName); err != nil {
		rep.Errors = append(rep.Errors, err.Error())
		return rep, nil
	}

	// Reads at a fixed rate (open loop: latency counts from when a read
	// was due, so a stalled server shows).
	cfg.progress("reading the view: %d reads at %.0f/s", cfg.Reads, cfg.ReadRate)
	h := newHistogram()
	var failed atomic.Int64
	var idx atomic.Int64
	interval := time.Duration(float64(time.Second) / cfg.ReadRate)
	start = time.Now()
	for r := range cfg.Readers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(r), uint64(start.UnixNano())))
			for {
				i := idx.Add(1) - 1
				if int(i) >= cfg.Reads || ctx.Err() != nil {
					return
				}
				due := start.Add(time.Duration(i) * interval)
				if d := time.Until(due); d > 0 {
					select {
					case <-ctx.Done():
						return
					case <-time.After(d):
					}
				}
				key := fmt.Sprintf("w%d", rng.IntN(min(cfg.Keys, cfg.Events)))
				if _, err := c.GetViewRow(ctx, viewName, key, 0); err != nil {
					failed.Add(1)
				}
				h.record(time.Since(due))
			}
		})
	}
	wg.Wait()
	rep.Reads = ReadRun{Target: cfg.ReadRate, PerSec: float64(cfg.Reads) / time.Since(start).Seconds(), Latency: h.summary(), Failed: failed.Load()}
	if rep.Reads.Failed > 0 {
		rep.Errors = append(rep.Errors, fmt.Sprintf("%d view reads failed", rep.Reads.Failed))
	}
	return rep, nil
}

// WriteJSON writes the report as JSON.
func (r *RulesReport) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteText writes the report for a person.
func (r *RulesReport) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "machine\t%d CPUs, %s/%s, %s, load %.2f\n", r.Machine.CPUs, r.Machine.OS, r.Machine.Arch, r.Machine.GoVersion, r.Machine.Load1)
	fmt.Fprintf(tw, "backlog\t%d deposits over %d wallets, published at %.0f/s\n", r.Events, r.Keys, r.PublishPerSec)
	for _, p := range []struct {
		name string
		run  ProcessorRun
	}{{"flagger rule", r.Rule}, {"balance view", r.View}} {
		fmt.Fprintf(tw, "%s\t%.0f events/s (%.1fs), server CPU %.2f s/s, %.1f µs per event\n", p.name, p.run.EventsPerSec, p.run.Seconds, p.run.ServerCPUPerSec, p.run.CPUMicrosPerEvent)
	}
	l := r.Reads.Latency
	fmt.Fprintf(tw, "view reads\t%.0f/s (target %.0f), p50 %.2f ms, p99 %.2f ms, max %.2f ms, %d failed\n", r.Reads.PerSec, r.Reads.Target, l.P50, l.P99, l.Max, r.Reads.Failed)
	for _, n := range r.Notes {
		fmt.Fprintf(tw, "note\t%s\n", n)
	}
	if len(r.Errors) > 0 {
		fmt.Fprintf(tw, "errors\t%s\n", strings.Join(r.Errors, "; "))
	}
	return tw.Flush()
}

// Problems names what went wrong.
func (r *RulesReport) Problems() []string { return r.Errors }
