// Package amqp is the source kind "amqp": a RabbitMQ (AMQP 0-9-1) queue
// consumed with manual acknowledgements and a prefetch bound. Each shard is
// one consumer of the queue. Deliveries are gathered into a batch (what
// arrived, up to the prefetch), published through the publisher, and
// acknowledged (multiple, up to the batch's last tag) only after Herald's
// commit; a failure rejects them back to the queue. The message's
// message-id property is its idempotency key (or, without one, a digest of
// its routing key, headers and body), so a redelivery is a duplicate.
package amqp

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"slices"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/channel"
	"github.com/heraldhq/herald/source"
)

// Name is the kind's name.
const Name = "amqp"

// Config is the kind's config. URL holds a password: write-only.
type Config struct {
	URL      string `json:"url,omitempty"` // amqp://user:pass@host:5672/vhost
	Queue    string `json:"queue"`         // the queue to consume
	Prefetch int    `json:"prefetch"`      // unacknowledged deliveries at most (default 100)
}

// Kind is the AMQP source kind.
type Kind struct {
	// AllowPrivate lets configs name loopback, private and other refused
	// addresses, and lets the source reach them (channel.CheckHost).
	AllowPrivate bool
}

var _ source.Runner = Kind{}

// Name returns "amqp".
func (Kind) Name() string { return Name }

func parse(raw json.RawMessage) (Config, error) {
	var c Config
	if len(bytes.TrimSpace(raw)) == 0 || string(bytes.TrimSpace(raw)) == "null" {
		return c, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return c, herald.FieldErrorf("", "config must be an object with url, queue and prefetch: %v", err)
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
	uri, err := amqp091.ParseURI(c.URL)
	if err != nil {
		return nil, herald.FieldErrorf("url", "url must be amqp://user:pass@host:5672/vhost (or amqps://)")
	}
	if err := channel.CheckHost(uri.Host, k.AllowPrivate, "url", "the url's host"); err != nil {
		return nil, err
	}
	if c.Queue == "" || len(c.Queue) > 255 {
		return nil, herald.FieldErrorf("queue", "queue must name a queue (1 to 255 bytes)")
	}
	if c.Prefetch == 0 {
		c.Prefetch = 100
	}
	if c.Prefetch < 1 || c.Prefetch > 10000 {
		return nil, herald.FieldErrorf("prefetch", "prefetch must be from 1 to 10000")
	}
	out, _ := json.Marshal(c)
	return out, nil
}

// Public returns the config with the URL's password replaced.
func (Kind) Public(raw json.RawMessage) json.RawMessage {
	c, _ := parse(raw)
	if u, err := url.Parse(c.URL); err == nil && u.User != nil {
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
		}
		c.URL = u.String()
	}
	out, _ := json.Marshal(c)
	return out
}

// Run consumes the queue until ctx ends or the connection fails.
func (k Kind) Run(ctx context.Context, sh *source.Shard) error {
	c, err := parse(sh.Source.Config)
	if err != nil {
		return err
	}
	conn, err := amqp091.DialConfig(c.URL, amqp091.Config{Dial: guardedDial(k.AllowPrivate), Properties: amqp091.Table{"connection_name": "herald-source"}})
	if err != nil {
		return fmt.Errorf("connect to AMQP: %w", err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("open a channel: %w", err)
	}
	if err := ch.Qos(c.Prefetch, 0, false); err != nil {
		return fmt.Errorf("set the prefetch: %w", err)
	}
	deliveries, err := ch.ConsumeWithContext(ctx, c.Queue, "", false, false, false, false, nil)
	if err != nil {
		return fmt.Errorf("consume %s: %w", c.Queue, err)
	}
	closed := conn.NotifyClose(make(chan *amqp091.Error, 1))
	sh.Running()
	for {
		var batch []amqp091.Delivery
		select {
		case <-ctx.Done():
			return nil
		case e := <-closed:
			return fmt.Errorf("the AMQP connection closed: %v", e)
		case d, ok := <-deliveries:
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("the consumer of %s was cancelled", c.Queue)
			}
			batch = append(batch, d)
		}
	drain:
		for len(batch) < c.Prefetch {
			select {
			case d, ok := <-deliveries:
				if !ok {
					break drain
				}
				batch = append(batch, d)
			default:
				break drain
			}
		}
		msgs := make([]source.Message, len(batch))
		for i := range batch {
			msgs[i] = message(&batch[i], c.Queue)
		}
		last := batch[len(batch)-1]
		if err := sh.Publish(ctx, msgs); err != nil {
			_ = ch.Nack(last.DeliveryTag, true, true) // back to the queue
			return err
		}
		if err := ch.Ack(last.DeliveryTag, true); err != nil {
			return fmt.Errorf("ack: %w", err)
		}
		if q, err := ch.QueueDeclarePassive(c.Queue, false, false, false, false, nil); err == nil {
			sh.SetLag(int64(q.Messages))
		}
	}
}

func message(d *amqp091.Delivery, queue string) source.Message {
	m := source.Message{Topic: d.RoutingKey, Type: d.Type, ContentType: d.ContentType, Payload: d.Body, ID: d.MessageId}
	if m.Topic == "" {
		m.Topic = queue
	}
	if m.Payload == nil {
		m.Payload = []byte{}
	}
	keys := make([]string, 0, len(d.Headers))
	for k, v := range d.Headers {
		if s, ok := v.(string); ok {
			if m.Headers == nil {
				m.Headers = map[string]string{}
			}
			m.Headers[k] = s
		}
		keys = append(keys, k)
	}
	if d.MessageId != "" {
		m.IdempotencyKey = "msg:" + d.MessageId
		if len(m.IdempotencyKey) > 200 {
			sum := sha256.Sum256([]byte(d.MessageId))
			m.IdempotencyKey = "msg-sha256:" + hex.EncodeToString(sum[:])
		}
		return m
	}
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%d\x00", d.Exchange, d.RoutingKey, d.Timestamp.UnixNano())
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(h, "%s=%v\x00", k, d.Headers[k])
	}
	h.Write(d.Body)
	m.IdempotencyKey = "sha256:" + hex.EncodeToString(h.Sum(nil))
	return m
}

// guardedDial dials through the SSRF guard, with amqp091's connection
// deadline for the handshake.
func guardedDial(allowPrivate bool) func(network, addr string) (net.Conn, error) {
	nd := &net.Dialer{Timeout: 10 * time.Second, ControlContext: channel.DialControl(allowPrivate)}
	return func(network, addr string) (net.Conn, error) {
		conn, err := nd.Dial(network, addr)
		if err != nil {
			return nil, err
		}
		if err := conn.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
			return nil, err
		}
		return conn, nil
	}
}
