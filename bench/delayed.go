package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/client"
)

// DelayedConfig configures RunDelayed: how fast a running Herald moves
// delayed events into their topic's log when they come due, and how late.
type DelayedConfig struct {
	Server, Key string
	// Events is how many delayed events to schedule (default 100,000).
	Events int
	// Spread spreads their due times evenly over this span, event n due
	// at first + Spread×n/Events; 0 (the default) makes all of them due
	// at one instant, which measures the promotion rate flat out.
	Spread time.Duration
	// Lead is how long after the run starts the first event is due
	// (default 1m). Scheduling every event must end before that, or the
	// run fails and says so: raise it for large runs.
	Lead time.Duration
	// Batch is events per publish request (default 1000, at most
	// MaxBatch); Workers the requests in flight (default 4).
	Batch, Workers int
	// Size is the payload size in bytes (default 200).
	Size int
	// Timeout bounds the wait for the last promotion after the last due
	// time (default 5m).
	Timeout time.Duration
	// PID is the server's process, for its CPU; 0 finds the one
	// listening on its port.
	PID         int
	AllowRemote bool
	Keep        bool // leave the topic in place
	Progress    io.Writer
}

// DelayedDefaults returns the defaults of DelayedConfig.
func DelayedDefaults() DelayedConfig {
	return DelayedConfig{Events: 100_000, Lead: time.Minute, Batch: 1000, Workers: 4, Size: 200, Timeout: 5 * time.Minute}
}

// DelayedReport is what RunDelayed measured. Times come from the
// server's event time stamps (set when an event joins its topic's log)
// and the due times the bench chose, so the bench and the server must
// share a clock: run both on one machine.
type DelayedReport struct {
	Machine Machine `json:"machine"`
	Topic   string  `json:"topic"`
	Events  int     `json:"events"`
	// SpreadSeconds is the span of the due times (0: one instant).
	SpreadSeconds float64 `json:"spread_seconds"`
	// Schedule is the publishing of the delayed events.
	Schedule SubsOps `json:"schedule"`
	// Promoted is how many distinct events joined the log.
	Promoted int64 `json:"promoted"`
	// PromoteSeconds is from the first due time to the last event's
	// joining the log; PromoteRate is Promoted divided by it.
	PromoteSeconds float64 `json:"promote_seconds"`
	PromoteRate    float64 `json:"promote_rate"`
	// Lateness is, per event, its joining the log minus its due time
	// (millisecond stamps; an event on time counts as 0).
	Lateness Latency `json:"lateness"`
	// Early counts events that joined the log more than 1 ms before
	// their due time, Missing those never seen, Duplicates those seen
	// more than once: each is a bug.
	Early      int64 `json:"early"`
	Missing    int64 `json:"missing"`
	Duplicates int64 `json:"duplicates"`
	// ServerCPUCores is the server's CPU over the promotion, in cores.
	ServerCPUCores float64  `json:"server_cpu_cores"`
	Errors         []string `json:"errors,omitempty"`
}

