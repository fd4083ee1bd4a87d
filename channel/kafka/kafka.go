// Package kafka is the channel that delivers events to Apache Kafka topics
// with franz-go: an idempotent producer with acks=all, records keyed by the
// event key (so one key goes to one partition, in order), the Herald
// metadata and the CloudEvents binary-mode attributes in record headers,
// and batches of many events per call. A delivery counts as delivered when
// every in-sync replica of its partition has the record.
package kafka

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/channel"
)

// Name is the channel's name in a subscription's "channel".
const Name = "kafka"

// Limits of a config, enforced by Validate and documented in
// docs/channels.md.
const (
	MaxBrokers        = 32   // addresses in "brokers"
	MaxTopicLen       = 249  // Kafka's limit on a topic name
	DefaultBatch      = 500  // events per produce call when "max_batch_events" is 0
	MaxBatch          = 5000 // the largest "max_batch_events"
	MaxLingerMS       = channel.MaxLingerMS
	MaxClientIDLen    = 128
	MaxCredentialLen  = 1024 // a SASL user name or password
	DefaultTopic      = "{topic}"
	topicPlaceholder  = "{topic}"
	defaultClientID   = "herald"
	maxBatchBytesHint = 4 << 20 // payload bytes per DeliverBatch call
)

// SASL mechanisms a config may name.
const (
	MechanismPlain       = "PLAIN"
	MechanismSCRAMSHA256 = "SCRAM-SHA-256"
	MechanismSCRAMSHA512 = "SCRAM-SHA-512"
)

// Compression codecs a config may name.
var codecs = []string{"none", "gzip", "snappy", "lz4", "zstd"}

// Config is a kafka subscription's config as stored. Password and
// TLSOptions.KeyPEM are secrets: written by callers, never shown (see
// Channel.Public).
type Config struct {
	// Brokers are the seed brokers, "host:port".
	Brokers []string `json:"brokers"`
	// Topic is the Kafka topic, a template: "{topic}" stands for the
	// event's Herald topic. Default "{topic}".
	Topic string `json:"topic"`
	// ClientID is the Kafka client id the producer announces.
	ClientID string `json:"client_id"`
	// Compression is the batch codec: none, gzip, snappy, lz4 or zstd.
	Compression string `json:"compression"`
	// max_batch_events bounds the events of one produce call; linger_ms
	// is how long a partial batch waits for more.
	channel.Batching

	// SASLMechanism turns SASL authentication on: PLAIN, SCRAM-SHA-256
	// or SCRAM-SHA-512, with Username and Password.
	SASLMechanism string `json:"sasl_mechanism,omitempty"`
	Username      string `json:"username,omitempty"`
	Password      string `json:"password,omitempty"` // secret

	// TLS: tls, tls_ca_pem, tls_server_name, tls_insecure_skip_verify,
	// tls_cert_pem and tls_key_pem (a secret).
	channel.TLSOptions
}

// ParseConfig reads a stored config.
func ParseConfig(raw json.RawMessage) (Config, error) { return channel.ParseConfig[Config](Name, raw) }

// Encode returns the config's canonical JSON.
func (c Config) Encode() json.RawMessage { return channel.EncodeConfig(c) }

// ChannelConfig configures the channel: AllowPrivate, Logger (the pool's
// and franz-go's warnings) and Registry; franz-go bounds its own dials and
// reconnects.
type ChannelConfig = channel.BrokerConfig

// Channel delivers to Kafka. One producer serves every subscription with
// the same brokers and connection settings, shared by reference count. It
// is safe for concurrent use.
type Channel struct {
	channel.Configs[Config] // Validate (check), Public, Destination
	cfg                     ChannelConfig
	log                     *slog.Logger
	metrics                 *metrics

	pool *channel.Pool[*producer] // by poolKey
}

var _ channel.Channel = (*Channel)(nil)

// New returns the kafka channel.
func New(cfg ChannelConfig) *Channel {
	cfg = cfg.WithDefaults(Name)
	c := &Channel{cfg: cfg, log: cfg.Logger, metrics: newMetrics(cfg.Registry)}
	// Configs: Validate is check; Public leaves out the password and the
	// TLS key; the destination is "kafka://" and the sorted seed brokers,
	// so subscriptions to one cluster share its part of the send slots.
	c.Configs = channel.Configs[Config]{Name: Name, Check: c.check,
		Hide: func(c *Config) { c.Password, c.KeyPEM = "", "" },
		Dest: func(c Config) string { return "kafka://" + strings.Join(c.Brokers, ",") }}
	c.pool = channel.NewPool(c.closeProducer)
	return c
}

// Name is "kafka".
func (c *Channel) Name() string { return Name }

