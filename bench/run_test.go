package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
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
		{Config{Servers: []string{"http://127.0.0.1:8481", "http://192.0.2.1:8480"}}, "servers"},
		{Config{Servers: []string{"http://127.0.0.1:8481", "http://127.0.0.1:8481"}}, "servers"},
		{Config{Servers: []string{"http://127.0.0.1:8481", ""}}, "servers"},
		{Config{Server: ""}, "server"},
		{Config{Server: "http://127.0.0.1:8481", PIDs: []int{10, 11}}, "pid"},
		{Config{Servers: []string{"http://127.0.0.1:8481", "http://127.0.0.1:8482"}, PIDs: []int{0, -1}}, "pid"},
		{Config{Server: "http://127.0.0.1:8481", PID: 10, PIDs: []int{10}}, "pid"},
		{Config{Raw: true, DBProcess: "postgres: walwriter"}, "db-process"},
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
	if err := (Config{Servers: []string{"http://192.0.2.1:8480", "http://192.0.2.2:8480"}, PIDs: []int{0, 12}, AllowRemote: true,
		DBProcess: "postgres"}).withDefaults().validate(t.Context()); err != nil {
		t.Fatalf("--servers with --allow-remote: %v", err)
	}
}

// TestServersReplaceServer checks which nodes a run talks to and how each
// one's process is found: given, or the listener of its port.
func TestServersReplaceServer(t *testing.T) {
	if got := (Config{Server: "http://127.0.0.1:1"}).servers(); !slices.Equal(got, []string{"http://127.0.0.1:1"}) {
		t.Fatalf("servers of a single --server: %v", got)
	}
	var urls []string
	for range 2 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		urls = append(urls, "http://"+ln.Addr().String())
	}
	c := Config{Server: "http://127.0.0.1:1", Servers: urls, PIDs: []int{0, 4242}}
	if got := c.servers(); !slices.Equal(got, urls) {
		t.Fatalf("servers: %v, want %v", got, urls)
	}
	if _, err := os.ReadFile("/proc/net/tcp"); err != nil {
		t.Skipf("no /proc here: %v", err)
	}
	if pid, err := c.serverPID(0); err != nil || pid != os.Getpid() {
		t.Fatalf("server 0 (no pid given): pid %d, %v; want the listener, %d", pid, err, os.Getpid())
	}
	if pid, err := c.serverPID(1); err != nil || pid != 4242 {
		t.Fatalf("server 1 (pid given): pid %d, %v; want 4242", pid, err)
	}
	c.PIDs = nil // none given: each listener is found
	if pid, err := c.serverPID(1); err != nil || pid != os.Getpid() {
		t.Fatalf("server 1 (no pids): pid %d, %v; want %d", pid, err, os.Getpid())
	}
}

