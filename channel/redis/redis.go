// Package redis is the channel that delivers events to Redis: appended to
// a stream with XADD (durable, trimmed with MAXLEN ~ when asked), or
// published on a Pub/Sub channel with PUBLISH (fire and forget, as Pub/Sub
// is). Batches go in one pipelined round trip.
package redis

import (
	"encoding/json"
	"log/slog"
	"strings"

	goredis "github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/channel"
)

// Name is the channel's name in a subscription's "channel".
const Name = "redis"

// Modes of delivery.
const (
	ModeStream = "stream" // XADD to a stream
	ModePubSub = "pubsub" // PUBLISH on a channel
)

// Limits of a config, enforced by Validate and documented in
// docs/channels.md.
const (
	DefaultStream    = "herald:{topic}"
	MaxNameLen       = 512 // a stream key or channel name, the template as written
	MaxDB            = 15
	MaxMaxLen        = 1 << 40
	DefaultBatch     = 100
	MaxBatch         = 1000
	MaxLingerMS      = channel.MaxLingerMS
	MaxCredentialLen = 1024
	topicPlaceholder = "{topic}"
	maxBatchBytes    = 4 << 20
)

// Config is a redis subscription's config as stored. Password and
// TLSOptions.KeyPEM are secrets: written by callers, never shown.
type Config struct {
	// Address is the server, "host:port".
	Address string `json:"address"`
	// DB is the database number (SELECT), 0 to 15.
	DB int `json:"db"`
	// Mode is "stream" (XADD, the default) or "pubsub" (PUBLISH).
	Mode string `json:"mode"`
	// Stream is the stream key (mode stream) or the channel name (mode
	// pubsub), a template: "{topic}" stands for the event's Herald
	// topic. Default "herald:{topic}".
	Stream string `json:"stream"`
	// MaxLen trims the stream to about this many entries at each XADD
	// (MAXLEN ~); 0 never trims. Mode stream only.
	MaxLen int64 `json:"maxlen,omitempty"`
	// RequireSubscribers makes a Pub/Sub message that no subscriber
	// received a failure, to retry. Mode pubsub only.
	RequireSubscribers bool `json:"require_subscribers,omitempty"`
	// max_batch_events bounds the events of one pipelined round trip;
	// linger_ms is how long a partial batch waits for more.
	channel.Batching

	Username string `json:"username,omitempty"` // ACL user; "" is the default user
	Password string `json:"password,omitempty"` // secret
	// TLS: tls, tls_ca_pem, tls_server_name, tls_insecure_skip_verify,
	// tls_cert_pem and tls_key_pem (a secret).
	channel.TLSOptions
}

// ParseConfig reads a stored config.
func ParseConfig(raw json.RawMessage) (Config, error) { return channel.ParseConfig[Config](Name, raw) }

// Encode returns the config's canonical JSON.
func (c Config) Encode() json.RawMessage { return channel.EncodeConfig(c) }

// ChannelConfig configures the channel: AllowPrivate, Logger and
// Registry; go-redis bounds its own dials.
type ChannelConfig = channel.BrokerConfig

// Channel delivers to Redis. One client (a connection pool) serves every
// subscription with the same server, database and credentials, shared by
// reference count. It is safe for concurrent use.
type Channel struct {
	channel.Configs[Config] // Validate (check), Public, Destination
	cfg                     ChannelConfig
	log                     *slog.Logger
	metrics                 *metrics

	pool *channel.Pool[*goredis.Client] // by poolKey
}

var _ channel.Channel = (*Channel)(nil)

// New returns the redis channel.
func New(cfg ChannelConfig) *Channel {
	cfg = cfg.WithDefaults(Name)
	c := &Channel{cfg: cfg, log: cfg.Logger, metrics: newMetrics(cfg.Registry)}
	// Configs: Validate is check; Public leaves out the password and the
	// TLS key; the destination is "redis://host:port", so subscriptions to
	// one server share its part of the send slots.
	c.Configs = channel.Configs[Config]{Name: Name, Check: c.check,
		Hide: func(c *Config) { c.Password, c.KeyPEM = "", "" },
		Dest: func(c Config) string { return "redis://" + strings.ToLower(c.Address) }}
	c.pool = channel.NewPool(func(cl *goredis.Client) {
		_ = cl.Close()
		c.metrics.clients.Dec()
	})
	return c
}

