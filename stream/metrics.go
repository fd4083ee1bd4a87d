package stream

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the hub's herald_stream_* series. Labels come from bounded
// sets: the transport is "sse" or "websocket".
type metrics struct {
	conns           *prometheus.GaugeVec
	subs            prometheus.Gauge
	sentVec         *prometheus.CounterVec
	slowVec         *prometheus.CounterVec
	replayed        prometheus.Counter
	fanoutOverflow  prometheus.Counter
	presenceDropped prometheus.Counter

	sentSSE, sentWS prometheus.Counter
	slowSSE, slowWS prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		conns: register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "herald_stream_connections",
			Help: "Open realtime stream connections, by transport.",
		}, []string{"transport"})),
		subs: register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "herald_stream_subscriptions",
			Help: "Active subscriptions over all stream connections.",
		})),
		sentVec: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_stream_messages_sent_total",
			Help: "Events written to stream clients, live and replayed, by transport.",
		}, []string{"transport"})),
		slowVec: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_stream_slow_consumer_disconnects_total",
			Help: "Stream connections cut off because their queue was full, by transport.",
		}, []string{"transport"})),
		replayed: register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_stream_replayed_events_total",
			Help: "Events sent to stream clients from the store or tail cache while they caught up.",
		})),
		fanoutOverflow: register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_stream_fanout_overflow_events_total",
			Help: "Committed events that did not fit the fan-out buffer and were read back from the tail cache or store.",
		})),
		presenceDropped: register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_stream_presence_dropped_total",
			Help: "Presence events (a user joined or left the cluster) not published: their commit failed.",
		})),
	}
	m.sentSSE, m.sentWS = m.sentVec.WithLabelValues("sse"), m.sentVec.WithLabelValues("websocket")
	m.slowSSE, m.slowWS = m.slowVec.WithLabelValues("sse"), m.slowVec.WithLabelValues("websocket")
	return m
}

func (m *metrics) sent(t transport) prometheus.Counter {
	if t == transportWS {
		return m.sentWS
	}
	return m.sentSSE
}

func (m *metrics) slowConsumer(t transport) prometheus.Counter {
	if t == transportWS {
		return m.slowWS
	}
	return m.slowSSE
}

// register adds c to reg, or returns the collector already registered
// under the same description, so hubs can share a registry.
func register[T prometheus.Collector](reg prometheus.Registerer, c T) T {
	if reg == nil {
		return c
	}
	if err := reg.Register(c); err != nil {
		if are, ok := errors.AsType[prometheus.AlreadyRegisteredError](err); ok {
			if existing, ok := are.ExistingCollector.(T); ok {
				return existing
			}
		}
		panic(err)
	}
	return c
}
