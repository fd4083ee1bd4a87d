package main

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/bench"
)

// TestBenchSmoke runs the bench tool against a real server for a few
// seconds, with injected endpoint failures and challenge verification, so
// the tool and the whole delivery path keep working. No timing thresholds:
// figures live in docs/benchmarks.md.
func TestBenchSmoke(t *testing.T) {
	m, _ := testServer(t, t.TempDir(), nil)
	cfg := bench.Defaults()
	cfg.Server, cfg.Key = m.URL(), testAdminKey
	cfg.Events, cfg.Workers, cfg.Subscriptions = 500, 8, 2
	cfg.Verification = "challenge"
	cfg.FailRate = 0.1
	cfg.Timeout = 60 * time.Second
	rep, err := bench.Run(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	h := rep.Herald
	if h == nil || h.Published != 500 || h.Lost != 0 || h.Rejected != 0 || h.Delivered != 1000 {
		t.Fatalf("bench against herald: %+v", h)
	}
	t.Log(rep.Summary())
}

func TestBenchFlags(t *testing.T) {
	parse := func(environ map[string]string, args ...string) (bench.Config, error) {
		c := &cli{stderr: &bytes.Buffer{}, getenv: env(environ)}
		cfg, _, err := parseBench(c, args)
		return cfg, err
	}
	cfg, err := parse(map[string]string{"HERALD_URL": "http://127.0.0.1:9"},
		"--servers", "http://127.0.0.1:18481, http://127.0.0.1:18482", "--servers", "http://127.0.0.1:18483",
		"--pid", "0,4242", "--db-process", "postgres")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"http://127.0.0.1:18481", "http://127.0.0.1:18482", "http://127.0.0.1:18483"}; !slices.Equal(cfg.Servers, want) || cfg.Server != "" {
		t.Errorf("--servers: Servers %q, Server %q; want %q and no Server", cfg.Servers, cfg.Server, want)
	}
	if !slices.Equal(cfg.PIDs, []int{0, 4242}) || cfg.DBProcess != "postgres" {
		t.Errorf("--pid 0,4242 --db-process postgres: PIDs %v, DBProcess %q", cfg.PIDs, cfg.DBProcess)
	}
	cfg, err = parse(nil, "--server", "http://127.0.0.1:18481", "--pid", "77")
	if err != nil || cfg.Server != "http://127.0.0.1:18481" || len(cfg.Servers) != 0 || !slices.Equal(cfg.PIDs, []int{77}) {
		t.Errorf("--server with one --pid: %+v, %v", cfg, err)
	}
	for _, bad := range [][]string{
		{"--server", "http://127.0.0.1:1", "--servers", "http://127.0.0.1:2"},
		{"--pid", "12,x"},
		{"--pid", "-3"},
	} {
		_, err := parse(nil, bad...)
		if _, ok := errors.AsType[*usageError](err); !ok || !strings.Contains(err.Error(), strings.TrimPrefix(bad[len(bad)-2], "--")) {
			t.Errorf("%q: error %v, want a usage error naming the flag", bad, err)
		}
	}
	// Validation names --servers for a server that is not loopback.
	r := runCLI(t, nil, nil, "bench", "--servers", "http://127.0.0.1:18481,http://192.0.2.1:8480", "--events", "1")
	if r.code != exitUsage || !strings.Contains(r.stderr, "--servers") || !strings.Contains(r.stderr, "192.0.2.1") {
		t.Errorf("remote --servers: code %d, stderr %q", r.code, r.stderr)
	}
}

// TestBenchSeveralNodes runs the bench tool against two Herald processes
// sharing one PostgreSQL schema: publishes spread over both, deliveries
// all arrive, and each node's process is found and reported beside the sum.
// The group of processes is the herald binary's own name, which surely runs
// here, where a PostgreSQL's processes may not (a container).
func TestBenchSeveralNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes; skipped with -short")
	}
	dsn := pgDSN(t)
	var procs []*proc
	var urls []string
	for range 2 {
		p := startProc(t, "--database-url", dsn, "--admin-key", testAdminKey, "--data-dir", t.TempDir())
		procs = append(procs, p)
		urls = append(urls, p.url)
	}
	cfg := bench.Defaults()
	cfg.Servers, cfg.Key = urls, testAdminKey
	cfg.Events, cfg.Batch, cfg.Workers, cfg.Subscriptions = 300, 10, 4, 2
	cfg.DBProcess = "herald"
	cfg.Timeout = 60 * time.Second
	rep, err := bench.Run(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	h := rep.Herald
	if h == nil || h.Published != 300 || h.PublishFailed != 0 || h.Lost != 0 || h.Rejected != 0 || h.Delivered != 600 {
		t.Fatalf("bench against two nodes: %+v", h)
	}
	if len(h.Servers) != 2 || h.Server == nil {
		t.Fatalf("per-server stats %+v, total %+v; notes %v", h.Servers, h.Server, h.Notes)
	}
	var cpu float64
	for i, s := range h.Servers {
		if s.URL != urls[i] || s.ProcStats == nil || s.PID != procs[i].cmd.Process.Pid || s.RSSMaxBytes <= 0 {
			t.Fatalf("server %d: %+v (%+v), want %s with pid %d", i, s, s.ProcStats, urls[i], procs[i].cmd.Process.Pid)
		}
		cpu += s.CPUSeconds
	}
	if h.Server.CPUSeconds != cpu || h.Server.RSSMaxBytes < max(h.Servers[0].RSSEndBytes, h.Servers[1].RSSEndBytes) {
		t.Fatalf("total %+v of %+v and %+v", h.Server, h.Servers[0].ProcStats, h.Servers[1].ProcStats)
	}
	if h.DB == nil || h.DB.Name != "herald" || h.DB.Processes < 2 || h.Bench == nil || h.Host == nil {
		t.Fatalf("CPU split: db %+v, bench %+v, machine %+v; notes %v", h.DB, h.Bench, h.Host, h.Notes)
	}
	var b bytes.Buffer
	if err := rep.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "server CPU (2 servers)") || !strings.Contains(b.String(), "db CPU (herald)") {
		t.Fatalf("text report:\n%s", b.String())
	}
	t.Log(b.String())
}
