// Package amqp is the amqp channel: it publishes a subscription's events to
// an AMQP 0-9-1 broker (RabbitMQ) with amqp091-go.
//
// Each event is one persistent message to the subscription's exchange with
// a routing key templated from the event, published on a channel in
// confirm mode: it counts as delivered once the broker confirmed it (for
// a persistent message to a durable queue, once it is on disk). With
// mandatory (the default), a message no queue takes comes back and the
// delivery fails, to retry, instead of vanishing.
//
// The message id is the event id, the same on every attempt, so consumers
// can drop Herald's redeliveries. Properties: content type, type (the event
// type), timestamp, app id "herald"; headers: Herald-Event-Id,
// Herald-Topic, Herald-Seq, Herald-Event-Key, Herald-Attempt,
// Herald-Subscription-Id and the producer's headers.
//
// Sinks of the same broker and login share one connection, and reuse its
// channels one batch at a time. A connection that breaks (a broker
// restart) is made again by the next delivery, with backoff; deliveries
// meanwhile fail and retry.
package amqp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/channel"
)

// Name is the channel's name on the wire.
const Name = "amqp"

// Failure reasons of this channel, beside channel.NetReason's: safe to show
// anyone who may see the subscription; docs/channels.md lists them.
const (
	ReasonAuth         = "auth-failed"          // the broker refused the login or the vhost
	ReasonNoExchange   = "no-exchange"          // the exchange does not exist
	ReasonUnroutable   = "unroutable"           // mandatory: no queue is bound for the routing key
	ReasonNacked       = "nacked"               // the broker refused the message (a full queue, an internal error)
	ReasonRefused      = "refused"              // the broker closed the channel for another reason (its text is the detail)
	ReasonTooLarge     = "too-large"            // the message is over the broker's limit
	ReasonRoutingKey   = "routing-key-too-long" // the routing key of this event is over 255 bytes
	ReasonNotConnected = "not-connected"        // the connection is down; the next delivery after the backoff makes it again
	ReasonPublish      = "publish-failed"       // any other failure
)

// ChannelConfig configures the amqp channel: DialTimeout bounds
// connecting and the AMQP handshake; after a failed attempt, deliveries
// fail at once until ReconnectWait (doubled on each failure, up to 30s)
// has passed.
type ChannelConfig = channel.BrokerConfig

// Channel is the amqp channel. It is safe for concurrent use.
type Channel struct {
	channel.Configs[Config] // Validate, Public, Destination
	cfg                     ChannelConfig
	log                     *slog.Logger
	pool                    *channel.Pool[*conn]
	reconnects              prometheus.Counter
}

var _ channel.Channel = (*Channel)(nil)

// NewChannel returns the amqp channel.
func NewChannel(cfg ChannelConfig) *Channel {
	cfg = cfg.WithDefaults(Name)
	c := &Channel{cfg: cfg, log: cfg.Logger}
	// Configs: Validate checks a broker the guard allows, an exchange name
	// and a routing key template (errors name the member: "url",
	// "exchange", "routing_key", "user", "password"); Public leaves out
	// the password; the destination is the broker's URL
	// (amqp://host:5672/vhost), no login.
	c.Configs = channel.Configs[Config]{Name: Name,
		Check: func(p channel.ValidateParams) (Config, error) { return validate(p, cfg.AllowPrivate) },
		Hide:  func(c *Config) { c.Password = "" },
		Dest:  func(c Config) string { return c.URL }}
	c.pool = channel.NewPool(func(cn *conn) { cn.close() })
	c.reconnects = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "herald_amqp_connects_total", Help: "Connections made to AMQP brokers, the first and every one after a loss.",
	})
	cfg.Register(c.reconnects,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "herald_amqp_connections", Help: "Pooled AMQP connections that are up (one per distinct broker and login).",
		}, func() float64 { return c.pool.Count((*conn).up) }))
	return c
}

// Name is "amqp".
func (c *Channel) Name() string { return Name }

