package bench

import (
	"context"
	"encoding/json"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald/channel/redis"
)

// redisBroker benches the redis channel's stream mode.
type redisBroker struct {
	cfg  ChannelConfig
	addr string
	cl   *goredis.Client
}

func newRedisBroker(cfg ChannelConfig) (*redisBroker, error) {
	addr := cfg.Broker
	if addr == "" {
		addr = "127.0.0.1:6379"
	}
	return &redisBroker{cfg: cfg, addr: addr, cl: goredis.NewClient(&goredis.Options{Addr: addr, DisableIdentity: true, PoolSize: cfg.MaxInFlight + 4})}, nil
}

func (b *redisBroker) name() string { return b.addr }

func (b *redisBroker) batch() int { return batchOf(b.cfg, redis.DefaultBatch) }

func (b *redisBroker) config(target string) json.RawMessage {
	raw, _ := json.Marshal(withBatching(b.cfg, map[string]any{"address": b.addr, "stream": target}))
	return raw
}

func (b *redisBroker) prepare(ctx context.Context, _ string) error { return b.cl.Ping(ctx).Err() }

// bare appends as the channel does: pipelines of max_batch_events XADDs,
// max_in_flight pipelines at once; entries carry the seq, the key and the
// payload, without the rest of Herald's fields.
func (b *redisBroker) bare(ctx context.Context, target string, n int, payload func(int) []byte, key func(int) string) (int64, error) {
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
				pipe := b.cl.Pipeline()
				var cmds []*goredis.StringCmd
				for seq := from; seq < from+size && seq <= n; seq++ {
					cmds = append(cmds, pipe.XAdd(ctx, &goredis.XAddArgs{Stream: target, ID: "*",
						Values: []any{redis.FieldSeq, strconv.Itoa(seq), redis.FieldKey, key(seq), redis.FieldPayload, payload(seq)}}))
				}
				_, _ = pipe.Exec(ctx)
				for _, c := range cmds {
					if err := c.Err(); err != nil {
						firstErr.CompareAndSwap(nil, &err)
					} else {
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

func (b *redisBroker) read(ctx context.Context, target string, seen func(int64), ready func()) error {
	ready() // target keeps what is written to it: reading starts from its beginning
	last := "0"
	for ctx.Err() == nil {
		streams, err := b.cl.XRead(ctx, &goredis.XReadArgs{Streams: []string{target, last}, Count: 10000, Block: 100 * time.Millisecond}).Result()
		if err != nil {
			if err == goredis.Nil {
				continue
			}
			if ctx.Err() != nil {
				return nil
			}
			select { // a hiccup of the server: try again shortly
			case <-time.After(50 * time.Millisecond):
			case <-ctx.Done():
			}
			continue
		}
		for _, s := range streams {
			for _, m := range s.Messages {
				last = m.ID
				if v, ok := m.Values[redis.FieldSeq].(string); ok {
					if seq, err := strconv.ParseInt(v, 10, 64); err == nil {
						seen(seq)
					}
				}
			}
		}
	}
	return nil
}

func (b *redisBroker) cleanup(ctx context.Context, targets ...string) {
	_ = b.cl.Del(ctx, targets...).Err()
}

func (b *redisBroker) close() { _ = b.cl.Close() }
