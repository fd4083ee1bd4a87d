// Package nats is the source kind "nats": a durable JetStream pull consumer.
// Each shard pulls batches from the same durable consumer (the stream's
// messages are shared among the shards), publishes a batch through the
// publisher with the stream sequence as each message's idempotency key,
// and acknowledges the messages only after Herald's commit. A message not
// acknowledged in time (a crash, a lost lease) is redelivered and absorbed
// as a duplicate.
package nats

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/channel"
	"github.com/heraldhq/herald/source"
)

// Name is the kind's name.
const Name = "nats"

// Config is the kind's config. URL may hold a password: write-only.
type Config struct {
	// URL is the NATS server, nats://[user:pass@]host:4222 (several,
	// comma-separated).
	URL string `json:"url,omitempty"`
	// Stream is the JetStream stream to read.
	Stream string `json:"stream"`
	// FilterSubject narrows the stream's subjects ("orders.>"); "" reads
	// them all.
	FilterSubject string `json:"filter_subject,omitempty"`
	// Durable names the consumer (default "herald-<source id>").
	Durable string `json:"durable,omitempty"`
	// Batch bounds one pull (default 500).
	Batch int `json:"batch"`
	// AckWait is how long JetStream waits for an acknowledgement before
	// redelivering (default 30s).
	AckWait string `json:"ack_wait"`
}

// Kind is the NATS JetStream source kind.
type Kind struct {
	// AllowPrivate lets configs name loopback, private and other refused
	// addresses, and lets the source reach them (channel.CheckHost).
	AllowPrivate bool
}

var _ source.Runner = Kind{}

// Name returns "nats".
func (Kind) Name() string { return Name }

func parse(raw json.RawMessage) (Config, error) {
	var c Config
	if len(bytes.TrimSpace(raw)) == 0 || string(bytes.TrimSpace(raw)) == "null" {
		return c, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return c, herald.FieldErrorf("", "config must be an object with url, stream, filter_subject, durable, batch and ack_wait: %v", err)
	}
	return c, nil
}

// Validate checks the config; a URL left out on an update is kept.
func (k Kind) Validate(raw, previous json.RawMessage) (json.RawMessage, error) {
	c, err := parse(raw)
	if err != nil {
		return nil, err
	}
	if c.URL == "" && previous != nil {
		if p, err := parse(previous); err == nil {
			c.URL = p.URL
		}
	}
	if c.URL == "" {
		return nil, herald.FieldErrorf("url", "url is required: nats://host:4222")
	}
	for u := range strings.SplitSeq(c.URL, ",") {
		pu, err := url.Parse(strings.TrimSpace(u))
		if err != nil || pu.Host == "" {
			return nil, herald.FieldErrorf("url", "url must be nats://host:port (comma-separated for several)")
		}
		if err := channel.CheckHost(pu.Hostname(), k.AllowPrivate, "url", "the url's host"); err != nil {
			return nil, err
		}
	}
	if c.Stream == "" || strings.ContainsAny(c.Stream, " .*>") {
		return nil, herald.FieldErrorf("stream", "stream must name a JetStream stream")
	}
	if strings.ContainsAny(c.Durable, " .*>") {
		return nil, herald.FieldErrorf("durable", "durable must be a consumer name without spaces, '.', '*' or '>'")
	}
	if c.Batch == 0 {
		c.Batch = 500
	}
	if c.Batch < 1 || c.Batch > 10000 {
		return nil, herald.FieldErrorf("batch", "batch must be from 1 to 10000")
	}
	if c.AckWait == "" {
		c.AckWait = "30s"
	}
	if d, err := herald.ParseDuration(c.AckWait); err != nil || d < time.Second || d > time.Hour {
		return nil, herald.FieldErrorf("ack_wait", "ack_wait must be a duration from 1s to 1h")
	}
	out, _ := json.Marshal(c)
	return out, nil
}

// Public returns the config with passwords in the URL replaced.
func (Kind) Public(raw json.RawMessage) json.RawMessage {
	c, _ := parse(raw)
	var urls []string
	for u := range strings.SplitSeq(c.URL, ",") {
		if pu, err := url.Parse(strings.TrimSpace(u)); err == nil && pu.User != nil {
			if _, has := pu.User.Password(); has {
				pu.User = url.UserPassword(pu.User.Username(), "xxxxx")
			}
			u = pu.String()
		}
		urls = append(urls, u)
	}
	c.URL = strings.Join(urls, ",")
	out, _ := json.Marshal(c)
	return out
}

// Run pulls from the durable consumer until ctx ends or the server fails.
func (k Kind) Run(ctx context.Context, sh *source.Shard) error {
	c, err := parse(sh.Source.Config)
	if err != nil {
		return err
	}
	ackWait, _ := herald.ParseDuration(c.AckWait)
	nc, err := nats.Connect(c.URL, nats.Name("herald-source"), nats.MaxReconnects(-1),
		nats.SetCustomDialer(&net.Dialer{Timeout: 10 * time.Second, ControlContext: channel.DialControl(k.AllowPrivate)}))
	if err != nil {
		return fmt.Errorf("connect to NATS: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	durable := c.Durable
	if durable == "" {
		durable = "herald-" + strings.NewReplacer(".", "_", "*", "_", ">", "_").Replace(sh.Source.ID)
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, c.Stream, jetstream.ConsumerConfig{
		Durable:       durable,
		FilterSubject: c.FilterSubject,
		AckPolicy:     jetstream.AckExplicitPolicy,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckWait:       ackWait,
		MaxAckPending: max(c.Batch*sh.Count*2, 1000),
	})
	if err != nil {
		return fmt.Errorf("consumer %s on stream %s: %w", durable, c.Stream, err)
	}
	sh.Running()
	for ctx.Err() == nil {
		batch, err := cons.Fetch(c.Batch, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("fetch: %w", err)
		}
		var msgs []source.Message
		var got []jetstream.Msg
		var pending uint64
		for m := range batch.Messages() {
			meta, err := m.Metadata()
			if err != nil {
				return fmt.Errorf("message metadata: %w", err)
			}
			pending = meta.NumPending
			msg := source.Message{Topic: m.Subject(), Payload: m.Data(),
				IdempotencyKey: fmt.Sprintf("%s@%d", meta.Stream, meta.Sequence.Stream),
				ID:             fmt.Sprint(meta.Sequence.Stream)}
			if msg.Payload == nil {
				msg.Payload = []byte{}
			}
			for k, vs := range m.Headers() {
				if len(vs) == 0 || strings.HasPrefix(k, "Nats-") {
					continue
				}
				if strings.EqualFold(k, "Content-Type") {
					msg.ContentType = vs[0]
					continue
				}
				if msg.Headers == nil {
					msg.Headers = map[string]string{}
				}
				msg.Headers[k] = vs[0]
			}
			msgs = append(msgs, msg)
			got = append(got, m)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, context.DeadlineExceeded) {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("fetch: %w", err)
		}
		if len(msgs) == 0 {
			sh.SetLag(0)
			continue
		}
		if err := sh.Publish(ctx, msgs); err != nil {
			for _, m := range got {
				_ = m.Nak() // redelivered, and then a duplicate if it was committed after all
			}
			return err
		}
		for _, m := range got {
			if err := m.Ack(); err != nil {
				return fmt.Errorf("ack: %w", err)
			}
		}
		sh.SetLag(int64(pending))
	}
	return nil
}