// Name is "redis".
func (c *Channel) Name() string { return Name }

// check checks a redis config and returns its canonical form. Errors
// name the member ("address", "stream", "maxlen", "password"). On an
// update, a password left out is kept when the user name is unchanged,
// and a TLS key when the certificate is.
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
	out := in
	out.Address = strings.TrimSpace(in.Address)
	if out.Address == "" {
		return Config{}, herald.FieldErrorf("address", `address is required: the Redis server as "host:port"`)
	}
	if err := channel.CheckHostPort(out.Address, c.cfg.AllowPrivate, "address"); err != nil {
		return Config{}, err
	}
	if out.DB < 0 || out.DB > MaxDB {
		return Config{}, herald.FieldErrorf("db", "db must be between 0 and %d, got %d", MaxDB, out.DB)
	}
	switch out.Mode {
	case "":
		out.Mode = ModeStream
	case ModeStream, ModePubSub:
	default:
		return Config{}, herald.FieldErrorf("mode", `mode %q is not "stream" (XADD) or "pubsub" (PUBLISH)`, out.Mode)
	}
	if out.Stream == "" {
		out.Stream = DefaultStream
	}
	if len(out.Stream) > MaxNameLen {
		return Config{}, herald.FieldErrorf("stream", "stream is %d bytes; the limit is %d", len(out.Stream), MaxNameLen)
	}
	if strings.ContainsAny(strings.ReplaceAll(out.Stream, topicPlaceholder, ""), "{}") {
		return Config{}, herald.FieldErrorf("stream", "stream %q: the only placeholder is {topic}, the event's Herald topic", out.Stream)
	}
	if strings.ContainsFunc(out.Stream, func(r rune) bool { return r < 0x21 || r == 0x7f }) {
		return Config{}, herald.FieldErrorf("stream", "stream %q holds spaces or control characters", out.Stream)
	}
	if out.MaxLen < 0 || out.MaxLen > MaxMaxLen {
		return Config{}, herald.FieldErrorf("maxlen", "maxlen must be between 0 (never trim) and %d, got %d", int64(MaxMaxLen), out.MaxLen)
	}
	if out.MaxLen > 0 && out.Mode != ModeStream {
		return Config{}, herald.FieldErrorf("maxlen", `maxlen trims a stream: it needs mode "stream"`)
	}
	if out.RequireSubscribers && out.Mode != ModePubSub {
		return Config{}, herald.FieldErrorf("require_subscribers", `require_subscribers is for mode "pubsub"`)
	}
	if err := out.Check(DefaultBatch, MaxBatch); err != nil {
		return Config{}, err
	}
	if len(out.Username) > MaxCredentialLen {
		return Config{}, herald.FieldErrorf("username", "username is longer than %d bytes", MaxCredentialLen)
	}
	if out.Password == "" && prev.Password != "" && prev.Username == out.Username {
		out.Password = prev.Password // an update that leaves the secret out keeps it
	}
	if len(out.Password) > MaxCredentialLen {
		return Config{}, herald.FieldErrorf("password", "password is longer than %d bytes", MaxCredentialLen)
	}
	if out.Username != "" && out.Password == "" {
		return Config{}, herald.FieldErrorf("password", "username needs its password (it is never shown again; an update may leave it out to keep it)")
	}
	var err error
	if out.TLSOptions, err = in.TLSOptions.Validate(prev.TLSOptions, p.Admin); err != nil {
		return Config{}, err
	}
	return out, nil
}

// poolKey identifies the client a config uses: the server, database,
// credentials and TLS. Secrets enter only hashed.
func poolKey(cfg Config) string {
	return channel.PoolKey("redis://"+cfg.Address, cfg.Username, cfg.Password, cfg.DB, cfg.TLSOptions)
}

// nameFor renders the stream or channel template for a Herald topic.
func nameFor(tmpl, topic string) string {
	return strings.ReplaceAll(tmpl, topicPlaceholder, topic)
}
