// Package kafka is the source kind "kafka": a franz-go consumer group
// reading Kafka topics. Each shard of the source is one member of the
// group; Kafka spreads the partitions over the members. A polled batch is
// published through the publisher, with topic/partition@offset as each
// record's idempotency key, and its offsets are committed only after
// Herald's commit, with rebalances held back while a batch is in hand, so
// a record is never committed before its event exists. A redelivery after
// a crash or a rebalance is a duplicate in Herald. Payloads (protobuf,
// JSON, anything) pass byte for byte.
package kafka

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/channel"
	chkafka "github.com/heraldhq/herald/channel/kafka"
	"github.com/heraldhq/herald/source"
)

// Name is the kind's name.
const Name = "kafka"

// Config is the kind's config.
type Config struct {
	// Brokers are the seed brokers, host:port.
	Brokers []string `json:"brokers"`
	// Topics are the Kafka topics to read.
	Topics []string `json:"topics"`
	// Group is the consumer group (default "herald-<source id>").
	Group string `json:"group,omitempty"`
	// Start is where a group with no committed offset starts: earliest
	// (the default: nothing is skipped) or latest.
	Start string `json:"start"`
	// MaxPollRecords bounds one batch (default 1000, at most 10000).
	MaxPollRecords int `json:"max_poll_records"`
	// SASLMechanism turns SASL on: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512,
	// with Username and Password (a secret: write-only).
	SASLMechanism string `json:"sasl_mechanism,omitempty"`
	Username      string `json:"username,omitempty"`
	Password      string `json:"password,omitempty"`
	// TLS: tls, tls_ca_pem, tls_server_name, tls_insecure_skip_verify,
	// tls_cert_pem and tls_key_pem (a secret), as the kafka channel has
	// them.
	channel.TLSOptions
}

// Kind is the Kafka source kind.
type Kind struct {
	// AllowPrivate lets configs name loopback, private and other refused
	// addresses, and lets the source reach them (channel.CheckHost).
	AllowPrivate bool
}

var _ source.Runner = Kind{}

// Name returns "kafka".
func (Kind) Name() string { return Name }

func parse(raw json.RawMessage) (Config, error) {
	var c Config
	if len(bytes.TrimSpace(raw)) == 0 || string(bytes.TrimSpace(raw)) == "null" {
		return c, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return c, herald.FieldErrorf("", "config must be an object with brokers, topics, group, start and max_poll_records: %v", err)
	}
	return c, nil
}

// Validate checks the config and applies the defaults.
func (k Kind) Validate(raw, previous json.RawMessage) (json.RawMessage, error) {
	c, err := parse(raw)
	if err != nil {
		return nil, err
	}
	var prev Config
	if previous != nil {
		prev, _ = parse(previous)
	}
	auth := chkafka.Config{}
	if err := chkafka.ValidateSASL(&auth,
		chkafka.Config{SASLMechanism: c.SASLMechanism, Username: c.Username, Password: c.Password},
		chkafka.Config{SASLMechanism: prev.SASLMechanism, Username: prev.Username, Password: prev.Password}); err != nil {
		return nil, err
	}
	c.SASLMechanism, c.Username, c.Password = auth.SASLMechanism, auth.Username, auth.Password
	// Sources are an administrator's: every TLS option is open to them.
	if c.TLSOptions, err = c.TLSOptions.Validate(prev.TLSOptions, true); err != nil {
		return nil, err
	}
	if len(c.Brokers) == 0 || len(c.Brokers) > 32 {
		return nil, herald.FieldErrorf("brokers", "brokers must list 1 to 32 seed brokers as host:port")
	}
	for _, b := range c.Brokers {
		if _, port, ok := strings.Cut(b, ":"); !ok || port == "" || strings.ContainsAny(b, " /") {
			return nil, herald.FieldErrorf("brokers", "broker %q is not host:port", b)
		}
		if err := channel.CheckHostPort(b, k.AllowPrivate, "brokers"); err != nil {
			return nil, err
		}
	}
	if len(c.Topics) == 0 || len(c.Topics) > 100 {
		return nil, herald.FieldErrorf("topics", "topics must list 1 to 100 Kafka topics")
	}
	for _, t := range c.Topics {
		if t == "" || len(t) > 249 || strings.ContainsAny(t, " /\\") {
			return nil, herald.FieldErrorf("topics", "topic %q is not a Kafka topic name", t)
		}
	}
	if len(c.Group) > 255 {
		return nil, herald.FieldErrorf("group", "group is at most 255 bytes")
	}
	if c.Start == "" {
		c.Start = "earliest"
	}
	if c.Start != "earliest" && c.Start != "latest" {
		return nil, herald.FieldErrorf("start", "start must be earliest or latest")
	}
	if c.MaxPollRecords == 0 {
		c.MaxPollRecords = 1000
	}
	if c.MaxPollRecords < 1 || c.MaxPollRecords > 10000 {
		return nil, herald.FieldErrorf("max_poll_records", "max_poll_records must be from 1 to 10000")
	}
	out, _ := json.Marshal(c)
	return out, nil
}

