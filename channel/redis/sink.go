package redis

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"mime"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	goredis "github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/channel"
)

// ReasonNoSubscribers is the reason of a Pub/Sub message no subscriber
// received, with require_subscribers set. A reply error from Redis is
// "redis-" and its lower-cased prefix ("redis-wrongtype", "redis-noauth",
// "redis-oom"); a failure to reach it is one of channel's Reason* words.
const ReasonNoSubscribers = "no-subscribers"

// Stream entry fields, in the order XADD writes them.
const (
	FieldID             = "id"
	FieldTopic          = "topic"
	FieldSeq            = "seq"
	FieldType           = "type"
	FieldKey            = "key"
	FieldTime           = "time"
	FieldContentType    = "content_type"
	FieldHeaders        = "headers" // the producer's headers, a JSON object
	FieldAttempt        = "attempt"
	FieldSubscriptionID = "subscription_id"
	FieldPayload        = "payload"
)

// openClient makes the go-redis client (a connection pool) of a config,
// shared (channel.Pool) by every sink with the same poolKey; it connects
// on first use.
func (c *Channel) openClient(cfg Config) (*goredis.Client, error) {
	tc, err := cfg.TLSOptions.Config()
	if err != nil {
		return nil, err
	}
	cl := goredis.NewClient(&goredis.Options{
		Addr:     cfg.Address,
		Dialer:   channel.Dialer(c.cfg.AllowPrivate, tc),
		Username: cfg.Username,
		Password: cfg.Password,
		DB:       cfg.DB,
		// The engine retries, with backoff and an attempt log; a retry
		// inside the client would only hide failures.
		MaxRetries:            -1,
		ContextTimeoutEnabled: true, // the subscription's timeout bounds every call
		DialTimeout:           10 * time.Second,
		DisableIdentity:       true,
		MaintNotificationsConfig: &maintnotifications.Config{
			Mode: maintnotifications.ModeDisabled,
		},
	})
	c.metrics.clients.Inc()
	c.log.Info("redis client opened", "destination", "redis://"+cfg.Address)
	return cl, nil
}

// Open takes a share of the client for the config's server. It does not
// connect: a server that is down makes deliveries fail, not Open.
func (c *Channel) Open(_ context.Context, sub *herald.Subscription) (channel.Sink, error) {
	cfg, err := ParseConfig(sub.Config)
	if err != nil {
		return nil, err
	}
	cl, release, err := c.pool.Acquire(poolKey(cfg), func() (*goredis.Client, error) { return c.openClient(cfg) })
	if err != nil {
		return nil, err
	}
	return &sink{c: c, cl: cl, release: release, cfg: cfg, subID: sub.ID, timeout: sub.Timeout,
		limits: cfg.Limits(DefaultBatch, maxBatchBytes)}, nil
}

// sink delivers one subscription's events.
type sink struct {
	c       *Channel
	cl      *goredis.Client
	release func() // the share of cl
	cfg     Config
	subID   string
	timeout time.Duration
	limits  channel.BatchLimits
}

var _ channel.Batcher = (*sink)(nil)

func (s *sink) BatchLimits() channel.BatchLimits { return s.limits }

func (s *sink) Deliver(ctx context.Context, ev *herald.Event, attempt int) herald.DeliveryResult {
	return channel.DeliverOne(ctx, s, ev, attempt)
}

func (s *sink) Close(context.Context) error {
	s.release()
	return nil
}

// DeliverBatch sends every event in one pipelined round trip, in order,
// and reports each command's result: Delivered once Redis answered the
// XADD (or PUBLISH) with success. An event that follows a failed event of
// its key is reported Failed too, so a retry cannot put it first.
func (s *sink) DeliverBatch(ctx context.Context, batch []channel.Delivery) []herald.DeliveryResult {
	if s.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.timeout)
		defer cancel()
	}
	start := time.Now()
	pipe := s.cl.Pipeline()
	xadds := make([]*goredis.StringCmd, len(batch))
	pubs := make([]*goredis.IntCmd, len(batch))
	for i, d := range batch {
		name := nameFor(s.cfg.Stream, d.Event.Topic)
		if s.cfg.Mode == ModePubSub {
			pubs[i] = pipe.Publish(ctx, name, s.envelope(d))
			continue
		}
		xadds[i] = pipe.XAdd(ctx, &goredis.XAddArgs{Stream: name, MaxLen: s.cfg.MaxLen, Approx: s.cfg.MaxLen > 0, ID: "*", Values: s.fields(d)})
	}
	_, _ = pipe.Exec(ctx) // each command carries its own error
	took := time.Since(start)
	out := make([]herald.DeliveryResult, len(batch))
	for i := range batch {
		r := &out[i]
		r.Latency = took
		var err error
		if xadds[i] != nil {
			err = xadds[i].Err()
		} else if err = pubs[i].Err(); err == nil && s.cfg.RequireSubscribers && pubs[i].Val() == 0 {
			r.Outcome, r.Err, r.Detail = herald.Failed, ReasonNoSubscribers, "no client was subscribed to the channel"
			continue
		}
		if err != nil {
			r.Outcome = herald.Failed
			r.Err, r.Detail = reason(err)
			continue
		}
		r.Outcome = herald.Delivered
	}
	channel.KeepKeyOrder(batch, out)
	ok := 0
	for _, r := range out {
		if r.Outcome == herald.Delivered {
			ok++
		}
	}
	failed := len(out) - ok
	s.c.metrics.commands.WithLabelValues("ok").Add(float64(ok))
	s.c.metrics.commands.WithLabelValues("failed").Add(float64(failed))
	return out
}

