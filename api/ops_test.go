package api

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/heraldhq/herald"
)

func TestHealthAndReadiness(t *testing.T) {
	e := newEnv(t, Config{Version: "1.2.3"})
	var health map[string]string
	e.must(http.StatusOK, req{method: "GET", path: "/healthz", key: "-"}, &health)
	if health["status"] != "ok" || health["version"] != "1.2.3" {
		t.Errorf("healthz %v", health)
	}
	var ready map[string]string
	e.must(http.StatusOK, req{method: "GET", path: "/readyz", key: "-"}, &ready)
	if ready["status"] != "ready" {
		t.Errorf("readyz %v", ready)
	}

	e.api.SetReady(false)
	if p := e.problem(herald.CodeUnavailable, "", req{method: "GET", path: "/readyz", key: "-"}); p.Detail != "not ready: shutting down" {
		t.Errorf("readyz after SetReady(false): %q, want it to say it is shutting down", p.Detail)
	}
	e.api.SetReady(true)
	e.must(http.StatusOK, req{method: "GET", path: "/readyz", key: "-"}, nil)

	// A store that cannot answer makes the node unready; liveness stays.
	if err := e.store.Close(); err != nil {
		t.Fatal(err)
	}
	e.problem(herald.CodeUnavailable, "", req{method: "GET", path: "/readyz", key: "-"})
	e.must(http.StatusOK, req{method: "GET", path: "/healthz", key: "-"}, nil)
	if !e.logs.has("level=WARN", "request_id=") {
		t.Errorf("store failure behind /readyz not logged:\n%s", e.logs.String())
	}
}

func TestMetricsEndpoint(t *testing.T) {
	e := newEnv(t, Config{})
	e.putTopic("m", "")
	e.must(http.StatusCreated, req{method: "POST", path: "/v1/topics/m/events", body: []byte("x")}, nil)
	e.problem(herald.CodeNotFound, anyField, req{method: "GET", path: "/v1/topics/none"})

	res := e.must(http.StatusOK, req{method: "GET", path: "/metrics", key: "-"}, nil)
	body := string(res.body)
	for _, want := range []string{
		`herald_http_requests_total{code="201",route="POST /v1/topics/{topic}/events"} 1`,
		`herald_http_requests_total{code="404",route="GET /v1/topics/{topic}"} 1`,
		`herald_http_request_duration_seconds_count{route="POST /v1/topics/{topic}/events"} 1`,
		`herald_events_published_total{source="api"} 1`,
		`herald_events_duplicate_total{source="api"} 0`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

func TestRequestID(t *testing.T) {
	e := newEnv(t, Config{})
	res := e.do(req{method: "GET", path: "/healthz", header: map[string]string{"X-Request-Id": "abc-123.x:y"}})
	if got := res.header.Get("X-Request-Id"); got != "abc-123.x:y" {
		t.Errorf("sane caller id replaced by %q", got)
	}
	for _, bad := range []string{"has space", strings.Repeat("a", maxRequestIDLen+1), "quote\"", "é"} {
		res := e.do(req{method: "GET", path: "/healthz", header: map[string]string{"X-Request-Id": bad}})
		if got := res.header.Get("X-Request-Id"); got == bad || !saneRequestID(got) {
			t.Errorf("caller id %q: response id %q", bad, got)
		}
	}
	p := e.problem(herald.CodeNotFound, anyField, req{method: "GET", path: "/v1/topics/x", header: map[string]string{"X-Request-Id": "trace-7"}})
	if p.RequestID != "trace-7" {
		t.Errorf("problem request_id %q", p.RequestID)
	}
}

func TestPanicBecomesLoggedProblem(t *testing.T) {
	e := newEnv(t, Config{})
	e.api.handle("GET /test/panic", public, func(w http.ResponseWriter, r *http.Request) error {
		panic("boom")
	})
	res := e.do(req{method: "GET", path: "/test/panic", header: map[string]string{"X-Request-Id": "panic-1"}})
	p := decodeProblem(t, res)
	if res.status != http.StatusInternalServerError || p.Detail != internalDetail {
		t.Errorf("panic answered %d %+v", res.status, p)
	}
	if !e.logs.has("level=ERROR", "handler panic", "request_id=panic-1", "boom") {
		t.Errorf("panic not logged with its request id:\n%s", e.logs.String())
	}
	// The server keeps serving.
	e.must(http.StatusOK, req{method: "GET", path: "/healthz"}, nil)
}

func TestInternalErrorsAreGeneric(t *testing.T) {
	e := newEnv(t, Config{})
	e.api.handle("GET /test/fail", public, func(w http.ResponseWriter, r *http.Request) error {
		return &herald.Error{Code: herald.CodeInternal, Message: "sqlite: disk I/O error at /var/lib/secret", Err: errSecret}
	})
	res := e.do(req{method: "GET", path: "/test/fail", header: map[string]string{"X-Request-Id": "fail-1"}})
	p := decodeProblem(t, res)
	if res.status != 500 || strings.Contains(string(res.body), "secret") {
		t.Errorf("internal error leaked: %d %s", res.status, res.body)
	}
	if p.Detail != internalDetail {
		t.Errorf("detail %q", p.Detail)
	}
	if !e.logs.has("level=ERROR", "request_id=fail-1", "disk I/O error") {
		t.Errorf("internal error not logged with the cause:\n%s", e.logs.String())
	}
	if n := e.logs.count("level=ERROR", "request_id=fail-1"); n != 1 {
		t.Errorf("internal error logged %d times, want once:\n%s", n, e.logs.String())
	}
}

var errSecret = errors.New("open /var/lib/secret/herald.db: disk I/O error")

func TestOpenAPIServed(t *testing.T) {
	e := newEnv(t, Config{})
	res := e.must(http.StatusOK, req{method: "GET", path: "/v1/openapi.json", key: "-"}, nil)
	var doc map[string]any
	if err := json.Unmarshal(res.body, &doc); err != nil || doc["openapi"] != "3.1.0" {
		t.Fatalf("document: %v %v", err, doc["openapi"])
	}
	if ct := res.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
}

// metricValue sums the samples of the metric family whose labels include
// the given ones.
func metricValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	metrics:
		for _, m := range f.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue metrics
				}
			}
			switch {
			case m.GetCounter() != nil:
				sum += m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				sum += m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				sum += float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return sum
}

func mustTime(t *testing.T, s string) time.Time {
	t.Helper()
	tm, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatal(err)
	}
	return tm
}
