package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/heraldhq/herald/channel"
)

// producer is one franz-go client shared (channel.Pool) by every sink
// whose config has the same poolKey. Its fields are fixed once made.
type producer struct {
	cl *kgo.Client
	// lastDial is the newest failure to connect to a broker, dial or
	// login (TLS, SASL), nil once a connection succeeds: a record that
	// times out while the brokers cannot be reached reports why
	// (connection refused, DNS, refused destination, a refused login)
	// instead of a bare timeout.
	lastDial atomic.Pointer[dialFailure]
}

var _ kgo.HookBrokerConnect = (*producer)(nil)

// OnBrokerConnect notes how the newest connection attempt ended: franz-go
// calls it once the dial and the connection's initialization (API
// versions, the SASL exchange) are over, with the first error of either.
func (p *producer) OnBrokerConnect(meta kgo.BrokerMetadata, _ time.Duration, _ net.Conn, err error) {
	if err == nil {
		p.lastDial.Store(nil)
		return
	}
	if f := p.lastDial.Load(); f != nil && errors.Is(f.err, err) {
		return // the dialer's failure, already noted with its address
	}
	p.lastDial.Store(&dialFailure{fmt.Errorf("connect to %s: %w", net.JoinHostPort(meta.Host, strconv.Itoa(int(meta.Port))), err)})
}

type dialFailure struct{ err error }

// openProducer makes the producer of a config; franz-go connects on
// first use.
func (c *Channel) openProducer(cfg Config) (*producer, error) {
	p := &producer{}
	opts, err := c.options(cfg, p)
	if err != nil {
		return nil, err
	}
	if p.cl, err = kgo.NewClient(opts...); err != nil {
		return nil, fmt.Errorf("kafka producer: %w", err)
	}
	c.metrics.producers.Inc()
	c.log.Info("kafka producer opened", "destination", "kafka://"+strings.Join(cfg.Brokers, ","))
	return p, nil
}

// closeProducer closes a producer once its last sink released it.
func (c *Channel) closeProducer(p *producer) {
	p.cl.Close() // fails what is still buffered; its deliveries have returned
	c.metrics.producers.Dec()
}

// options are the franz-go settings of a config: acks from every in-sync
// replica and idempotent writes (franz-go's defaults, set here so they
// stay), no linger in the client because the engine gathers the batch,
// dials through the SSRF guard.
func (c *Channel) options(cfg Config, p *producer) ([]kgo.Opt, error) {
	opts := []kgo.Opt{
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.ClientID(cfg.ClientID),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(0),
		kgo.AllowAutoTopicCreation(),
		kgo.ProducerBatchCompression(codec(cfg.Compression)),
		kgo.WithLogger(kgoLogger{c.log}),
		kgo.WithHooks(p),
	}
	tc, err := cfg.TLSOptions.Config()
	if err != nil {
		return nil, err
	}
	dial := channel.Dialer(c.cfg.AllowPrivate, tc)
	opts = append(opts, kgo.Dialer(func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := dial(ctx, network, addr)
		if err != nil {
			p.lastDial.Store(&dialFailure{fmt.Errorf("dial %s: %w", addr, err)})
			return nil, err
		}
		return conn, nil // a login may still fail: OnBrokerConnect says
	}))
	if cfg.SASLMechanism != "" {
		opts = append(opts, kgo.SASL(Mechanism(cfg)))
	}
	return opts, nil
}

func codec(name string) kgo.CompressionCodec {
	switch name {
	case "gzip":
		return kgo.GzipCompression()
	case "snappy":
		return kgo.SnappyCompression()
	case "lz4":
		return kgo.Lz4Compression()
	case "zstd":
		return kgo.ZstdCompression()
	}
	return kgo.NoCompression()
}

// Mechanism is the franz-go SASL mechanism of a validated config's SASL
// members.
func Mechanism(s Config) sasl.Mechanism {
	switch s.SASLMechanism {
	case MechanismSCRAMSHA256:
		return scram.Auth{User: s.Username, Pass: s.Password}.AsSha256Mechanism()
	case MechanismSCRAMSHA512:
		return scram.Auth{User: s.Username, Pass: s.Password}.AsSha512Mechanism()
	}
	return plain.Auth{User: s.Username, Pass: s.Password}.AsMechanism()
}

// kgoLogger passes franz-go's warnings and errors to slog; its info and
// debug lines are per-request chatter.
type kgoLogger struct{ log *slog.Logger }

func (l kgoLogger) Level() kgo.LogLevel { return kgo.LogLevelWarn }

func (l kgoLogger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	lv := slog.LevelWarn
	if level == kgo.LogLevelError {
		lv = slog.LevelError
	}
	l.log.Log(context.Background(), lv, "franz-go: "+msg, keyvals...)
}

// metrics are the channel's own; deliveries, attempts and latency are the
// engine's, labelled by channel.
type metrics struct {
	producers prometheus.Gauge
	records   *prometheus.CounterVec
	// acked and failed are records' two children, looked up once.
	acked, failed prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		producers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "herald_kafka_producers",
			Help: "Kafka producers open: one per distinct set of brokers and connection settings.",
		}),
		records: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_kafka_records_total",
			Help: "Records handed to Kafka producers, by result: acked by every in-sync replica, or failed.",
		}, []string{"result"}),
	}
	m.acked, m.failed = m.records.WithLabelValues("acked"), m.records.WithLabelValues("failed")
	if reg != nil {
		reg.MustRegister(m.producers, m.records)
	}
	return m
}
