package api

import (
	"errors"
	"maps"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the API's Prometheus collectors. Labels come from bounded
// sets: route patterns and status codes.
type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	// audited and auditFailures count the changes recorded in the audit
	// log, and those that could not be.
	audited       prometheus.Counter
	auditFailures prometheus.Counter
	// tokens counts bearer tokens from outside checked, by method (oidc,
	// introspection) and result (accepted, refused, unavailable).
	tokens *prometheus.CounterVec
	// routes caches each route's children of requests and duration; it is
	// filled as routes are registered and only read once serving.
	routes map[string]*routeMetrics
}

// routeMetrics holds one route's children of the request collectors, made
// on its first request, so that a request does not look them up by label
// values every time (hashing and checking the labels under the vector's
// lock, and formatting the status code): issue 20's per-request costs.
type routeMetrics struct {
	route    string
	duration func() prometheus.Observer
	mu       sync.Mutex                                 // held to add a code
	codes    atomic.Pointer[map[int]prometheus.Counter] // copied on write
}

func (m *metrics) route(route string) *routeMetrics {
	if rm := m.routes[route]; rm != nil {
		return rm
	}
	return m.newRoute(route) // not registered: cached nowhere, still counted
}

func (m *metrics) newRoute(route string) *routeMetrics {
	rm := &routeMetrics{route: route}
	rm.duration = sync.OnceValue(func() prometheus.Observer { return m.duration.WithLabelValues(route) })
	rm.codes.Store(new(map[int]prometheus.Counter))
	return rm
}

// requests returns the route's request counter for the status code.
func (rm *routeMetrics) requests(vec *prometheus.CounterVec, code int) prometheus.Counter {
	if c, ok := (*rm.codes.Load())[code]; ok {
		return c
	}
	rm.mu.Lock()
	defer rm.mu.Unlock()
	old := *rm.codes.Load()
	if c, ok := old[code]; ok {
		return c
	}
	c := vec.WithLabelValues(rm.route, strconv.Itoa(code))
	next := make(map[int]prometheus.Counter, len(old)+1)
	maps.Copy(next, old)
	next[code] = c
	rm.codes.Store(&next)
	return c
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_http_requests_total",
			Help: "HTTP requests answered, by route pattern and status code.",
		}, []string{"route", "code"})),
		duration: register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "herald_http_request_duration_seconds",
			Help:    "Time to answer HTTP requests, by route pattern.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"route"})),
		audited: register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_audit_entries_total",
			Help: "Changes recorded in the audit log.",
		})),
		auditFailures: register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_audit_failures_total",
			Help: "Changes that could not be recorded in the audit log (the store failed); each is logged.",
		})),
		tokens: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_auth_tokens_total",
			Help: "Bearer tokens from an outside identity provider checked, by method (oidc, introspection) and result (accepted, refused, unavailable).",
		}, []string{"method", "result"})),
		routes: make(map[string]*routeMetrics),
	}
	m.routes[unmatchedRoute] = m.newRoute(unmatchedRoute)
	return m
}

// unmatchedRoute labels the requests no route matched, so the label set
// stays bounded.
const unmatchedRoute = "unmatched"

// register adds c to reg, or returns the collector already registered
// under the same description (a second Server on one registry shares the
// first one's collectors instead of panicking).
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		if are, ok := errors.AsType[prometheus.AlreadyRegisteredError](err); ok {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		panic("api: register metric: " + err.Error()) // a programming error: conflicting definitions
	}
	return c
}
