package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald"
)

// fastRetry keeps retries of injected failures within a short test.
var fastRetry = herald.RetryPolicy{MaxAttempts: 100, Initial: 10 * time.Millisecond, Max: 50 * time.Millisecond}

func checkComplete(t *testing.T, r *Result, events, endpoints int64) {
	t.Helper()
	if r == nil {
		t.Fatal("no result")
	}
	if r.Published != events || r.PublishFailed != 0 {
		t.Fatalf("published %d (failed %d, %q), want %d", r.Published, r.PublishFailed, r.PublishError, events)
	}
	if r.Expected != events*endpoints || r.Delivered != r.Expected || r.Lost != 0 || r.TimedOut {
		t.Fatalf("delivered %d of %d, lost %d, timed out %v", r.Delivered, r.Expected, r.Lost, r.TimedOut)
	}
	if r.Rejected != 0 || r.Malformed != 0 || r.Duplicates != 0 {
		t.Fatalf("rejected %d, malformed %d, duplicates %d; want none", r.Rejected, r.Malformed, r.Duplicates)
	}
	if r.E2E.Count != r.Expected || r.E2E.P50 <= 0 || r.E2E.Max < r.E2E.P99 {
		t.Fatalf("e2e latency %+v: want one sample per delivery", r.E2E)
	}
	if r.DeliveryRate <= 0 || r.PublishRate <= 0 {
		t.Fatalf("rates: publish %g, delivery %g", r.PublishRate, r.DeliveryRate)
	}
}

