package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/heraldhq/herald/channel/mqtt"
)

// mqttBroker benches the mqtt channel: each target is an MQTT topic, the
// messages at QoS 1 in the raw format (the payload byte for byte: MQTT
// 3.1.1 has no headers, so the reader finds the seq in the payload).
type mqttBroker struct {
	cfg ChannelConfig
	url string
}

func newMQTTBroker(cfg ChannelConfig) (*mqttBroker, error) {
	u := cfg.Broker
	if u == "" {
		u = "tcp://127.0.0.1:1883"
	}
	if !strings.Contains(u, "://") {
		u = "tcp://" + u
	}
	return &mqttBroker{cfg: cfg, url: u}, nil
}

func (b *mqttBroker) name() string { return redactURL(b.url) }

func (b *mqttBroker) config(target string) json.RawMessage {
	raw, _ := json.Marshal(withBatching(b.cfg, map[string]any{"url": b.url, "topic": target, "qos": 1}))
	return raw
}

func (b *mqttBroker) connect(ctx context.Context, role string) (paho.Client, error) {
	opts := paho.NewClientOptions().AddBroker(b.url).SetClientID("herald-bench-" + role + "-" + randomHex(4)).
		SetCleanSession(true).SetConnectTimeout(5 * time.Second).SetAutoReconnect(false)
	cl := paho.NewClient(opts)
	tok := cl.Connect()
	select {
	case <-tok.Done():
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if err := tok.Error(); err != nil {
		return nil, fmt.Errorf("connect to %s: %w", redactURL(b.url), err)
	}
	return cl, nil
}

func (b *mqttBroker) prepare(context.Context, string) error { return nil } // topics need no making

// bare publishes as the channel does: one client, batches of max_batch_events
// (100 by default) QoS 1
// messages, max_in_flight batches at once, each waiting for the PUBACKs
// of its batch.
func (b *mqttBroker) bare(ctx context.Context, target string, n int, payload func(int) []byte, _ func(int) string) (int64, error) {
	cl, err := b.connect(ctx, "bare")
	if err != nil {
		return 0, err
	}
	defer cl.Disconnect(250)
	var next, acked atomic.Int64
	var firstErr atomic.Pointer[error]
	var wg sync.WaitGroup
	size := batchOf(b.cfg, mqtt.DefaultBatch)
	for range b.cfg.MaxInFlight {
		wg.Go(func() {
			for {
				from := int(next.Add(int64(size))) - size + 1
				if from > n || ctx.Err() != nil {
					return
				}
				var toks []paho.Token
				for seq := from; seq < from+size && seq <= n; seq++ {
					toks = append(toks, cl.Publish(target, 1, false, payload(seq)))
				}
				for _, t := range toks {
					select {
					case <-t.Done():
					case <-ctx.Done():
						return
					}
					if err := t.Error(); err != nil {
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

// read subscribes at QoS 0 and takes the seq from the payload
// (benchPayload's {"seq":N,...}). Not QoS 1: Mosquitto sends a QoS 1
// subscriber 20 messages at a time (max_inflight_messages) and queues
// 1,000 more (max_queued_messages), dropping the rest, so a reader that
// falls behind by a moment would count the broker's drops as lost
// events, and its window would bound both sides' rates. At QoS 0 the
// broker writes to a connected subscriber at once; a loss is still
// counted, not hidden.
func (b *mqttBroker) read(ctx context.Context, target string, seen func(int64), ready func()) error {
	cl, err := b.connect(ctx, "reader")
	if err != nil {
		return err
	}
	defer cl.Disconnect(250)
	tok := cl.Subscribe(target, 0, func(_ paho.Client, m paho.Message) {
		if seq, ok := payloadSeq(m.Payload()); ok {
			seen(seq)
		}
	})
	select {
	case <-tok.Done():
	case <-ctx.Done():
		return nil
	}
	if err := tok.Error(); err != nil {
		return err
	}
	ready() // the broker passes on only what is published after the SUBACK
	<-ctx.Done()
	return nil
}

// payloadSeq reads the seq of a benchPayload.
func payloadSeq(p []byte) (int64, bool) {
	rest, ok := bytes.CutPrefix(p, []byte(`{"seq":`))
	if !ok {
		return 0, false
	}
	end := bytes.IndexByte(rest, ',')
	if end < 0 {
		return 0, false
	}
	seq, err := strconv.ParseInt(string(rest[:end]), 10, 64)
	return seq, err == nil
}

func (b *mqttBroker) cleanup(context.Context, ...string) {} // MQTT keeps nothing for topics without retained messages

func (b *mqttBroker) close() {}
