// Package nats is the nats channel: it publishes a subscription's events to
// NATS, to core NATS subjects or to JetStream streams, with nats.go.
//
// A JetStream publish counts as delivered once the stream acknowledged it;
// its Nats-Msg-Id is the event id, so the stream drops the copies Herald
// sends again after a lost acknowledgement (within the stream's duplicate
// window). A core NATS publish counts as delivered once the server has it
// (a flush round trip): core NATS keeps nothing for a subscriber that is
// not listening.
//
// Each message carries the payload byte for byte and headers: Nats-Msg-Id
// (JetStream), Herald-Event-Id, Herald-Topic, Herald-Seq,
// Herald-Event-Type, Herald-Event-Key, Herald-Attempt,
// Herald-Subscription-Id, Content-Type and the producer's headers.
//
// Sinks of the same servers and login share one connection, which
// reconnects on its own with backoff; while it is down, deliveries fail
// at once (and retry): nothing is buffered where a restart would lose it.
package nats

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/channel"
)

// Name is the channel's name on the wire.
const Name = "nats"

// Failure reasons of this channel, beside channel.NetReason's: safe to show
// anyone who may see the subscription; docs/channels.md lists them.
const (
	ReasonNotConnected = "not-connected"  // the connection is down; it reconnects on its own
	ReasonAuth         = "auth-failed"    // the server refused the login or the subject
	ReasonNoStream     = "no-stream"      // JetStream: no stream takes the subject
	ReasonTooLarge     = "too-large"      // the message is over the server's max_payload
	ReasonRejected     = "rejected"       // JetStream refused the message (its error is the detail)
	ReasonPublish      = "publish-failed" // any other failure
)

// ChannelConfig configures the nats channel: DialTimeout bounds one
// connection attempt; ReconnectWait is the pause between reconnection
// attempts, with jitter.
type ChannelConfig = channel.BrokerConfig

// Channel is the nats channel. It is safe for concurrent use.
type Channel struct {
	channel.Configs[Config] // Validate, Public, Destination
	cfg                     ChannelConfig
	log                     *slog.Logger
	pool                    *channel.Pool[*conn]
	metrics                 metrics
}

var _ channel.Channel = (*Channel)(nil)

type metrics struct {
	reconnects prometheus.Counter
}

// NewChannel returns the nats channel.
func NewChannel(cfg ChannelConfig) *Channel {
	cfg = cfg.WithDefaults(Name)
	c := &Channel{cfg: cfg, log: cfg.Logger}
	// Configs: Validate checks servers the guard allows, a subject template
	// that makes valid subjects and at most one login (errors name the
	// member: "url", "subject", "stream", "user", "password", "token",
	// "creds"); Public leaves out the password, token and creds; the
	// destination is the servers ("nats://host:4222"), so subscriptions
	// to one NATS cluster share its part of the send slots.
	c.Configs = channel.Configs[Config]{Name: Name,
		Check: func(p channel.ValidateParams) (Config, error) { return validate(p, cfg.AllowPrivate) },
		Hide:  func(c *Config) { c.Password, c.Token, c.Creds = "", "", "" },
		Dest:  func(c Config) string { return c.URL }}
	c.pool = channel.NewPool(func(cn *conn) { cn.close() })
	c.metrics = metrics{
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "herald_nats_reconnects_total", Help: "Times a connection to NATS was lost and made again.",
		}),
	}
	cfg.Register(c.metrics.reconnects,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "herald_nats_connections", Help: "Pooled connections to NATS (one per distinct servers and login), by state.",
			ConstLabels: prometheus.Labels{"state": "up"},
		}, func() float64 { return c.connections(true) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "herald_nats_connections", Help: "Pooled connections to NATS (one per distinct servers and login), by state.",
			ConstLabels: prometheus.Labels{"state": "down"},
		}, func() float64 { return c.connections(false) }),
	)
	return c
}

// Name is "nats".
func (c *Channel) Name() string { return Name }

// Open returns a sink over the pooled connection of the config's servers
// and login, connecting in the background when this is the first.
func (c *Channel) Open(_ context.Context, sub *herald.Subscription) (channel.Sink, error) {
	cfg, err := parseConfig(sub.Config)
	if err != nil {
		return nil, err
	}
	subject, err := channel.ParseTemplate(cfg.Subject)
	if err != nil {
		return nil, fmt.Errorf("subscription %s: subject: %w", sub.ID, err)
	}
	cn, release, err := c.pool.Acquire(cfg.poolKey(), func() (*conn, error) { return c.dial(cfg) })
	if err != nil {
		return nil, fmt.Errorf("subscription %s: %w", sub.ID, err)
	}
	return &sink{conn: cn, release: release, cfg: cfg, subject: subject, subID: sub.ID, limits: cfg.Limits(DefaultBatch, maxBatchBytes)}, nil
}

// conn is one pooled connection. Connecting starts in the background at
// dial; ready is closed once the first attempt is over (the connection
// then is up, or reconnecting on its own).
type conn struct {
	ready chan struct{}
	nc    *natsgo.Conn
	js    jetstream.JetStream
	err   error // the options were refused: nothing will ever connect
}