func TestRawRunDeliversEverything(t *testing.T) {
	rep, err := Run(t.Context(), Config{Raw: true, Events: 300, Subscriptions: 2, Workers: 4, Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Herald != nil {
		t.Fatal("a raw run measured Herald too")
	}
	checkComplete(t, rep.Raw, 300, 2)
	if rep.Raw.Bench == nil || rep.Raw.Bench.RSSMaxBytes <= 0 {
		t.Fatalf("no stats of the bench process: %+v", rep.Raw.Bench)
	}
}

func TestRawRunRetriesInjectedFailures(t *testing.T) {
	rep, err := Run(t.Context(), Config{Raw: true, Events: 200, Batch: 10, Subscriptions: 2, Workers: 2,
		FailRate: 0.3, Retry: fastRetry, Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	checkComplete(t, rep.Raw, 200, 2)
	if rep.Raw.Injected == 0 {
		t.Fatal("no failure was injected at --fail-rate 0.3")
	}
}

func TestRawRunOpenLoop(t *testing.T) {
	rep, err := Run(t.Context(), Config{Raw: true, Events: 200, Rate: 2000, Workers: 8, Size: 512, Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	checkComplete(t, rep.Raw, 200, 1)
	// 200 events at 2000/s take at least 99.5ms to send.
	if rep.Raw.PublishSeconds < 0.099 {
		t.Fatalf("published in %.3fs, faster than the 2000/s schedule allows", rep.Raw.PublishSeconds)
	}
}

func TestRawRunPublishOnly(t *testing.T) {
	rep, err := Run(t.Context(), Config{Raw: true, PublishOnly: true, Events: 100, Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	r := rep.Raw
	if r.Published != 100 || r.Expected != 0 || r.Lost != 0 || r.E2E.Count != 0 {
		t.Fatalf("publish-only run: %+v", r)
	}
}

func TestRunReportsLossAfterTimeout(t *testing.T) {
	// Deliveries to an endpoint that always refuses never arrive: the run
	// ends at its timeout and says what was lost.
	cfg := Config{Raw: true, Events: 20, Workers: 2, Retry: fastRetry, Timeout: 200 * time.Millisecond}.withDefaults()
	res, err := cfg.runRawRefusing(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if !res.TimedOut || res.Lost != 20 || res.Delivered != 0 || res.Refused == 0 {
		t.Fatalf("result %+v: want all 20 lost after the timeout", res)
	}
}

// runRawRefusing is runRaw with a sink that refuses everything.
func (c Config) runRawRefusing(ctx context.Context) (*Result, error) {
	epoch := time.Now()
	sink := NewSink(SinkConfig{Endpoints: 1, MaxEvents: int64(c.Events), Epoch: epoch})
	if err := sink.Start(ctx); err != nil {
		return nil, err
	}
	defer stopWithin(sink.Stop)
	secret := "whsec_" + strings.Repeat("A", 32)
	if err := sink.SetSecret(0, secret); err != nil {
		return nil, err
	}
	sink.SetRefuse(true)
	relay, err := NewRelay(RelayConfig{Endpoints: []string{sink.Addr() + EndpointPath(0)}, Secrets: []string{secret},
		RetryInitial: c.Retry.Initial, RetryMax: c.Retry.Max})
	if err != nil {
		return nil, err
	}
	if err := relay.Start(ctx); err != nil {
		return nil, err
	}
	defer stopWithin(relay.Stop)
	hc := publisherHTTPClient(c.Workers)
	defer hc.CloseIdleConnections()
	return c.measure(ctx, runParts{system: "raw", epoch: epoch, sink: sink, target: rawTarget{hc: hc, url: relay.URL()}}), nil
}

func TestConfigErrorsNameTheFlag(t *testing.T) {
	for _, c := range []struct {
		cfg   Config
		field string
	}{
		{Config{Raw: true, Events: -1}, "events"},
		{Config{Raw: true, Batch: MaxBatch + 1}, "batch"},
		{Config{Raw: true, Size: 10}, "size"},
		{Config{Raw: true, FailRate: 1}, "fail-rate"},
		{Config{Raw: true, CompareRaw: true}, "raw"},
		{Config{Raw: true, Backlog: 10}, "backlog"},
		{Config{Raw: true, Verification: "maybe"}, "verification"},
		{Config{Raw: true, Subscriptions: MaxSubscriptions + 1}, "subscriptions"},
		{Config{Raw: true, Events: MaxEvents, Subscriptions: 1000}, "events"},
		{Config{Server: "http://192.0.2.1:8480"}, "server"},
		{Config{Server: "http://127.0.0.1:8480", SinkURL: "http://192.0.2.1:9000"}, "sink-url"},
		{Config{Raw: true, SinkAddr: "0.0.0.0:0"}, "sink-addr"},
	} {
		_, err := Run(t.Context(), c.cfg)
		he, ok := err.(interface{ Unwrap() []error })
		if !ok {
			t.Errorf("%+v: error %v, want joined field errors", c.cfg, err)
			continue
		}
		var fields []string
		for _, e := range he.Unwrap() {
			if f, ok := e.(*herald.Error); ok && f.Code == herald.CodeInvalid {
				fields = append(fields, f.Field)
			}
		}
		if len(fields) != 1 || fields[0] != c.field {
			t.Errorf("%+v: fields at fault %v (%v), want [%s]", c.cfg, fields, err, c.field)
		}
	}
	// Remote addresses are fine when allowed.
	if err := (Config{Server: "http://192.0.2.1:8480", AllowRemote: true}).withDefaults().validate(t.Context()); err != nil {
		t.Fatalf("--allow-remote: %v", err)
	}
}

func TestReportText(t *testing.T) {
	rep, err := Run(t.Context(), Config{Raw: true, Events: 50, Workers: 2, Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	rep.Herald = &Result{System: "herald", Published: 50, Expected: 50, Delivered: 50, DeliveryRate: rep.Raw.DeliveryRate / 2,
		Server: &ProcStats{PID: 1, RSSMaxBytes: 48 << 20, CPUCores: 1.5}}
	rep.RawRatio = 0.5
	var b bytes.Buffer
	if err := rep.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"raw: 50 events x 1 subscriptions", "herald: 50 events", "RSS 48.0 MiB", "50% of raw", "e2e p50/p99/max", "lost"} {
		if !strings.Contains(out, want) {
			t.Errorf("text report lacks %q:\n%s", want, out)
		}
	}
	b.Reset()
	if err := rep.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var back map[string]any
	if err := json.Unmarshal(b.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"date", "machine", "scenario", "raw", "herald", "raw_ratio"} {
		if _, ok := back[k]; !ok {
			t.Errorf("JSON report lacks %q", k)
		}
	}
}

func TestProcStats(t *testing.T) {
	s, err := readProc(os.Getpid())
	if err != nil {
		t.Skipf("no /proc here: %v", err)
	}
	if s.rss <= 0 || s.cpu < 0 {
		t.Fatalf("own process: %+v", s)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	pid, err := listenerPID(ln.Addr().(*net.TCPAddr).Port)
	if err != nil || pid != os.Getpid() {
		t.Fatalf("listener of our own port: pid %d, %v; want %d", pid, err, os.Getpid())
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	if _, err := listenerPID(port); err == nil {
		t.Fatal("found a listener on a closed port")
	}
}

// TestHeraldRun runs a short benchmark against the Herald at
// HERALD_TEST_BENCH_URL with the admin key HERALD_TEST_BENCH_KEY. The
// server must allow private destinations.
func TestHeraldRun(t *testing.T) {
	url := os.Getenv("HERALD_TEST_BENCH_URL")
	if url == "" {
		t.Skip("HERALD_TEST_BENCH_URL is not set (a running Herald started with --allow-private-destinations)")
	}
	rep, err := Run(t.Context(), Config{Server: url, Key: os.Getenv("HERALD_TEST_BENCH_KEY"), Events: 500, Subscriptions: 2,
		Batch: 10, Workers: 4, Verification: herald.VerifyChallenge, FailRate: 0.1, Retry: fastRetry, Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	checkComplete(t, rep.Herald, 500, 2)
}