// Open returns a sink over the pooled connection of the config's broker
// and login; nothing connects until the first delivery.
func (c *Channel) Open(_ context.Context, sub *herald.Subscription) (channel.Sink, error) {
	cfg, err := parseConfig(sub.Config)
	if err != nil {
		return nil, err
	}
	key, err := channel.ParseTemplate(cfg.RoutingKey)
	if err != nil {
		return nil, fmt.Errorf("subscription %s: routing_key: %w", sub.ID, err)
	}
	cn, release, _ := c.pool.Acquire(cfg.poolKey(), func() (*conn, error) {
		return &conn{c: c, cfg: cfg, log: c.log.With("broker", cfg.URL)}, nil
	})
	return &sink{conn: cn, release: release, cfg: cfg, key: key, subID: sub.ID, limits: cfg.Limits(DefaultBatch, maxBatchBytes)}, nil
}

// conn is one pooled connection, made on demand and again after a loss.
type conn struct {
	c   *Channel
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	amqp    *amqp.Connection
	dialing chan struct{} // closed when the dial in progress ends; nil when none
	lastErr error         // of the last failed dial
	retryAt time.Time     // no dial before this, after a failure
	wait    time.Duration // the next pause after a failure
	free    []*pubChan    // channels of amqp in confirm mode, idle
	closed  bool
}

// pubChan is a channel in confirm mode with its return and close
// notifications. One batch uses it at a time.
type pubChan struct {
	conn    *amqp.Connection
	ch      *amqp.Channel
	returns chan amqp.Return
	closes  chan *amqp.Error
	cause   error // why the channel closed, once read from closes
}

// Batches: max_batch_events, by default DefaultBatch, up to MaxBatch; the
// return buffer of a channel holds MaxBatch, so the broker's returns never
// block the connection's reader.
const (
	DefaultBatch  = 500
	MaxBatch      = 2000
	maxBatchBytes = 4 << 20
)

func (cn *conn) up() bool {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	return cn.amqp != nil && !cn.amqp.IsClosed()
}

// connection returns the connection, dialing it when it is down and the
// backoff allows. One caller dials; the others wait for it or their
// deadline.
func (cn *conn) connection(ctx context.Context) (*amqp.Connection, error) {
	for {
		cn.mu.Lock()
		switch {
		case cn.closed:
			cn.mu.Unlock()
			return nil, errors.New("the sink is closed")
		case cn.amqp != nil && !cn.amqp.IsClosed():
			c := cn.amqp
			cn.mu.Unlock()
			return c, nil
		case cn.dialing != nil:
			wait := cn.dialing
			cn.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		case time.Now().Before(cn.retryAt):
			err := cn.lastErr
			cn.mu.Unlock()
			return nil, fmt.Errorf("%w (the next attempt to connect is after a pause)", err)
		}
		if cn.amqp != nil {
			cn.log.Warn("amqp connection lost; connecting again")
			cn.amqp, cn.free = nil, nil
		}
		done := make(chan struct{})
		cn.dialing = done
		cn.mu.Unlock()

		c, err := cn.dial(ctx)

		cn.mu.Lock()
		cn.dialing = nil
		close(done)
		if err != nil {
			cn.lastErr = err
			if cn.wait == 0 {
				cn.wait = cn.c.cfg.ReconnectWait
			}
			cn.retryAt = time.Now().Add(cn.wait)
			cn.wait = min(2*cn.wait, 30*time.Second)
			cn.mu.Unlock()
			return nil, err
		}
		if cn.closed { // closed while dialing
			cn.mu.Unlock()
			_ = c.CloseDeadline(time.Now().Add(time.Second))
			return nil, errors.New("the sink is closed")
		}
		cn.amqp, cn.lastErr, cn.wait, cn.retryAt = c, nil, 0, time.Time{}
		cn.mu.Unlock()
		cn.c.reconnects.Inc()
		cn.log.Info("amqp connected")
		return c, nil
	}
}

