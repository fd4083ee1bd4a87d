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
	topic   string // the template
	timeout time.Duration
	limits  channel.BatchLimits
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
	for i, d := range batch {
		rec := s.record(d)
		s.p.cl.Produce(ctx, rec, func(_ *kgo.Record, err error) {
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
	s.c.metrics.records.WithLabelValues("acked").Add(float64(acked))
	s.c.metrics.records.WithLabelValues("failed").Add(float64(failed))
	return out
}

// record is the Kafka record of one delivery: the event key as record
// key, the payload as value, and the metadata in headers, CloudEvents
// binary mode included.
func (s *sink) record(d channel.Delivery) *kgo.Record {
	ev := d.Event
	rec := &kgo.Record{Topic: topicFor(s.topic, ev.Topic), Value: ev.Payload, Timestamp: ev.Time}
	if ev.Key != "" {
		rec.Key = []byte(ev.Key)
	}
	h := make([]kgo.RecordHeader, 0, 16+len(ev.Headers))
	add := func(k, v string) { h = append(h, kgo.RecordHeader{Key: k, Value: []byte(v)}) }
	ct := ev.ContentType
	if ct == "" {
		ct = "application/octet-stream"
	}
	add(HeaderContentType, ct)
	add(HeaderEventID, ev.ID)
	add(HeaderTopic, ev.Topic)
	add(HeaderSeq, strconv.FormatInt(ev.Seq, 10))
	if ev.Type != "" {
		add(HeaderEventType, ev.Type)
	}
	if ev.Key != "" {
		add(HeaderEventKey, ev.Key)
	}
	add(HeaderTime, ev.Time.UTC().Format(time.RFC3339Nano))
	add(HeaderAttempt, strconv.Itoa(d.Attempt))
	add(HeaderSubscriptionID, s.subID)
	// CloudEvents Kafka binding, binary mode: ce_<attribute> headers.
	// An event published as a CloudEvent keeps its source and other
	// attributes; any other event gets a source naming its Herald topic.
	add("ce_specversion", "1.0")
	add("ce_id", ev.ID)
	add("ce_source", cmpOr(header(ev.Headers, "ce-source"), "/herald/topics/"+ev.Topic))
	add("ce_type", cmpOr(ev.Type, "herald.event"))
	add("ce_time", ev.Time.UTC().Format(time.RFC3339Nano))
	if ev.Key != "" {
		add("ce_subject", ev.Key)
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
			add("ce_"+attr, v)
		case strings.HasPrefix(lk, "herald-"), strings.HasPrefix(lk, "ce_"), lk == HeaderContentType:
			// Herald's own names: a producer header never overrides them.
		default:
			add(k, v)
		}
	}
	rec.Headers = h
	return rec
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

// reason classifies a failed record: the broker's error code, or why the
// brokers could not be reached. The detail (addresses, the raw error) is
// for admins and the log.
func (s *sink) reason(err error) (string, string) {
	var ke *kerr.Error
	switch {
	case errors.As(err, &ke):
		return "kafka-" + strings.ReplaceAll(strings.ToLower(ke.Message), "_", "-"), ke.Description
	case errors.Is(err, context.Canceled):
		return channel.ReasonCanceled, err.Error()
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, kgo.ErrRecordTimeout):
		if f := s.p.lastDial.Load(); f != nil {
			return netReason(f.err), "no broker could be reached before the timeout: " + f.err.Error()
		}
		return channel.ReasonTimeout, "the brokers did not acknowledge the records within the subscription's timeout"
	}
	return netReason(err), err.Error()
}

// netReason is channel.NetReason, network-error when it has none.
func netReason(err error) string {
	if r := channel.NetReason(err); r != "" {
		return r
	}
	return channel.ReasonNetwork
}
