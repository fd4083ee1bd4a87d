package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/channel/kafka"
)

// kafkaBroker benches the kafka channel against a broker, or against a
// kfake cluster in this process when none is given.
type kafkaBroker struct {
	cfg     ChannelConfig
	addr    string
	cluster *kfake.Cluster // nil for an outside broker
}

func newKafkaBroker(cfg ChannelConfig) (*kafkaBroker, error) {
	b := &kafkaBroker{cfg: cfg, addr: cfg.Broker}
	if b.addr == "" {
		c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.DefaultNumPartitions(cfg.Partitions), kfake.AllowAutoTopicCreation())
		if err != nil {
			return nil, fmt.Errorf("start kfake: %w", err)
		}
		b.cluster, b.addr = c, c.ListenAddrs()[0]
	}
	return b, nil
}

func (b *kafkaBroker) name() string {
	if b.cluster != nil {
		return "kfake (in-process) at " + b.addr
	}
	return b.addr
}

func (b *kafkaBroker) batch() int { return batchOf(b.cfg, kafka.DefaultBatch) }

func (b *kafkaBroker) config(target string) json.RawMessage {
	raw, _ := json.Marshal(withBatching(b.cfg, map[string]any{"brokers": []string{b.addr}, "topic": target}))
	return raw
}

func (b *kafkaBroker) prepare(_ context.Context, target string) error {
	if b.cluster != nil {
		return b.cluster.CreateTopic(target, int32(b.cfg.Partitions), nil)
	}
	return nil // an outside cluster creates topics on first use, or has them
}

// bare produces as the channel does: the same client options (acks from
// every in-sync replica, idempotent, no client linger), batches of
// max_batch_events awaited whole, max_in_flight batches at once. Its
// records carry the key and the payload, without Herald's headers.
func (b *kafkaBroker) bare(ctx context.Context, target string, n int, payload func(int) []byte, key func(int) string) (int64, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.addr), kgo.RequiredAcks(kgo.AllISRAcks()), kgo.ProducerLinger(0), kgo.ProducerBatchCompression(kgo.NoCompression()))
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	var next, acked atomic.Int64
	var firstErr atomic.Pointer[error]
	var wg sync.WaitGroup
	size := b.batch()
	for range b.cfg.MaxInFlight {
		wg.Go(func() {
			for {
				from := int(next.Add(int64(size))) - size + 1
				if from > n || ctx.Err() != nil {
					return
				}
				var bw sync.WaitGroup
				for seq := from; seq < from+size && seq <= n; seq++ {
					bw.Add(1)
					rec := &kgo.Record{Topic: target, Key: []byte(key(seq)), Value: payload(seq),
						Headers: []kgo.RecordHeader{{Key: kafka.HeaderSeq, Value: []byte(strconv.Itoa(seq))}}}
					cl.Produce(ctx, rec, func(_ *kgo.Record, err error) {
						if err != nil {
							firstErr.CompareAndSwap(nil, &err)
						} else {
							acked.Add(1)
						}
						bw.Done()
					})
				}
				bw.Wait()
			}
		})
	}
	wg.Wait()
	if e := firstErr.Load(); e != nil {
		return acked.Load(), *e
	}
	return acked.Load(), nil
}

func (b *kafkaBroker) read(ctx context.Context, target string, seen func(int64), ready func()) error {
	ready() // target keeps what is written to it: reading starts from its beginning
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.addr), kgo.ConsumeTopics(target), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxBytes(64<<20), kgo.FetchMaxPartitionBytes(16<<20))
	if err != nil {
		return err
	}
	defer cl.Close()
	for ctx.Err() == nil {
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			for _, h := range r.Headers {
				if h.Key == kafka.HeaderSeq {
					if seq, err := strconv.ParseInt(string(h.Value), 10, 64); err == nil {
						seen(seq)
					}
				}
			}
		})
	}
	return nil
}

func (b *kafkaBroker) cleanup(context.Context, ...string) {} // kfake goes with the process; an outside cluster keeps its topics

func (b *kafkaBroker) close() {
	if b.cluster != nil {
		b.cluster.Close()
	}
}
