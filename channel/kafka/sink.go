package kafka

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/channel"
)

// Failure reasons: a kafka delivery reports "kafka-<error>" for an error
// the broker answered ("kafka-not-enough-replicas",
// "kafka-message-too-large"), and otherwise one of channel's Reason*
// words. docs/channels.md lists them.

// Record headers a delivery carries. Producer headers ride along under
// their own names; names starting "herald-" or "ce_" are Herald's.
const (
	HeaderEventID        = "herald-event-id"
	HeaderTopic          = "herald-topic"
	HeaderSeq            = "herald-seq"
	HeaderEventType      = "herald-event-type"
	HeaderEventKey       = "herald-event-key"
	HeaderTime           = "herald-time"
	HeaderAttempt        = "herald-attempt"
	HeaderSubscriptionID = "herald-subscription-id"
	HeaderContentType    = "content-type"
)

// sink delivers one subscription's events through a pooled producer.
type sink struct {
	c       *Channel
	p       *producer
	release func() // the share of p
	subID   string
	// subIDBytes is subID as a header value, shared by every record.
	subIDBytes []byte
	topic      string // the template
	timeout    time.Duration
	limits     channel.BatchLimits
}

var _ channel.Batcher = (*sink)(nil)

// BatchLimits are the config's max_batch_events and linger_ms.
func (s *sink) BatchLimits() channel.BatchLimits { return s.limits }

// Deliver produces one event.
func (s *sink) Deliver(ctx context.Context, ev *herald.Event, attempt int) herald.DeliveryResult {
	return channel.DeliverOne(ctx, s, ev, attempt)
}

// Close gives back the sink's share of the producer.
func (s *sink) Close(context.Context) error {
	s.release()
	return nil
}

// DeliverBatch produces every event and waits until each is acked or
// failed, or the subscription's timeout passes; records still in the
// producer then are reported Failed (they may still reach Kafka: a retry
// is a duplicate, never a loss). An event that follows a failed event of
// its key is reported Failed too, so a retry cannot put it first.
func (s *sink) DeliverBatch(ctx context.Context, batch []channel.Delivery) []herald.DeliveryResult {
	if s.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.timeout)
		defer cancel()
	}
	start := time.Now()
	var (
		mu      sync.Mutex
		errs    = make([]error, len(batch))
		took    = make([]time.Duration, len(batch))
		settled = make([]bool, len(batch))
		left    = len(batch)
		done    = make(chan struct{})
	)
	recs := s.records(batch)
	for i := range recs {
		s.p.cl.Produce(ctx, &recs[i], func(_ *kgo.Record, err error) {
			mu.Lock()
			defer mu.Unlock()
			errs[i], took[i], settled[i] = err, time.Since(start), true
			if left--; left == 0 {
				close(done)
			}
		})
	}
	select {
	case <-done:
	case <-ctx.Done():
	}
	out := make([]herald.DeliveryResult, len(batch))
	mu.Lock()
	defer mu.Unlock()
	for i := range batch {
		r := &out[i]
		switch {
		case !settled[i]:
			r.Outcome, r.Latency = herald.Failed, time.Since(start)
			r.Err, r.Detail = s.reason(ctx.Err())
		case errs[i] != nil:
			r.Outcome, r.Latency = herald.Failed, took[i]
			r.Err, r.Detail = s.reason(errs[i])
		default:
			r.Outcome, r.Latency = herald.Delivered, took[i]
		}
	}
	channel.KeepKeyOrder(batch, out)
	acked := 0
	for _, r := range out {
		if r.Outcome == herald.Delivered {
			acked++
		}
	}
	failed := len(out) - acked
	s.c.metrics.acked.Add(float64(acked))
	s.c.metrics.failed.Add(float64(failed))
	return out
}

// Header values that are the same in every record, shared by them all
// (franz-go only reads a record's headers).
var (
	valSpecVersion = []byte("1.0")
	valEventType   = []byte("herald.event")
	valOctetStream = []byte("application/octet-stream")
)

