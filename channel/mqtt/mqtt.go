// Package mqtt is the mqtt channel: it publishes a subscription's events to
// an MQTT broker (MQTT 3.1.1) with Eclipse Paho.
//
// Each event is one message at QoS 1 (or 2) to a topic templated from the
// event, with the retain flag when the subscription asks for it. It counts
// as delivered once the broker acknowledged it (PUBACK; PUBCOMP at QoS 2).
// MQTT 3.1.1 messages carry no headers: in the "raw" format the message is
// the payload byte for byte; in the "cloudevents" format it is a
// CloudEvents JSON envelope (structured mode) carrying the event id (for
// consumers to drop Herald's redeliveries), type, key (subject), topic and
// time around the payload.
//
// Sinks of the same broker and login share one client, which connects in
// the background and reconnects on its own with backoff; while it is down,
// deliveries fail at once and retry.
package mqtt

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/channel"
)

// Name is the channel's name on the wire.
const Name = "mqtt"

// Failure reasons of this channel, beside channel.NetReason's: safe to show
// anyone who may see the subscription; docs/channels.md lists them.
const (
	ReasonNotConnected = "not-connected"  // the client is down; it reconnects on its own
	ReasonAuth         = "auth-failed"    // the broker refused the login
	ReasonPublish      = "publish-failed" // any other failure
)

// ChannelConfig configures the mqtt channel: DialTimeout bounds
// connecting and the MQTT handshake; ReconnectWait is the first pause
// between connection attempts, growing to 30s while they fail.
type ChannelConfig = channel.BrokerConfig

// Channel is the mqtt channel. It is safe for concurrent use.
type Channel struct {
	channel.Configs[Config] // Validate, Public, Destination
	cfg                     ChannelConfig
	log                     *slog.Logger
	pool                    *channel.Pool[*client]
	reconnects              prometheus.Counter
}

var _ channel.Channel = (*Channel)(nil)

// NewChannel returns the mqtt channel.
func NewChannel(cfg ChannelConfig) *Channel {
	cfg = cfg.WithDefaults(Name)
	c := &Channel{cfg: cfg, log: cfg.Logger}
	// Configs: Validate checks a broker the guard allows, a topic template
	// that makes valid topic names, QoS 1 or 2 and a format (errors name
	// the member: "url", "topic", "qos", "format", "user", "password");
	// Public leaves out the password; the destination is the broker's URL
	// (tcp://host:1883), no login.
	c.Configs = channel.Configs[Config]{Name: Name,
		Check: func(p channel.ValidateParams) (Config, error) { return validate(p, cfg.AllowPrivate) },
		Hide:  func(c *Config) { c.Password = "" },
		Dest:  func(c Config) string { return c.URL }}
	c.pool = channel.NewPool(func(cl *client) { cl.c.Disconnect(250) })
	c.reconnects = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "herald_mqtt_connects_total", Help: "Connections made to MQTT brokers, the first and every one after a loss.",
	})
	cfg.Register(c.reconnects,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "herald_mqtt_connections", Help: "Pooled MQTT clients that are connected (one per distinct broker and login).",
		}, func() float64 { return c.pool.Count(func(cl *client) bool { return cl.c.IsConnectionOpen() }) }))
	return c
}

// Name is "mqtt".
func (c *Channel) Name() string { return Name }

// Open returns a sink over the pooled client of the config's broker and
// login, which connects in the background when it is the first.
func (c *Channel) Open(_ context.Context, sub *herald.Subscription) (channel.Sink, error) {
	cfg, err := parseConfig(sub.Config)
	if err != nil {
		return nil, err
	}
	topic, err := channel.ParseTemplate(cfg.Topic)
	if err != nil {
		return nil, fmt.Errorf("subscription %s: topic: %w", sub.ID, err)
	}
	cl, release, err := c.pool.Acquire(cfg.poolKey(), func() (*client, error) { return c.connect(cfg), nil })
	if err != nil {
		return nil, err
	}
	return &sink{client: cl, release: release, cfg: cfg, topic: topic, subID: sub.ID, limits: cfg.Limits(DefaultBatch, maxBatchBytes)}, nil
}