// Public returns the config without the password and the TLS key.
func (Kind) Public(raw json.RawMessage) json.RawMessage {
	c, err := parse(raw)
	if err != nil {
		return json.RawMessage(`{}`)
	}
	c.Password, c.KeyPEM = "", ""
	out, _ := json.Marshal(c)
	return out
}

// Run is one member of the source's consumer group.
func (k Kind) Run(ctx context.Context, sh *source.Shard) error {
	c, err := parse(sh.Source.Config)
	if err != nil {
		return err
	}
	group := c.Group
	if group == "" {
		group = "herald-" + sh.Source.ID
	}
	reset := kgo.NewOffset().AtStart()
	if c.Start == "latest" {
		reset = kgo.NewOffset().AtEnd()
	}
	tc, err := c.TLSOptions.Config()
	if err != nil {
		return err
	}
	opts := []kgo.Opt{
		kgo.SeedBrokers(c.Brokers...),
		kgo.ConsumerGroup(group),
		kgo.ConsumeTopics(c.Topics...),
		kgo.ConsumeResetOffset(reset),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.ClientID("herald-source"),
		kgo.Dialer(channel.Dialer(k.AllowPrivate, tc)),
	}
	if c.SASLMechanism != "" {
		opts = append(opts, kgo.SASL(chkafka.Mechanism(chkafka.Config{SASLMechanism: c.SASLMechanism, Username: c.Username, Password: c.Password})))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("kafka client: %w", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		cl.LeaveGroupContext(cctx)
		cl.Close()
	}()
	pctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	err = cl.Ping(pctx)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("reach the brokers %s: %w", strings.Join(c.Brokers, ","), err)
	}
	sh.Running()
	for {
		fetches := cl.PollRecords(ctx, c.MaxPollRecords)
		if ctx.Err() != nil {
			cl.AllowRebalance()
			return nil
		}
		if fetches.IsClientClosed() {
			return errors.New("the kafka client closed")
		}
		var ferr error
		fetches.EachError(func(topic string, p int32, err error) {
			if ferr == nil && !errors.Is(err, context.Canceled) {
				ferr = fmt.Errorf("fetch %s[%d]: %w", topic, p, err)
			}
		})
		if ferr != nil {
			cl.AllowRebalance()
			return ferr
		}
		records := fetches.Records()
		if len(records) > 0 {
			msgs := make([]source.Message, len(records))
			for i, r := range records {
				msgs[i] = message(r)
			}
			if err := sh.Publish(ctx, msgs); err != nil {
				cl.AllowRebalance()
				return err
			}
			if err := cl.CommitRecords(ctx, records...); err != nil {
				cl.AllowRebalance()
				if ctx.Err() != nil {
					return nil
				}
				// The events are committed in Herald: a redelivery is a
				// duplicate. A fenced member's commit fails here.
				return fmt.Errorf("commit offsets: %w", err)
			}
		}
		var lag int64
		fetches.EachPartition(func(p kgo.FetchTopicPartition) {
			if n := len(p.Records); n > 0 {
				lag += max(p.HighWatermark-p.Records[n-1].Offset-1, 0)
			}
		})
		if len(records) > 0 {
			sh.SetLag(lag)
		} else {
			sh.SetLag(0)
		}
		cl.AllowRebalance()
	}
}

func message(r *kgo.Record) source.Message {
	m := source.Message{
		Topic:          r.Topic,
		Key:            text(r.Key),
		Payload:        r.Value,
		IdempotencyKey: fmt.Sprintf("%s/%d@%d", r.Topic, r.Partition, r.Offset),
		ID:             fmt.Sprintf("%d-%d", r.Partition, r.Offset),
	}
	if len(r.Headers) > 0 {
		m.Headers = make(map[string]string, len(r.Headers))
		for _, h := range r.Headers {
			if strings.EqualFold(h.Key, "content-type") {
				m.ContentType = string(h.Value)
				continue
			}
			m.Headers[h.Key] = string(h.Value)
		}
	}
	if m.Payload == nil {
		m.Payload = []byte{}
	}
	return m
}

// text is a record key as event-key text: itself when it is printable
// UTF-8, else "base64:" and its standard base64.
func text(b []byte) string {
	if utf8.Valid(b) && herald.ValidHeaderValue(string(b)) {
		return string(b)
	}
	return "base64:" + base64.StdEncoding.EncodeToString(b)
}