// records are the Kafka records of a batch, one per delivery: the event
// key as record key, the payload as value, and the metadata in headers,
// CloudEvents binary mode included. The records, their headers and the
// header values of the whole batch share three allocations (a per-record,
// per-header allocation was most of the channel's cost per event); a
// value both header sets carry (id, time, key) is one slice.
func (s *sink) records(batch []channel.Delivery) []kgo.Record {
	recs := make([]kgo.Record, len(batch))
	nh, size := 0, 0
	for _, d := range batch {
		ev := d.Event
		nh += 16 + len(ev.Headers)
		size += len(ev.ID) + len(ev.Topic) + len(ev.Key) + len(ev.Type) + len(ev.ContentType) + 96
	}
	headers := make([]kgo.RecordHeader, 0, nh)
	a := arena{b: make([]byte, 0, size)}
	for i, d := range batch {
		ev := d.Event
		rec := &recs[i]
		rec.Topic, rec.Value, rec.Timestamp = topicFor(s.topic, ev.Topic), ev.Payload, ev.Time
		first := len(headers)
		add := func(k string, v []byte) { headers = append(headers, kgo.RecordHeader{Key: k, Value: v}) }
		ct := valOctetStream
		if ev.ContentType != "" {
			ct = a.str(ev.ContentType)
		}
		id := a.str(ev.ID)
		topic := a.str(ev.Topic)
		at := a.time(ev.Time)
		var key []byte
		if ev.Key != "" {
			key = a.str(ev.Key)
			rec.Key = key
		}
		add(HeaderContentType, ct)
		add(HeaderEventID, id)
		add(HeaderTopic, topic)
		add(HeaderSeq, a.int(int64(ev.Seq)))
		etype := valEventType
		if ev.Type != "" {
			etype = a.str(ev.Type)
			add(HeaderEventType, etype)
		}
		if key != nil {
			add(HeaderEventKey, key)
		}
		add(HeaderTime, at)
		add(HeaderAttempt, a.int(int64(d.Attempt)))
		add(HeaderSubscriptionID, s.subIDBytes)
		// CloudEvents Kafka binding, binary mode: ce_<attribute> headers.
		// An event published as a CloudEvent keeps its source and other
		// attributes; any other event gets a source naming its Herald topic.
		add("ce_specversion", valSpecVersion)
		add("ce_id", id)
		if src := header(ev.Headers, "ce-source"); src != "" {
			add("ce_source", a.str(src))
		} else {
			add("ce_source", a.str2("/herald/topics/", ev.Topic))
		}
		add("ce_type", etype)
		add("ce_time", at)
		if key != nil {
			add("ce_subject", key)
		}
		for k, v := range ev.Headers {
			lk := strings.ToLower(k)
			switch {
			case strings.HasPrefix(lk, "ce-"):
				attr := lk[3:]
				switch attr {
				case "specversion", "id", "source", "type", "time", "subject", "datacontenttype":
					continue // written above
				}
				add("ce_"+attr, a.str(v))
			case strings.HasPrefix(lk, "herald-"), strings.HasPrefix(lk, "ce_"), lk == HeaderContentType:
				// Herald's own names: a producer header never overrides them.
			default:
				add(k, a.str(v))
			}
		}
		rec.Headers = headers[first:len(headers):len(headers)]
	}
	return recs
}

// arena hands out header values cut from one buffer. A value is never
// written again once cut: when the buffer grows, the values cut before
// keep the old one.
type arena struct{ b []byte }

func (a *arena) cut(from int) []byte { return a.b[from:len(a.b):len(a.b)] }

func (a *arena) str(s string) []byte {
	from := len(a.b)
	a.b = append(a.b, s...)
	return a.cut(from)
}

func (a *arena) str2(s, t string) []byte {
	from := len(a.b)
	a.b = append(append(a.b, s...), t...)
	return a.cut(from)
}

func (a *arena) int(n int64) []byte {
	from := len(a.b)
	a.b = strconv.AppendInt(a.b, n, 10)
	return a.cut(from)
}

func (a *arena) time(t time.Time) []byte {
	from := len(a.b)
	a.b = t.UTC().AppendFormat(a.b, time.RFC3339Nano)
	return a.cut(from)
}

func header(h map[string]string, name string) string {
	for k, v := range h {
		if strings.EqualFold(k, name) {
			return v
		}
	}
	return ""
}

// reason classifies a failed record: the broker's error code, or why the
// brokers could not be reached. The detail (addresses, the raw error) is
// for admins and the log.
func (s *sink) reason(err error) (string, string) {
	var ke *kerr.Error
	switch {
	case errors.As(err, &ke):
		return kafkaReason(ke), ke.Description
	case errors.Is(err, context.Canceled):
		return channel.ReasonCanceled, err.Error()
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, kgo.ErrRecordTimeout):
		if f := s.p.lastDial.Load(); f != nil {
			reason := netReason(f.err)
			if errors.As(f.err, &ke) {
				reason = kafkaReason(ke) // the broker refused the login
			}
			return reason, "no broker could be reached before the timeout: " + f.err.Error()
		}
		return channel.ReasonTimeout, "the brokers did not acknowledge the records within the subscription's timeout"
	}
	return netReason(err), err.Error()
}

// kafkaReason is the reason of an error the broker answered:
// "kafka-" and its name, "kafka-sasl-authentication-failed".
func kafkaReason(ke *kerr.Error) string {
	return "kafka-" + strings.ReplaceAll(strings.ToLower(ke.Message), "_", "-")
}

// netReason is channel.NetReason, network-error when it has none.
func netReason(err error) string {
	if r := channel.NetReason(err); r != "" {
		return r
	}
	return channel.ReasonNetwork
}