// client is one pooled Paho client. first is closed when its first
// connection attempt is over, made or failed.
type client struct {
	c         paho.Client
	first     chan struct{}
	firstOnce sync.Once
	mu        sync.Mutex
	lastErr   error // why the last attempt failed; nil once connected
}

func (cl *client) attempted(err error) {
	cl.mu.Lock()
	cl.lastErr = err
	cl.mu.Unlock()
	cl.firstOnce.Do(func() { close(cl.first) })
}

// downReason is the reason while the client is not connected: why the
// last attempt failed, when that is known.
func (cl *client) downReason() (string, string) {
	cl.mu.Lock()
	err := cl.lastErr
	cl.mu.Unlock()
	if err == nil {
		return ReasonNotConnected, "the client is connecting to the broker"
	}
	if r, d := classify(err); r != ReasonPublish {
		return r, d
	}
	return ReasonNotConnected, err.Error()
}

// connect starts a client that connects in the background and again after
// every loss.
func (c *Channel) connect(cfg Config) *client {
	log := c.log.With("broker", cfg.URL)
	cl := &client{first: make(chan struct{})}
	var id [8]byte
	_, _ = rand.Read(id[:])
	dialer := &net.Dialer{Timeout: c.cfg.DialTimeout, ControlContext: channel.DialControl(c.cfg.AllowPrivate)}
	opts := paho.NewClientOptions().
		AddBroker(cfg.URL).
		// A fresh id per client: two clients (two Herald nodes) with one
		// id would throw each other off the broker.
		SetClientID("herald-" + hex.EncodeToString(id[:])).
		SetCleanSession(true).
		SetConnectTimeout(c.cfg.DialTimeout).
		SetWriteTimeout(c.cfg.DialTimeout).
		SetKeepAlive(30 * time.Second).
		SetPingTimeout(10 * time.Second).
		SetConnectRetry(true).
		SetConnectRetryInterval(c.cfg.ReconnectWait).
		SetAutoReconnect(true).
		SetMaxReconnectInterval(30 * time.Second).
		SetCustomOpenConnectionFn(func(u *url.URL, _ paho.ClientOptions) (net.Conn, error) {
			conn, err := dialer.Dial("tcp", u.Host)
			if err != nil || u.Scheme != "ssl" {
				return conn, err
			}
			tc := tls.Client(conn, &tls.Config{ServerName: u.Hostname(), MinVersion: tls.VersionTLS12})
			_ = tc.SetDeadline(time.Now().Add(c.cfg.DialTimeout))
			if err := tc.Handshake(); err != nil {
				_ = conn.Close()
				return nil, err
			}
			_ = tc.SetDeadline(time.Time{})
			return tc, nil
		}).
		SetOnConnectHandler(func(paho.Client) {
			c.reconnects.Inc()
			log.Info("mqtt connected")
		}).
		SetConnectionNotificationHandler(func(_ paho.Client, n paho.ConnectionNotification) {
			switch n := n.(type) {
			case paho.ConnectionNotificationConnected:
				cl.attempted(nil)
			case paho.ConnectionNotificationBrokerFailed:
				cl.attempted(n.Reason)
			case paho.ConnectionNotificationFailed:
				cl.attempted(n.Reason)
			}
		}).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			log.Warn("mqtt connection lost", "err", err)
		})
	if cfg.User != "" {
		opts.SetUsername(cfg.User).SetPassword(cfg.Password)
	}
	cl.c = paho.NewClient(opts)
	cl.c.Connect() // with ConnectRetry it returns at once and keeps trying
	return cl
}

// Batches: max_batch_events, by default DefaultBatch, up to MaxBatch.
const (
	DefaultBatch  = 100
	MaxBatch      = 2000
	maxBatchBytes = 4 << 20
)

// sink publishes one subscription's events.
type sink struct {
	client  *client
	release func()
	cfg     Config
	topic   channel.Template
	subID   string
	limits  channel.BatchLimits
}

var _ channel.Batcher = (*sink)(nil)

// BatchLimits: the config's max_batch_events (100 by default) and
// linger_ms, up to 4 MiB a call; each message is acknowledged on its own.
func (s *sink) BatchLimits() channel.BatchLimits { return s.limits }

// Deliver publishes one event.
func (s *sink) Deliver(ctx context.Context, ev *herald.Event, attempt int) herald.DeliveryResult {
	return channel.DeliverOne(ctx, s, ev, attempt)
}