func (c *Channel) dial(cfg Config) (*conn, error) {
	dialer := &net.Dialer{Timeout: c.cfg.DialTimeout, ControlContext: channel.DialControl(c.cfg.AllowPrivate)}
	log := c.log.With("servers", cfg.URL)
	opts := []natsgo.Option{
		natsgo.Name("herald"),
		natsgo.SetCustomDialer(dialer),
		natsgo.Timeout(c.cfg.DialTimeout),
		natsgo.RetryOnFailedConnect(true),
		natsgo.MaxReconnects(-1),
		natsgo.ReconnectWait(c.cfg.ReconnectWait),
		natsgo.ReconnectJitter(c.cfg.ReconnectWait/2, c.cfg.ReconnectWait),
		// No reconnect buffer: a publish while the connection is down
		// fails and is retried from the log, instead of sitting in a
		// buffer that a crash would lose.
		natsgo.ReconnectBufSize(-1),
		natsgo.ConnectHandler(func(*natsgo.Conn) {
			log.Info("nats connected")
		}),
		natsgo.DisconnectErrHandler(func(_ *natsgo.Conn, err error) {
			if err != nil { // nil: closed by Herald
				log.Warn("nats connection lost", "err", err)
			}
		}),
		natsgo.ReconnectHandler(func(*natsgo.Conn) {
			c.metrics.reconnects.Inc()
			log.Info("nats reconnected")
		}),
		natsgo.ErrorHandler(func(_ *natsgo.Conn, _ *natsgo.Subscription, err error) {
			log.Warn("nats error", "err", err)
		}),
	}
	switch {
	case cfg.Creds != "":
		opts = append(opts, natsgo.UserCredentialBytes([]byte(cfg.Creds)))
	case cfg.Token != "":
		opts = append(opts, natsgo.Token(cfg.Token))
	case cfg.User != "":
		opts = append(opts, natsgo.UserInfo(cfg.User, cfg.Password))
	}
	cn := &conn{ready: make(chan struct{})}
	// The first attempt can take up to the dial timeout (a server that
	// accepts and never answers); Open must not wait for it. The
	// goroutine ends with the attempt: after it, nats.go reconnects on
	// goroutines of its own, which Close stops.
	go func() {
		defer close(cn.ready)
		nc, err := natsgo.Connect(cfg.URL, opts...)
		if err != nil {
			log.Error("nats connection refused its options", "err", err)
			cn.err = err
			return
		}
		cn.nc = nc
		js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(16384), jetstream.WithPublishAsyncTimeout(time.Minute))
		if err != nil {
			cn.err = err
			return
		}
		cn.js = js
	}()
	return cn, nil
}

// connections counts the pooled connections that are up (or down).
func (c *Channel) connections(up bool) float64 {
	return c.pool.Count(func(cn *conn) bool {
		select {
		case <-cn.ready:
			return (cn.nc != nil && cn.nc.IsConnected()) == up
		default:
			return !up // still connecting
		}
	})
}

func (cn *conn) close() {
	<-cn.ready
	if cn.nc != nil {
		cn.nc.Close()
	}
}

// Batches: max_batch_events, by default DefaultBatch, up to MaxBatch.
const (
	DefaultBatch  = 500
	MaxBatch      = 5000
	maxBatchBytes = 4 << 20
)

// sink publishes one subscription's events.
type sink struct {
	conn    *conn
	release func()
	cfg     Config
	subject channel.Template
	subID   string
	limits  channel.BatchLimits
}

var _ channel.Batcher = (*sink)(nil)

// BatchLimits: the config's max_batch_events (500 by default) and
// linger_ms, up to 4 MiB a call.
func (s *sink) BatchLimits() channel.BatchLimits { return s.limits }

// Deliver publishes one event.
func (s *sink) Deliver(ctx context.Context, ev *herald.Event, attempt int) herald.DeliveryResult {
	return channel.DeliverOne(ctx, s, ev, attempt)
}

// DeliverBatch publishes the events in order on the one connection, then
// waits for the server: JetStream's acknowledgement of each, or for core
// NATS one flush round trip for all.
func (s *sink) DeliverBatch(ctx context.Context, batch []channel.Delivery) []herald.DeliveryResult {
	res := channel.NewResults(batch)
	fail := func(from int, reason string, err error) { res.FailRest(from, reason, detail(err)) }
	if !channel.Wait(ctx, s.conn.ready) {
		return res.Done(channel.ReasonTimeout, "the connection to the servers is still being made")
	}
	if s.conn.err != nil {
		return res.Done(ReasonPublish, detail(s.conn.err))
	}
	nc := s.conn.nc
	if !nc.IsConnected() {
		return res.Done(s.downReason(), detail(nc.LastError()))
	}
	if s.cfg.JetStream {
		s.publishJetStream(ctx, batch, res)
		return res.Done(ReasonPublish, "no answer from the server")
	}
	for i, d := range batch {
		if err := nc.PublishMsg(s.message(d)); err != nil {
			r, e := s.classify(err)
			fail(i, r, e)
			break
		}
	}
	if err := nc.FlushWithContext(ctx); err != nil {
		r, e := s.classify(err)
		fail(0, r, e)
	}
	for i := range batch {
		if !res.Settled(i) {
			res.Delivered(i)
		}
	}
	return res.Done(ReasonPublish, "")
}