// fields are a stream entry's: the metadata, then the payload byte for
// byte.
func (s *sink) fields(d channel.Delivery) []any {
	ev := d.Event
	f := make([]any, 0, 22)
	f = append(f, FieldID, ev.ID, FieldTopic, ev.Topic, FieldSeq, strconv.FormatInt(ev.Seq, 10))
	if ev.Type != "" {
		f = append(f, FieldType, ev.Type)
	}
	if ev.Key != "" {
		f = append(f, FieldKey, ev.Key)
	}
	f = append(f, FieldTime, ev.Time.UTC().Format(time.RFC3339Nano), FieldContentType, contentType(ev))
	if len(ev.Headers) > 0 {
		h, _ := json.Marshal(ev.Headers)
		f = append(f, FieldHeaders, string(h))
	}
	f = append(f, FieldAttempt, strconv.Itoa(d.Attempt), FieldSubscriptionID, s.subID, FieldPayload, ev.Payload)
	return f
}

func contentType(ev *herald.Event) string {
	if ev.ContentType == "" {
		return "application/octet-stream"
	}
	return ev.ContentType
}

// envelope is a Pub/Sub message: the event as a CloudEvent in JSON
// (structured mode), with the Herald topic, seq and attempt as extension
// attributes. A JSON payload is "data" verbatim, a UTF-8 text payload a
// JSON string, anything else "data_base64"; decoding gives the payload
// back byte for byte.
func (s *sink) envelope(d channel.Delivery) []byte {
	ev := d.Event
	attrs := map[string]any{
		"specversion": "1.0", "id": ev.ID, "type": cmpOr(ev.Type, "herald.event"),
		"source": cmpOr(header(ev.Headers, "ce-source"), "/herald/topics/"+ev.Topic),
		"time":   ev.Time.UTC().Format(time.RFC3339Nano), "datacontenttype": contentType(ev),
		"heraldtopic": ev.Topic, "heraldseq": ev.Seq, "heraldattempt": d.Attempt, "heraldsubscription": s.subID,
	}
	if ev.Key != "" {
		attrs["subject"] = ev.Key
	}
	for k, v := range ev.Headers {
		if attr, ok := strings.CutPrefix(strings.ToLower(k), "ce-"); ok {
			if _, set := attrs[attr]; !set && attr != "data" && attr != "data_base64" {
				attrs[attr] = v
			}
		}
	}
	head, _ := json.Marshal(attrs) // strings and numbers: cannot fail
	buf := make([]byte, 0, len(head)+len(ev.Payload)+32)
	buf = append(buf, head[:len(head)-1]...)
	switch {
	case isJSON(contentType(ev)) && json.Valid(ev.Payload):
		buf = append(buf, `,"data":`...)
		buf = append(buf, ev.Payload...)
	case strings.HasPrefix(contentType(ev), "text/") && utf8.Valid(ev.Payload):
		text, _ := json.Marshal(string(ev.Payload))
		buf = append(buf, `,"data":`...)
		buf = append(buf, text...)
	default:
		buf = append(buf, `,"data_base64":"`...)
		buf = base64.StdEncoding.AppendEncode(buf, ev.Payload)
		buf = append(buf, '"')
	}
	return append(buf, '}')
}

func isJSON(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	return err == nil && (mt == "application/json" || strings.HasSuffix(mt, "+json"))
}

func header(h map[string]string, name string) string {
	for k, v := range h {
		if strings.EqualFold(k, name) {
			return v
		}
	}
	return ""
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// reason classifies a failed command: Redis's error prefix, or why the
// server could not be reached.
func reason(err error) (string, string) {
	var re goredis.Error
	if errors.As(err, &re) && !errors.Is(err, context.DeadlineExceeded) {
		word, _, _ := strings.Cut(re.Error(), " ")
		return "redis-" + strings.ToLower(strings.Trim(word, "-:")), re.Error()
	}
	if r := channel.NetReason(err); r != "" {
		return r, err.Error()
	}
	return channel.ReasonNetwork, err.Error()
}

type metrics struct {
	clients  prometheus.Gauge
	commands *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		clients: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "herald_redis_clients",
			Help: "Redis clients (connection pools) open: one per distinct server, database and credentials.",
		}),
		commands: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "herald_redis_commands_total",
			Help: "XADD and PUBLISH commands sent for deliveries, by result.",
		}, []string{"result"}),
	}
	if reg != nil {
		reg.MustRegister(m.clients, m.commands)
	}
	return m
}