// RunDelayed schedules Events delayed events into a fresh topic, waits for
// them to be promoted, reads the log back and reports the promotion rate
// and each event's lateness. It deletes the topic unless Keep.
func RunDelayed(ctx context.Context, cfg DelayedConfig) (*DelayedReport, error) {
	switch {
	case cfg.Events <= 0 || cfg.Workers <= 0 || cfg.Lead <= 0 || cfg.Timeout <= 0:
		return nil, herald.Errorf(herald.CodeInvalid, "--events, --workers, --lead and --timeout must be positive")
	case cfg.Spread < 0:
		return nil, herald.FieldErrorf("spread", "--spread must not be negative")
	case cfg.Batch < 1 || cfg.Batch > MaxBatch:
		return nil, herald.FieldErrorf("batch", "--batch %d: want 1 to %d", cfg.Batch, MaxBatch)
	case cfg.Size < 32:
		return nil, herald.FieldErrorf("size", "--size %d: want at least 32 bytes", cfg.Size)
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
	pid, err := StreamsConfig{PID: cfg.PID, AllowRemote: cfg.AllowRemote}.serverPID(base)
	if err != nil {
		return nil, fmt.Errorf("find the server's process: %w", err)
	}
	c := client.New(cfg.Server, client.WithKey(cfg.Key))
	rep := &DelayedReport{
		Machine: Machine{CPUs: runtime.NumCPU(), OS: runtime.GOOS, Arch: runtime.GOARCH, GoVersion: runtime.Version(), Load1: loadAverage()},
		Topic:   fmt.Sprintf("bench-delayed.%d", time.Now().UnixNano()%1e9), Events: cfg.Events, SpreadSeconds: cfg.Spread.Seconds(),
	}
	if _, _, err := c.PutTopic(ctx, rep.Topic, client.TopicSettings{}); err != nil {
		return nil, fmt.Errorf("create topic: %w", err)
	}
	if !cfg.Keep {
		defer func() { _ = c.DeleteTopic(context.WithoutCancel(ctx), rep.Topic) }()
	}

	// Due times are whole milliseconds, as the server's time stamps are.
	first := time.Now().Add(cfg.Lead).Truncate(time.Millisecond)
	due := func(n int) time.Time {
		return first.Add((cfg.Spread * time.Duration(n) / time.Duration(cfg.Events)).Truncate(time.Millisecond))
	}
	last := due(cfg.Events - 1)
	pad := strings.Repeat("x", cfg.Size-28)
	requests := (cfg.Events + cfg.Batch - 1) / cfg.Batch
	var acked atomic.Int64
	cfg.progress("scheduling %d events into %s, due from %s over %s", cfg.Events, rep.Topic, first.Format(time.TimeOnly), cfg.Spread)
	rep.Schedule = runOps(ctx, requests, cfg.Workers, func(ctx context.Context, j int) error {
		from, to := j*cfg.Batch, min((j+1)*cfg.Batch, cfg.Events)
		events := make([]client.BatchEvent, 0, to-from)
		for n := from; n < to; n++ {
			events = append(events, client.BatchEvent{ContentType: "application/json", DeliverAt: due(n),
				Payload: fmt.Appendf(nil, `{"n":%d,"pad":%q}`, n, pad)})
		}
		if _, err := c.PublishBatch(ctx, rep.Topic, events); err != nil {
			return err
		}
		acked.Add(int64(len(events)))
		return nil
	})
	rep.Schedule.Calls, rep.Schedule.PerSec = int(acked.Load()), float64(acked.Load())/rep.Schedule.Seconds
	cfg.progress("scheduled %d in %.1f s (%.0f events/s), %d requests failed", acked.Load(), rep.Schedule.Seconds, rep.Schedule.PerSec, rep.Schedule.Failed)
	if rep.Schedule.Failed > 0 {
		rep.Errors = append(rep.Errors, fmt.Sprintf("%d of %d schedule requests failed", rep.Schedule.Failed, requests))
	}
	if now := time.Now(); !now.Before(first) {
		rep.Errors = append(rep.Errors, fmt.Sprintf("scheduling ended %s after the first due time: raise --lead above %s", now.Sub(first).Round(time.Millisecond), cfg.Lead))
	}

	// Wait for the first due time, then for the log to hold every event.
	if err := sleepCtx(ctx, time.Until(first)); err != nil {
		return nil, err
	}
	cpu0, t0 := mustProc(pid), time.Now()
	cfg.progress("first event due; waiting for %d promotions", acked.Load())
	deadline := last.Add(cfg.Timeout)
	var head int64
	for {
		t, err := c.GetTopic(ctx, rep.Topic)
		if err == nil {
			head = t.HeadSeq
		}
		if head >= acked.Load() || time.Now().After(deadline) {
			break
		}
		if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
			return nil, err
		}
	}
	cpu1, t1 := mustProc(pid), time.Now()
	rep.ServerCPUCores = (cpu1.cpu - cpu0.cpu) / t1.Sub(t0).Seconds()
	if head < acked.Load() {
		rep.Errors = append(rep.Errors, fmt.Sprintf("only %d of %d events in the log %s after the last due time", head, acked.Load(), cfg.Timeout))
	}

	// Read the log back: each event's time stamp against its due time.
	cfg.progress("%d in the log; reading it back", head)
	seen := newBitset(int64(cfg.Events))
	hist := newHistogram()
	var lastJoin time.Time
	for after := int64(0); ; {
		page, err := c.ListEvents(ctx, rep.Topic, after, 1000)
		if err != nil {
			return nil, fmt.Errorf("read the log back: %w", err)
		}
		for _, e := range page.Events {
			var p struct {
				N int `json:"n"`
			}
			if err := json.Unmarshal(e.Payload, &p); err != nil || p.N < 0 || p.N >= cfg.Events {
				return nil, fmt.Errorf("event %s: not one this bench published", e.ID)
			}
			if seen.has(int64(p.N)) {
				rep.Duplicates++
				continue
			}
			seen.add(int64(p.N))
			late := e.Time.Sub(due(p.N))
			if late < -time.Millisecond {
				rep.Early++
			}
			hist.record(max(late, 0))
			if e.Time.After(lastJoin) {
				lastJoin = e.Time
			}
		}
		if len(page.Events) == 0 {
			break
		}
		after = page.NextAfterSeq
	}
	rep.Promoted = seen.count()
	rep.Missing = acked.Load() - rep.Promoted
	rep.Lateness = hist.summary()
	if rep.Promoted > 0 {
		rep.PromoteSeconds = lastJoin.Sub(first).Seconds()
		rep.PromoteRate = float64(rep.Promoted) / max(rep.PromoteSeconds, 0.001)
	}
	for _, bad := range []struct {
		n    int64
		what string
	}{{rep.Early, "joined the log before their due time"}, {rep.Missing, "acknowledged but never joined the log"}, {rep.Duplicates, "joined the log twice"}} {
		if bad.n > 0 {
			rep.Errors = append(rep.Errors, fmt.Sprintf("%d events %s", bad.n, bad.what))
		}
	}
	cfg.progress("promoted %d at %.0f events/s; lateness p50 %s p99 %s", rep.Promoted, rep.PromoteRate, ms(rep.Lateness.P50), ms(rep.Lateness.P99))
	return rep, nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func (c DelayedConfig) progress(format string, args ...any) {
	if c.Progress != nil {
		fmt.Fprintf(c.Progress, "bench delayed: "+format+"\n", args...)
	}
}

// WriteJSON writes the report as JSON.
func (r *DelayedReport) WriteJSON(w io.Writer) error {
	e := json.NewEncoder(w)
	e.SetIndent("", "  ")
	return e.Encode(r)
}

// WriteText writes the report for a person.
func (r *DelayedReport) WriteText(w io.Writer) error {
	var b strings.Builder
	spread := "all due at one instant"
	if r.SpreadSeconds > 0 {
		spread = "due times spread over " + strconv.FormatFloat(r.SpreadSeconds, 'f', -1, 64) + " s"
	}
	fmt.Fprintf(&b, "delayed events %d, %s; %s, %d cores, load %.1f\n", r.Events, spread, runtime.GOOS, r.Machine.CPUs, r.Machine.Load1)
	fmt.Fprintf(&b, "scheduled      %d in %.1f s: %.0f events/s, request p50 %s p99 %s, %d failed\n",
		r.Schedule.Calls, r.Schedule.Seconds, r.Schedule.PerSec, ms(r.Schedule.Latency.P50), ms(r.Schedule.Latency.P99), r.Schedule.Failed)
	fmt.Fprintf(&b, "promoted       %d in %.1f s from the first due time: %.0f events/s; server CPU %.2f cores\n",
		r.Promoted, r.PromoteSeconds, r.PromoteRate, r.ServerCPUCores)
	fmt.Fprintf(&b, "lateness       p50 %s  p90 %s  p99 %s  p99.9 %s  max %s\n",
		ms(r.Lateness.P50), ms(r.Lateness.P90), ms(r.Lateness.P99), ms(r.Lateness.P999), ms(r.Lateness.Max))
	fmt.Fprintf(&b, "faults         early %d, missing %d, duplicates %d\n", r.Early, r.Missing, r.Duplicates)
	for _, e := range r.Errors {
		fmt.Fprintf(&b, "error          %s\n", e)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// Problems names what went wrong.
func (r *DelayedReport) Problems() []string { return r.Errors }