func TestReportText(t *testing.T) {
	rep, err := Run(t.Context(), Config{Raw: true, Events: 50, Workers: 2, Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	rep.Herald = &Result{System: "herald", Publishing: Publishing{Published: 50}, Expected: 50, Delivered: 50, DeliveryRate: rep.Raw.DeliveryRate / 2,
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

func TestReportTextSeveralServers(t *testing.T) {
	node := func(pid int, rss int64, cpu float64) *ProcStats {
		return &ProcStats{PID: pid, RSSMaxBytes: rss, RSSEndBytes: rss, CPUSeconds: cpu, CPUCores: cpu / 10}
	}
	rep := &Report{
		Machine:  Machine{CPUs: 2},
		Scenario: Scenario{Events: 100, Subscriptions: 2},
		Herald: &Result{System: "herald", Publishing: Publishing{Published: 100}, Expected: 200, Delivered: 200,
			Server: &ProcStats{RSSMaxBytes: 100 << 20, RSSEndBytes: 90 << 20, CPUSeconds: 5, CPUCores: 0.5},
			Servers: []ServerStats{
				{URL: "http://127.0.0.1:18481", ProcStats: node(101, 50<<20, 3)},
				{URL: "http://127.0.0.1:18482", ProcStats: node(102, 40<<20, 2)},
				{URL: "http://127.0.0.1:18483"}, // not found
			},
			DB:    &CPUUse{Name: "postgres", Processes: 7, CPUSeconds: 4, CPUCores: 0.4},
			Bench: node(103, 30<<20, 6),
			Host:  &CPUUse{CPUSeconds: 16, CPUCores: 1.6},
		},
	}
	var b bytes.Buffer
	if err := rep.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"3 servers, RSS 100.0 MiB, CPU 0.50 cores, postgres 0.40 cores, bench 0.60 cores", // the summary line
		"server CPU (3 servers)", "0.50 cores (5.0 s)",
		"127.0.0.1:18481", "50.0 MiB, 0.30 cores (3.0 s), pid 101",
		"db CPU (postgres)", "0.40 cores (4.0 s), 7 processes",
		"bench CPU", "0.60 cores (6.0 s)",
		"1.60 of 2 cores busy (16.0 s), 1.0 s by other processes",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("text report lacks %q:\n%s", want, out)
		}
	}
	for line := range strings.Lines(out) {
		if strings.Contains(line, "127.0.0.1:18483") && !slices.Equal(strings.Fields(line), []string{"127.0.0.1:18483", "-"}) {
			t.Errorf("a server whose process was not found: %q, want a dash", line)
		}
	}
	b.Reset()
	if err := rep.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var back struct {
		Herald struct {
			Servers []map[string]any `json:"servers"`
			DB      *CPUUse          `json:"db"`
			Host    *CPUUse          `json:"host"`
		} `json:"herald"`
	}
	if err := json.Unmarshal(b.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	h := back.Herald
	if len(h.Servers) != 3 || h.Servers[0]["url"] != "http://127.0.0.1:18481" || h.Servers[0]["pid"] != 101.0 ||
		h.Servers[2]["pid"] != nil || h.DB == nil || *h.DB != *rep.Herald.DB || h.Host == nil {
		t.Fatalf("JSON report: %s", b.String())
	}
}

// TestRawRunReportsCPUSplit measures a raw run with this test's own
// command name as the database's: the report has the group's CPU, the
// bench's and the machine's.
func TestRawRunReportsCPUSplit(t *testing.T) {
	comm, err := os.ReadFile("/proc/self/comm")
	if err != nil {
		t.Skipf("no /proc here: %v", err)
	}
	name := strings.TrimSpace(string(comm))
	rep, err := Run(t.Context(), Config{Raw: true, Events: 300, Workers: 4, DBProcess: name, Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	r := rep.Raw
	checkComplete(t, r, 300, 1)
	if r.DB == nil || r.DB.Name != name || r.DB.Processes < 1 || r.DB.CPUSeconds < 0 {
		t.Fatalf("db CPU of %q: %+v (notes %v)", name, r.DB, r.Notes)
	}
	if r.Host == nil || r.Host.CPUSeconds <= 0 || r.Bench == nil {
		t.Fatalf("machine CPU %+v, bench %+v", r.Host, r.Bench)
	}
	var b bytes.Buffer
	if err := rep.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"db CPU (" + name + ")", "machine CPU", ", " + name + " "} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("text report lacks %q:\n%s", want, b.String())
		}
	}

	// A name no process has: a note, not a figure.
	rep, err = Run(t.Context(), Config{Raw: true, PublishOnly: true, Events: 10, Workers: 1, DBProcess: "no-such-proc"})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Raw.DB != nil || !slices.ContainsFunc(rep.Raw.Notes, func(n string) bool { return strings.Contains(n, `no process named "no-such-proc"`) }) {
		t.Fatalf("unknown process name: db %+v, notes %v", rep.Raw.DB, rep.Raw.Notes)
	}
}

// TestGroupWatchSumsProcessesByName sums the CPU of every process named
// like this test binary: this one, running when the watch starts, and a
// child started later, which counts from its start and still counts after
// it exits.
func TestGroupWatchSumsProcessesByName(t *testing.T) {
	comm, err := os.ReadFile("/proc/self/comm")
	if err != nil {
		t.Skipf("no /proc here: %v", err)
	}
	name := strings.TrimSpace(string(comm))
	w := newGroupWatch(name)
	self0, err := readProc(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// Burn some CPU here, waiting on the CPU clock with a deadline.
	deadline := time.Now().Add(20 * time.Second)
	own := burnCPU(t, deadline, 0.05)

	// A child with the same name burns CPU, says how much, and waits for
	// its standard input to close before exiting.
	cmd := exec.Command(os.Args[0], "-test.run=^TestGroupWatchChild$")
	cmd.Env = append(os.Environ(), "BENCH_TEST_BURN_CHILD=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var child float64
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "burnt "); ok {
			child, err = strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			break
		}
	}
	if child <= 0 {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("the child reported no CPU burnt (%v)", sc.Err())
	}
	w.sample() // sees the child alive, with at least what it reported
	stdin.Close()
	go func() { _, _ = io.Copy(io.Discard, stdout) }()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child: %v", err)
	}
	self1, err := readProc(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	u, err := w.finish()
	if err != nil {
		t.Fatal(err)
	}
	// Other processes with this name (other test binaries) only add.
	if want := (self1.cpu - self0.cpu) + child; u.Processes < 2 || u.CPUSeconds < want-1e-9 || u.Name != name {
		t.Fatalf("group %q: %+v; want at least 2 processes and %.2f s (own %.2f s burnt, child %.2f s)", name, u, want, own, child)
	}
	if u.CPUCores <= 0 {
		t.Fatalf("group cores %g", u.CPUCores)
	}
}

// TestGroupWatchChild is the child of TestGroupWatchSumsProcessesByName.
func TestGroupWatchChild(t *testing.T) {
	if os.Getenv("BENCH_TEST_BURN_CHILD") != "1" {
		t.Skip("run by TestGroupWatchSumsProcessesByName")
	}
	burnt := burnCPU(t, time.Now().Add(20*time.Second), 0.05)
	fmt.Printf("burnt %g\n", burnt)
	_, _ = io.Copy(io.Discard, os.Stdin) // until the parent closes it
}

// burnCPU spins until this process used at least seconds more CPU time, or
// fails at the deadline, and returns how much more it used.
func burnCPU(t *testing.T, deadline time.Time, seconds float64) float64 {
	t.Helper()
	start, err := readProc(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	x := uint64(1)
	for {
		for range 1_000_000 {
			x = x*6364136223846793005 + 1442695040888963407
		}
		now, err := readProc(os.Getpid())
		if err != nil {
			t.Fatal(err)
		}
		if d := now.cpu - start.cpu; d >= seconds && x != 0 {
			return d
		}
		if time.Now().After(deadline) {
			t.Fatalf("used %.3f s of CPU by the deadline, want %.3f", now.cpu-start.cpu, seconds)
		}
	}
}

func TestHostCPU(t *testing.T) {
	a, err := hostCPU()
	if err != nil {
		t.Skipf("no /proc/stat here: %v", err)
	}
	burnCPU(t, time.Now().Add(20*time.Second), 0.1)
	b, err := hostCPU()
	if err != nil {
		t.Fatal(err)
	}
	if a <= 0 || b-a < 0.05 {
		t.Fatalf("machine busy CPU %.2f s, then %.2f s after burning 0.1 s", a, b)
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