// DeliverBatch publishes the events in order, then waits for the broker's
// acknowledgement of each.
func (s *sink) DeliverBatch(ctx context.Context, batch []channel.Delivery) []herald.DeliveryResult {
	res := channel.NewResults(batch)
	tokens := make([]paho.Token, len(batch))
	channel.Wait(ctx, s.client.first) // a sink opened a moment ago waits for the first attempt
	for i, d := range batch {
		// A client that is reconnecting would keep a QoS 1 message to
		// send later, past the deadline: fail it now, it is retried from
		// the log.
		if !s.client.c.IsConnectionOpen() {
			r, dt := s.client.downReason()
			res.FailRest(i, r, dt)
			break
		}
		tokens[i] = s.client.c.Publish(topicFor(s.topic, d.Event), byte(s.cfg.QoS), s.cfg.Retain, s.message(d))
	}
	for i, tok := range tokens {
		if tok == nil {
			continue
		}
		if !channel.Wait(ctx, tok.Done()) {
			return res.Done(classify(ctx.Err()))
		}
		if err := tok.Error(); err != nil {
			r, dt := classify(err)
			res.Fail(i, r, dt)
		} else {
			res.Delivered(i)
		}
	}
	return res.Done(ReasonPublish, "no answer from the broker")
}

// message returns the payload of one delivery in the config's format.
func (s *sink) message(d channel.Delivery) []byte {
	if s.cfg.Format != FormatCloudEvents {
		return d.Event.Payload
	}
	return cloudEvent(d.Event, s.subID, d.Attempt)
}

// cloudEvent writes the event as a CloudEvents 1.0 JSON envelope. A JSON
// payload goes in "data" byte for byte (written by hand: encoding/json
// would compact and re-escape it); any other in "data_base64". Herald's
// metadata are extension attributes: heraldtopic, heraldseq,
// heraldattempt, heraldsubscription.
func cloudEvent(ev *herald.Event, subID string, attempt int) []byte {
	var b bytes.Buffer
	str := func(name, v string) {
		vb, _ := json.Marshal(v) // a string cannot fail
		b.WriteString(`,"` + name + `":`)
		b.Write(vb)
	}
	b.WriteString(`{"specversion":"1.0"`)
	str("id", ev.ID)
	source := "/herald/topics/" + ev.Topic
	typ := cmpOr(ev.Type, "herald.event")
	for k, v := range ev.Headers {
		if strings.EqualFold(k, "ce-source") {
			source = v
		}
	}
	str("source", source)
	str("type", typ)
	str("time", ev.Time.UTC().Format(time.RFC3339Nano))
	if ev.Key != "" {
		str("subject", ev.Key)
	}
	ct := cmpOr(ev.ContentType, "application/octet-stream")
	str("datacontenttype", ct)
	str("heraldtopic", ev.Topic)
	str("heraldseq", strconv.FormatInt(ev.Seq, 10))
	str("heraldattempt", strconv.Itoa(attempt))
	str("heraldsubscription", subID)
	if isJSON(ct) && json.Valid(ev.Payload) {
		b.WriteString(`,"data":`)
		b.Write(bytes.TrimSpace(ev.Payload))
	} else {
		str("data_base64", base64.StdEncoding.EncodeToString(ev.Payload))
	}
	b.WriteByte('}')
	return b.Bytes()
}

// isJSON reports whether a media type is JSON ("application/json",
// "application/cloudevents+json", "text/json"...).
func isJSON(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	return err == nil && (mt == "application/json" || mt == "text/json" || strings.HasSuffix(mt, "+json"))
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// classify returns the reason and the detail of a publish error.
func classify(err error) (string, string) {
	switch {
	case errors.Is(err, paho.ErrNotConnected):
		return ReasonNotConnected, err.Error()
	case strings.Contains(err.Error(), "not Authorized"), strings.Contains(err.Error(), "bad user name or password"):
		return ReasonAuth, err.Error()
	}
	if r := channel.NetReason(err); r != "" {
		return r, err.Error()
	}
	return ReasonPublish, err.Error()
}

// Close releases the sink's share of the client.
func (s *sink) Close(context.Context) error {
	s.release()
	return nil
}
