package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	amqpch "github.com/heraldhq/herald/channel/amqp"
)

// amqpBroker benches the amqp channel: each target is a durable queue,
// reached through the default exchange with the queue's name as the
// routing key, as a user routing to one queue would.
type amqpBroker struct {
	cfg  ChannelConfig
	url  string
	conn *amqp.Connection // for prepare, read and cleanup
}

func newAMQPBroker(cfg ChannelConfig) (*amqpBroker, error) {
	u := cfg.Broker
	if u == "" {
		u = "amqp://guest:guest@127.0.0.1:5672/"
	}
	if !strings.Contains(u, "://") {
		u = "amqp://guest:guest@" + u + "/"
	}
	conn, err := amqp.DialConfig(u, amqp.Config{Dial: amqp.DefaultDial(5 * time.Second)})
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", redactURL(u), err)
	}
	return &amqpBroker{cfg: cfg, url: u, conn: conn}, nil
}

func (b *amqpBroker) name() string { return redactURL(b.url) }

func (b *amqpBroker) config(target string) json.RawMessage {
	raw, _ := json.Marshal(withBatching(b.cfg, map[string]any{"url": b.url, "exchange": "", "routing_key": target}))
	return raw
}

func (b *amqpBroker) prepare(_ context.Context, target string) error {
	ch, err := b.conn.Channel()
	if err != nil {
		return err
	}
	defer ch.Close()
	_, err = ch.QueueDeclare(target, true, false, false, false, nil)
	return err
}

// bare publishes as the channel does: max_in_flight channels in confirm
// mode, each publishing batches of max_batch_events (500 by default) persistent, mandatory messages
// and then waiting for every confirmation of its batch.
func (b *amqpBroker) bare(ctx context.Context, target string, n int, payload func(int) []byte, key func(int) string) (int64, error) {
	conn, err := amqp.DialConfig(b.url, amqp.Config{Dial: amqp.DefaultDial(5 * time.Second)})
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	var next, acked atomic.Int64
	var firstErr atomic.Pointer[error]
	fail := func(err error) { firstErr.CompareAndSwap(nil, &err) }
	var wg sync.WaitGroup
	size := batchOf(b.cfg, amqpch.DefaultBatch)
	for range b.cfg.MaxInFlight {
		wg.Go(func() {
			ch, err := conn.Channel()
			if err != nil {
				fail(err)
				return
			}
			defer ch.Close()
			if err := ch.Confirm(false); err != nil {
				fail(err)
				return
			}
			for {
				from := int(next.Add(int64(size))) - size + 1
				if from > n || ctx.Err() != nil {
					return
				}
				var confirms []*amqp.DeferredConfirmation
				for seq := from; seq < from+size && seq <= n; seq++ {
					dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", target, true, false, amqp.Publishing{
						Headers:      amqp.Table{"Herald-Seq": strconv.Itoa(seq), "Herald-Event-Key": key(seq)},
						ContentType:  "application/json",
						DeliveryMode: amqp.Persistent,
						MessageId:    target + "-" + strconv.Itoa(seq),
						Body:         payload(seq),
					})
					if err != nil {
						fail(err)
						return
					}
					confirms = append(confirms, dc)
				}
				for _, dc := range confirms {
					if ok, err := dc.WaitContext(ctx); err != nil {
						fail(err)
						return
					} else if ok {
						acked.Add(1)
					}
				}
			}
		})
	}
	wg.Wait()
	if e := firstErr.Load(); e != nil {
		return acked.Load(), *e
	}
	return acked.Load(), nil
}

// read consumes target on a connection of its own, which it closes at
// the end: closing only a channel that still has deliveries on their way
// can wait for the broker forever.
func (b *amqpBroker) read(ctx context.Context, target string, seen func(int64), ready func()) error {
	conn, err := amqp.DialConfig(b.url, amqp.Config{Dial: amqp.DefaultDial(5 * time.Second)})
	if err != nil {
		return err
	}
	defer func() { _ = conn.CloseDeadline(time.Now().Add(2 * time.Second)) }()
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	msgs, err := ch.Consume(target, "", true, true, false, false, nil)
	if err != nil {
		return err
	}
	ready() // the queue was declared by prepare and kept what came before
	for {
		select {
		case m, ok := <-msgs:
			if !ok {
				return nil
			}
			if v, ok := m.Headers["Herald-Seq"].(string); ok {
				if seq, err := strconv.ParseInt(v, 10, 64); err == nil {
					seen(seq)
				}
			}
		case <-ctx.Done():
			go func() { // drained until the connection closes, so its reader never blocks
				for range msgs {
				}
			}()
			return nil
		}
	}
}

func (b *amqpBroker) cleanup(_ context.Context, targets ...string) {
	ch, err := b.conn.Channel()
	if err != nil {
		return
	}
	defer ch.Close()
	for _, t := range targets {
		_, _ = ch.QueueDelete(t, false, false, false)
	}
}

func (b *amqpBroker) close() { _ = b.conn.Close() }

// redactURL hides the password of a broker URL, for the report.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}