// check checks a kafka config and returns its canonical form. Errors
// name the member ("brokers", "topic", "password", "tls_ca_pem"). On an
// update, a password or TLS key left out is kept from the stored config
// when the rest of the credential is unchanged.
func (c *Channel) check(p channel.ValidateParams) (Config, error) {
	var in Config
	if err := channel.DecodeConfig(p.Config, &in); err != nil {
		return Config{}, err
	}
	var prev Config
	if p.Previous != nil {
		var err error
		if prev, err = ParseConfig(p.Previous); err != nil {
			return Config{}, err
		}
	}
	if len(in.Brokers) == 0 {
		return Config{}, herald.FieldErrorf("brokers", `brokers is required: the seed brokers as ["host:port", ...]`)
	}
	if len(in.Brokers) > MaxBrokers {
		return Config{}, herald.FieldErrorf("brokers", "%d brokers; the limit is %d", len(in.Brokers), MaxBrokers)
	}
	brokers := make([]string, 0, len(in.Brokers))
	for _, b := range in.Brokers {
		b = strings.TrimSpace(b)
		if err := channel.CheckHostPort(b, c.cfg.AllowPrivate, "brokers"); err != nil {
			return Config{}, err
		}
		if !slices.Contains(brokers, b) {
			brokers = append(brokers, b)
		}
	}
	slices.Sort(brokers)
	out := Config{Brokers: brokers, Topic: in.Topic, ClientID: in.ClientID, Compression: in.Compression, Batching: in.Batching}
	if out.Topic == "" {
		out.Topic = DefaultTopic
	}
	if err := validateTopic(out.Topic); err != nil {
		return Config{}, err
	}
	if out.ClientID == "" {
		out.ClientID = defaultClientID
	}
	if len(out.ClientID) > MaxClientIDLen || !kafkaName(out.ClientID) {
		return Config{}, herald.FieldErrorf("client_id", "client_id must be 1 to %d letters, digits, '.', '_' or '-'", MaxClientIDLen)
	}
	if out.Compression == "" {
		out.Compression = "none"
	}
	if !slices.Contains(codecs, out.Compression) {
		return Config{}, herald.FieldErrorf("compression", "compression %q is not one of %s", out.Compression, strings.Join(codecs, ", "))
	}
	if err := out.Check(DefaultBatch, MaxBatch); err != nil {
		return Config{}, err
	}
	if err := ValidateSASL(&out, in, prev); err != nil {
		return Config{}, err
	}
	var err error
	if out.TLSOptions, err = in.TLSOptions.Validate(prev.TLSOptions, p.Admin); err != nil {
		return Config{}, err
	}
	return out, nil
}

// validateTopic checks a topic template: Kafka's characters around at
// most the placeholder, short enough for the longest Herald topic.
func validateTopic(tmpl string) error {
	literal := strings.ReplaceAll(tmpl, topicPlaceholder, "")
	if strings.ContainsAny(literal, "{}") {
		return herald.FieldErrorf("topic", `topic %q: the only placeholder is {topic}, the event's Herald topic`, tmpl)
	}
	if literal != "" && !kafkaName(literal) {
		return herald.FieldErrorf("topic", "topic %q: a Kafka topic holds only letters, digits, '.', '_' and '-'", tmpl)
	}
	longest := len(literal) + strings.Count(tmpl, topicPlaceholder)*herald.MaxTopicNameLen
	if longest > MaxTopicLen {
		return herald.FieldErrorf("topic", "topic %q can be %d bytes long with a Herald topic of %d; Kafka's limit is %d",
			tmpl, longest, herald.MaxTopicNameLen, MaxTopicLen)
	}
	if tmpl == "." || tmpl == ".." {
		return herald.FieldErrorf("topic", "topic %q is not a valid Kafka topic", tmpl)
	}
	return nil
}

// kafkaName reports whether s holds only the characters of Kafka topic
// names and client ids.
func kafkaName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// topicFor renders the template for a Herald topic.
func topicFor(tmpl, topic string) string {
	if tmpl == DefaultTopic {
		return topic
	}
	return strings.ReplaceAll(tmpl, topicPlaceholder, topic)
}

// ValidateSASL copies and checks the SASL members (sasl_mechanism,
// username, password) from in to out. A password left out of an update is
// kept from prev when the mechanism and user name are unchanged. The kafka
// source checks its own with it.
func ValidateSASL(out *Config, in, prev Config) error {
	mech := strings.ToUpper(in.SASLMechanism)
	switch mech {
	case "":
		if in.Username != "" || in.Password != "" {
			return herald.FieldErrorf("sasl_mechanism", "username and password need sasl_mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512")
		}
		return nil
	case MechanismPlain, MechanismSCRAMSHA256, MechanismSCRAMSHA512:
	default:
		return herald.FieldErrorf("sasl_mechanism", "sasl_mechanism %q is not PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", in.SASLMechanism)
	}
	if in.Username == "" || len(in.Username) > MaxCredentialLen {
		return herald.FieldErrorf("username", "username must be 1 to %d bytes", MaxCredentialLen)
	}
	password := in.Password
	if password == "" && prev.SASLMechanism == mech && prev.Username == in.Username {
		password = prev.Password
	}
	if password == "" || len(password) > MaxCredentialLen {
		return herald.FieldErrorf("password", "password must be 1 to %d bytes (it is never shown again; an update may leave it out to keep it)", MaxCredentialLen)
	}
	out.SASLMechanism, out.Username, out.Password = mech, in.Username, password
	return nil
}

// poolKey identifies the producer a config uses: everything that shapes
// the connection (brokers, credentials, TLS) or the producer (client id,
// codec). Secrets enter only hashed.
func poolKey(cfg Config) string {
	p := cfg
	p.Topic, p.Batching = "", channel.Batching{}
	return channel.PoolKey("kafka", p)
}

// Open takes a share of the producer for the config's brokers, making it
// when it is the first. It does not wait for the brokers: a cluster that
// is down makes deliveries fail, not Open.
func (c *Channel) Open(_ context.Context, sub *herald.Subscription) (channel.Sink, error) {
	cfg, err := ParseConfig(sub.Config)
	if err != nil {
		return nil, err
	}
	p, release, err := c.pool.Acquire(poolKey(cfg), func() (*producer, error) { return c.openProducer(cfg) })
	if err != nil {
		return nil, fmt.Errorf("subscription %s: %w", sub.ID, err)
	}
	return &sink{c: c, p: p, release: release, subID: sub.ID, subIDBytes: []byte(sub.ID), topic: cfg.Topic, timeout: sub.Timeout,
		limits: cfg.Limits(DefaultBatch, maxBatchBytesHint)}, nil
}