// dial connects and logs in, bounded by the dial timeout and ctx's
// deadline, through the SSRF guard.
func (cn *conn) dial(ctx context.Context) (*amqp.Connection, error) {
	deadline := time.Now().Add(cn.c.cfg.DialTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	dialer := &net.Dialer{Deadline: deadline, ControlContext: channel.DialControl(cn.c.cfg.AllowPrivate)}
	cfg := amqp.Config{
		Properties: amqp.Table{"product": "Herald", "connection_name": "herald"},
		Dial: func(network, addr string) (net.Conn, error) {
			c, err := dialer.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			// Until AMQP is up, a broker that does not answer must not
			// hold the delivery past its deadline; the library clears
			// this deadline once the handshake is done.
			if err := c.SetDeadline(deadline); err != nil {
				_ = c.Close()
				return nil, err
			}
			return c, nil
		},
	}
	if cn.cfg.User != "" {
		cfg.SASL = []amqp.Authentication{&amqp.PlainAuth{Username: cn.cfg.User, Password: cn.cfg.Password}}
	}
	return amqp.DialConfig(cn.cfg.URL, cfg)
}

// take returns an idle channel in confirm mode, opening one if none is.
func (cn *conn) take(ctx context.Context) (*pubChan, error) {
	c, err := cn.connection(ctx)
	if err != nil {
		return nil, err
	}
	cn.mu.Lock()
	for len(cn.free) > 0 {
		pc := cn.free[len(cn.free)-1]
		cn.free = cn.free[:len(cn.free)-1]
		if pc.conn == c && !pc.ch.IsClosed() {
			cn.mu.Unlock()
			return pc, nil
		}
	}
	cn.mu.Unlock()
	ch, err := c.Channel()
	if err != nil {
		return nil, err
	}
	if err := ch.Confirm(false); err != nil {
		_ = ch.Close()
		return nil, err
	}
	pc := &pubChan{conn: c, ch: ch, returns: make(chan amqp.Return, MaxBatch), closes: make(chan *amqp.Error, 1)}
	ch.NotifyReturn(pc.returns)
	ch.NotifyClose(pc.closes)
	return pc, nil
}

// put gives a channel back for the next batch, or drops a broken one.
func (cn *conn) put(pc *pubChan) {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	if cn.closed || pc.conn != cn.amqp || pc.ch.IsClosed() || len(cn.free) >= 64 {
		go func() { _ = pc.ch.Close() }() // Close waits for the broker: not under the lock
		return
	}
	cn.free = append(cn.free, pc)
}

func (cn *conn) close() {
	cn.mu.Lock()
	cn.closed = true
	c, dialing := cn.amqp, cn.dialing
	cn.amqp, cn.free = nil, nil
	cn.mu.Unlock()
	if dialing != nil {
		<-dialing // the dialer sees closed and closes what it made
	}
	if c != nil && !c.IsClosed() {
		_ = c.CloseDeadline(time.Now().Add(5 * time.Second))
	}
}

// sink publishes one subscription's events.
type sink struct {
	conn    *conn
	release func()
	cfg     Config
	key     channel.Template
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

// DeliverBatch publishes the events in order on one channel, then waits
// for the broker's confirmation of each. A message the broker returned
// (mandatory, no queue) is Failed though confirmed: the broker returns it
// before it confirms it, so the returns are all in hand by then.
func (s *sink) DeliverBatch(ctx context.Context, batch []channel.Delivery) []herald.DeliveryResult {
	res := channel.NewResults(batch)
	pc, err := s.conn.take(ctx)
	if err != nil {
		return res.Done(classify(err))
	}
	defer s.conn.put(pc)

	confirms := make([]*amqp.DeferredConfirmation, len(batch))
	for i, d := range batch {
		rk := routingKey(s.key, d.Event)
		if len(rk) > maxNameLen {
			res.Fail(i, ReasonRoutingKey, fmt.Sprintf("the routing key is %d bytes; AMQP allows 255", len(rk)))
			continue
		}
		dc, err := pc.ch.PublishWithDeferredConfirmWithContext(ctx, s.cfg.Exchange, rk, s.cfg.Mandatory, false, s.message(d))
		if err != nil {
			return res.Done(classify(closeCause(pc, err)))
		}
		confirms[i] = dc
	}
	for i, dc := range confirms {
		if dc == nil {
			continue
		}
		if !channel.Wait(ctx, dc.Done()) {
			// Confirmations still owed would land on the next batch's
			// wait: this channel is done.
			_ = pc.ch.Close()
			return res.Done(classify(ctx.Err()))
		}
		switch {
		case dc.Acked():
			res.Delivered(i)
		case pc.ch.IsClosed():
			r, dt := classify(closeCause(pc, amqp.ErrClosed))
			res.Fail(i, r, dt)
		default:
			res.Fail(i, ReasonNacked, "the broker refused the message (basic.nack)")
		}
	}
	for drained := false; !drained; {
		select {
		case ret, ok := <-pc.returns:
			if !ok { // closed with the channel
				drained = true
				break
			}
			for i, d := range batch {
				if d.Event.ID == ret.MessageId && res.Outcome(i) == herald.Delivered {
					res.Fail(i, ReasonUnroutable, fmt.Sprintf("%d %s: no queue is bound to exchange %q for routing key %q", ret.ReplyCode, ret.ReplyText, ret.Exchange, ret.RoutingKey))
				}
			}
		default:
			drained = true
		}
	}
	return res.Done(ReasonPublish, "no answer from the broker")
}

// message builds the AMQP message of one delivery.
func (s *sink) message(d channel.Delivery) amqp.Publishing {
	ev := d.Event
	h := amqp.Table{}
	for k, v := range ev.Headers {
		if !reservedHeader(k) {
			h[k] = v
		}
	}
	h["Herald-Event-Id"] = ev.ID
	h["Herald-Topic"] = ev.Topic
	h["Herald-Seq"] = strconv.FormatInt(ev.Seq, 10)
	if ev.Key != "" {
		h["Herald-Event-Key"] = ev.Key
	}
	h["Herald-Attempt"] = strconv.Itoa(d.Attempt)
	h["Herald-Subscription-Id"] = s.subID
	ct := ev.ContentType
	if ct == "" {
		ct = "application/octet-stream"
	}
	return amqp.Publishing{
		Headers: h, ContentType: ct, DeliveryMode: amqp.Persistent, MessageId: ev.ID,
		Timestamp: ev.Time, Type: ev.Type, AppId: "herald", Body: ev.Payload,
	}
}

// reservedHeader reports whether a producer's header name is Herald's to
// set.
func reservedHeader(name string) bool {
	return len(name) >= 7 && strings.EqualFold(name[:7], "herald-")
}

// closeCause returns why the channel closed when it did (the broker's
// channel.close names a missing exchange, say), else err.
func closeCause(pc *pubChan, err error) error {
	if pc.cause == nil {
		select {
		case e, ok := <-pc.closes:
			if ok && e != nil {
				pc.cause = e
			}
		default:
		}
	}
	if pc.cause != nil {
		return pc.cause
	}
	return err
}

// classify returns the reason and the detail of a failure.
func classify(err error) (string, string) {
	var ae *amqp.Error
	if errors.As(err, &ae) {
		switch ae.Code {
		case amqp.NotFound:
			return ReasonNoExchange, ae.Error()
		case amqp.AccessRefused, amqp.NotAllowed:
			return ReasonAuth, ae.Error()
		case amqp.ContentTooLarge, amqp.FrameError:
			return ReasonTooLarge, ae.Error()
		}
		if r := channel.NetReason(err); r != "" {
			return r, ae.Error()
		}
		if ae.Code == amqp.ChannelError || errors.Is(err, amqp.ErrClosed) {
			return ReasonNotConnected, ae.Error()
		}
		return ReasonRefused, ae.Error()
	}
	if r := channel.NetReason(err); r != "" {
		return r, err.Error()
	}
	return ReasonPublish, err.Error()
}

// Close releases the sink's share of the connection.
func (s *sink) Close(context.Context) error {
	s.release()
	return nil
}
