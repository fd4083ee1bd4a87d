package api

import (
	"errors"

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
}

func newMetrics(reg prometheus.Registerer) *metrics {
	return &metrics{
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
	}
}

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
