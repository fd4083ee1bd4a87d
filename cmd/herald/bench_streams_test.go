package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/bench"
	"github.com/heraldhq/herald/client"
)

// TestBenchStreamsSmoke runs the streams benchmark against a real server
// for a few seconds, WebSocket and SSE together, so the tool and the
// fan-out path keep working: every event must reach every connection
// exactly once. No timing thresholds: figures live in docs/benchmarks.md.
func TestBenchStreamsSmoke(t *testing.T) {
	m, _ := testServer(t, t.TempDir(), nil)
	cfg := bench.StreamsConfig{
		Server: m.URL(), Key: testAdminKey,
		Clients: 50, Proto: bench.ProtoMixed, Rate: 200, Events: 200,
		Idle: time.Millisecond, Timeout: 60 * time.Second,
	}
	rep, err := bench.RunStreams(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	cn := rep.Connections
	if cn.Opened != 50 || cn.Failed != 0 || cn.WS != 25 || cn.SSE != 25 || cn.Latency.Count != 50 {
		t.Fatalf("connections: %+v", cn)
	}
	if rep.Published != 200 || rep.PublishFailed != 0 {
		t.Fatalf("published %d (failed %d: %s), want 200", rep.Published, rep.PublishFailed, rep.PublishError)
	}
	if rep.Expected != 200*50 || rep.Delivered != rep.Expected || rep.Lost != 0 || rep.Duplicates != 0 || rep.Malformed != 0 || rep.TimedOut {
		t.Fatalf("delivered %d of %d, lost %d, duplicates %d, malformed %d", rep.Delivered, rep.Expected, rep.Lost, rep.Duplicates, rep.Malformed)
	}
	if rep.E2E.Count != rep.Expected || rep.E2E.P50 <= 0 || rep.E2E.Max < rep.E2E.P99 || rep.DeliveryRate <= 0 {
		t.Fatalf("e2e latency %+v, delivery rate %g: want one sample per delivery", rep.E2E, rep.DeliveryRate)
	}
	if rep.Disconnects != 0 || len(rep.Problems()) != 0 {
		t.Fatalf("disconnects %d %v, problems %q", rep.Disconnects, rep.DisconnectReasons, rep.Problems())
	}
	if rep.Memory == nil || rep.Memory.IdleBytes <= 0 || rep.Server == nil || rep.Bench == nil {
		t.Errorf("no memory or CPU figures: memory %+v, server %+v, bench %+v, notes %q", rep.Memory, rep.Server, rep.Bench, rep.Notes)
	}
	if _, err := adminClient(m).GetTopic(t.Context(), rep.Topic); !isStatus(err, 404) {
		t.Errorf("topic %s after the run: %v; want it deleted", rep.Topic, err)
	}
	t.Log(rep.Summary())
}

func isStatus(err error, status int) bool {
	p, ok := err.(*client.Problem)
	return ok && p.Status == status
}

// TestBenchStreamsRefusedConnection checks that a server's per-key stream
// limit ends the run at once with an error that names the setting to
// raise, and that the verb reports it with a failing status.
func TestBenchStreamsRefusedConnection(t *testing.T) {
	for _, proto := range []string{"ws", "sse"} {
		// A server each: the first run's connections may still count
		// against the key for a moment after it closed them.
		m, _ := testServer(t, t.TempDir(), func(c *Config) { c.StreamMaxConnsPerKey = 3 })
		var stdout, stderr bytes.Buffer
		c := &cli{stdout: &stdout, stderr: &stderr, getenv: env(nil)}
		err := benchStreamsVerb(t.Context(), c, []string{"--server", m.URL(), "--key", testAdminKey,
			"--clients", "10", "--proto", proto, "--dialers", "1", "--idle", "0", "--json"})
		if err == nil {
			t.Fatalf("%s: no error; output:\n%s", proto, stdout.String())
		}
		for _, want := range []string{"3 of 10 connections opened", "the limit is 3", "stream.max-conns-per-key", "at least 10"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%s: error %q does not say %q", proto, err, want)
			}
		}
		var rep bench.StreamsReport
		if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
			t.Fatalf("%s: JSON report: %v\n%s", proto, err, stdout.String())
		}
		if !rep.Connections.LimitRefused || rep.Connections.Opened != 3 || rep.Published != 0 {
			t.Errorf("%s: report %+v, published %d", proto, rep.Connections, rep.Published)
		}
		if _, err := adminClient(m).GetTopic(t.Context(), rep.Topic); !isStatus(err, 404) {
			t.Errorf("%s: topic %s after the run: %v; want it deleted", proto, rep.Topic, err)
		}
	}
}

func TestParseBenchStreams(t *testing.T) {
	parse := func(args ...string) bench.StreamsConfig {
		t.Helper()
		c := &cli{stderr: &bytes.Buffer{}, getenv: env(map[string]string{"HERALD_URL": "http://127.0.0.1:9", "HERALD_KEY": "k"})}
		cfg, _, err := parseBenchStreams(c, args)
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	cfg := parse("--clients", "19000", "--proto", "sse", "--rate", "2", "--duration", "1m", "--batch", "5", "--quiet")
	if cfg.Clients != 19000 || cfg.Proto != "sse" || cfg.Rate != 2 || cfg.Duration != time.Minute || cfg.Batch != 5 ||
		cfg.Events != 0 || cfg.Server != "http://127.0.0.1:9" || cfg.Key != "k" || cfg.Progress != nil {
		t.Errorf("parsed %+v", cfg)
	}
	if cfg := parse("--idle", "0"); cfg.Idle >= 0 {
		t.Errorf("--idle 0 gave Idle %s; want no hold (negative)", cfg.Idle)
	}
	if cfg := parse(); cfg.Idle != 5*time.Second || cfg.Progress == nil {
		t.Errorf("defaults: idle %s, progress %v", cfg.Idle, cfg.Progress)
	}
	c := &cli{stderr: &bytes.Buffer{}, getenv: env(nil)}
	err := benchStreamsVerb(t.Context(), c, []string{"--clients", "-1", "--proto", "tcp", "--server", "http://127.0.0.1:9"})
	if _, ok := err.(*usageError); !ok || !strings.Contains(err.Error(), "--clients") || !strings.Contains(err.Error(), "--proto") {
		t.Errorf("bad flags: %T %v; want a usage error naming both", err, err)
	}
}
