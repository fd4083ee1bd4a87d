package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/channel/nats"
)

// natsBroker benches the nats channel's JetStream mode: each target is a
// subject, taken by a stream of its own (file storage, as a real one).
type natsBroker struct {
	cfg ChannelConfig
	url string
	nc  *natsgo.Conn
	js  jetstream.JetStream
}

func newNATSBroker(cfg ChannelConfig) (*natsBroker, error) {
	u := cfg.Broker
	if u == "" {
		u = "nats://127.0.0.1:4222"
	}
	if !strings.Contains(u, "://") {
		u = "nats://" + u
	}
	nc, err := natsgo.Connect(u, natsgo.Timeout(5*time.Second))
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", u, err)
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(16384))
	if err != nil {
		nc.Close()
		return nil, err
	}
	return &natsBroker{cfg: cfg, url: u, nc: nc, js: js}, nil
}

func (b *natsBroker) name() string { return b.url + " (JetStream)" }

func natsStream(target string) string { return strings.ToUpper(strings.ReplaceAll(target, "-", "_")) }

func (b *natsBroker) config(target string) json.RawMessage {
	raw, _ := json.Marshal(withBatching(b.cfg, map[string]any{"url": b.url, "subject": target, "jetstream": true, "stream": natsStream(target)}))
	return raw
}

func (b *natsBroker) prepare(ctx context.Context, target string) error {
	_, err := b.js.CreateStream(ctx, jetstream.StreamConfig{Name: natsStream(target), Subjects: []string{target}, Storage: jetstream.FileStorage})
	return err
}

// bare publishes as the channel does: batches of max_batch_events (500
// by default) asynchronous
// JetStream publishes with Nats-Msg-Id, max_in_flight batches at once,
// each waiting for its acknowledgements.
func (b *natsBroker) bare(ctx context.Context, target string, n int, payload func(int) []byte, key func(int) string) (int64, error) {
	var next, acked atomic.Int64
	var firstErr atomic.Pointer[error]
	var wg sync.WaitGroup
	size := batchOf(b.cfg, nats.DefaultBatch)
	for range b.cfg.MaxInFlight {
		wg.Go(func() {
			for {
				from := int(next.Add(int64(size))) - size + 1
				if from > n || ctx.Err() != nil {
					return
				}
				var futures []jetstream.PubAckFuture
				for seq := from; seq < from+size && seq <= n; seq++ {
					m := natsgo.NewMsg(target)
					m.Data = payload(seq)
					m.Header.Set("Herald-Seq", strconv.Itoa(seq))
					m.Header.Set("Herald-Event-Key", key(seq))
					f, err := b.js.PublishMsgAsync(m, jetstream.WithMsgID(target+"-"+strconv.Itoa(seq)), jetstream.WithExpectStream(natsStream(target)))
					if err != nil {
						firstErr.CompareAndSwap(nil, &err)
						break
					}
					futures = append(futures, f)
				}
				for _, f := range futures {
					select {
					case <-f.Ok():
						acked.Add(1)
					case err := <-f.Err():
						firstErr.CompareAndSwap(nil, &err)
					case <-ctx.Done():
						return
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

func (b *natsBroker) read(ctx context.Context, target string, seen func(int64), ready func()) error {
	ready() // target keeps what is written to it: reading starts from its beginning
	cons, err := b.js.OrderedConsumer(ctx, natsStream(target), jetstream.OrderedConsumerConfig{})
	if err != nil {
		return err
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		if seq, err := strconv.ParseInt(m.Headers().Get("Herald-Seq"), 10, 64); err == nil {
			seen(seq)
		}
	}, jetstream.PullMaxMessages(4096))
	if err != nil {
		return err
	}
	<-ctx.Done()
	cc.Stop()
	return nil
}

func (b *natsBroker) cleanup(ctx context.Context, targets ...string) {
	for _, t := range targets {
		_ = b.js.DeleteStream(ctx, natsStream(t))
	}
}

func (b *natsBroker) close() { b.nc.Close() }