func (s *sink) publishJetStream(ctx context.Context, batch []channel.Delivery, res *channel.Results) {
	var opts []jetstream.PublishOpt
	if s.cfg.Stream != "" {
		opts = append(opts, jetstream.WithExpectStream(s.cfg.Stream))
	}
	futures := make([]jetstream.PubAckFuture, len(batch))
	for i, d := range batch {
		f, err := s.conn.js.PublishMsgAsync(s.message(d), append(opts, jetstream.WithMsgID(d.Event.ID))...)
		if err != nil {
			r, e := s.classify(err)
			res.FailRest(i, r, detail(e))
			break
		}
		futures[i] = f
	}
	for i, f := range futures {
		if f == nil {
			continue
		}
		select {
		case <-f.Ok():
			res.Delivered(i) // a duplicate is delivered too: the stream has it
		case err := <-f.Err():
			r, e := s.classify(err)
			res.Fail(i, r, detail(e))
		case <-ctx.Done():
			r, e := s.classify(ctx.Err())
			res.FailRest(i, r, detail(e))
			return
		}
	}
}

// message builds the NATS message of one delivery.
func (s *sink) message(d channel.Delivery) *natsgo.Msg {
	ev := d.Event
	m := natsgo.NewMsg(subjectFor(s.subject, ev))
	m.Data = ev.Payload
	for k, v := range ev.Headers {
		if !reservedHeader(k) {
			m.Header.Set(k, v)
		}
	}
	ct := ev.ContentType
	if ct == "" {
		ct = "application/octet-stream"
	}
	m.Header.Set("Content-Type", ct)
	m.Header.Set("Herald-Event-Id", ev.ID)
	m.Header.Set("Herald-Topic", ev.Topic)
	m.Header.Set("Herald-Seq", strconv.FormatInt(ev.Seq, 10))
	if ev.Type != "" {
		m.Header.Set("Herald-Event-Type", ev.Type)
	}
	if ev.Key != "" {
		m.Header.Set("Herald-Event-Key", ev.Key)
	}
	m.Header.Set("Herald-Attempt", strconv.Itoa(d.Attempt))
	m.Header.Set("Herald-Subscription-Id", s.subID)
	return m
}

// reservedHeader reports whether a producer's header name is Herald's or
// NATS's to set.
func reservedHeader(name string) bool {
	prefix := func(p string) bool { return len(name) >= len(p) && strings.EqualFold(name[:len(p)], p) }
	return prefix("herald-") || prefix("nats-") || strings.EqualFold(name, "content-type")
}

// downReason is the reason while the connection is down: why the last
// attempt failed when that is known, else not-connected.
func (s *sink) downReason() string {
	err := s.conn.nc.LastError()
	if errors.Is(err, natsgo.ErrAuthorization) || errors.Is(err, natsgo.ErrAuthExpired) || errors.Is(err, natsgo.ErrAuthRevoked) {
		return ReasonAuth
	}
	if r := channel.NetReason(err); r != "" && r != channel.ReasonCanceled {
		return r
	}
	return ReasonNotConnected
}

// classify returns the reason of a publish error and the error to detail.
func (s *sink) classify(err error) (string, error) {
	var apiErr *jetstream.APIError
	switch {
	case errors.Is(err, natsgo.ErrReconnectBufExceeded), errors.Is(err, natsgo.ErrConnectionReconnecting),
		errors.Is(err, natsgo.ErrConnectionClosed), errors.Is(err, natsgo.ErrDisconnected):
		if last := s.conn.nc.LastError(); last != nil {
			return s.downReason(), last
		}
		return ReasonNotConnected, err
	case errors.Is(err, natsgo.ErrMaxPayload):
		return ReasonTooLarge, err
	case errors.Is(err, jetstream.ErrNoStreamResponse), errors.Is(err, natsgo.ErrNoResponders):
		return ReasonNoStream, fmt.Errorf("no JetStream stream takes the subject: %w", err)
	case errors.Is(err, jetstream.ErrAsyncPublishTimeout), errors.Is(err, natsgo.ErrTimeout):
		return channel.ReasonTimeout, err
	case errors.Is(err, natsgo.ErrAuthorization), errors.Is(err, natsgo.ErrPermissionViolation):
		return ReasonAuth, err
	case errors.As(err, &apiErr):
		return ReasonRejected, err
	}
	if r := channel.NetReason(err); r != "" {
		return r, err
	}
	return ReasonPublish, err
}

func detail(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// Close releases the sink's share of the connection.
func (s *sink) Close(context.Context) error {
	s.release()
	return nil
}
