package channel

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/heraldhq/herald"
)

// What the broker channels (kafka, redis, nats, amqp, mqtt) share: their
// construction settings, the batch settings of their configs, the keeping
// of secrets on an update, the key of their pooled clients and the
// bookkeeping of a batch's per-event outcomes. Each broker package keeps
// only what its client library makes its own.

// BrokerConfig configures a broker channel; each broker package names it
// ChannelConfig. Zero values mean the defaults.
type BrokerConfig struct {
	// AllowPrivate lets subscriptions name loopback, private and other
	// refused addresses, and lets connections reach them (the SSRF guard
	// checks the address actually dialed).
	AllowPrivate bool
	// DialTimeout bounds connecting and the protocol's handshake; default
	// 5s. Channels whose client bounds its own dials (kafka, redis) do
	// not read it.
	DialTimeout time.Duration
	// ReconnectWait is the first pause after a failed connection attempt,
	// growing to 30s while they fail; default 1s. Channels whose client
	// reconnects on its own schedule (kafka, redis) do not read it.
	ReconnectWait time.Duration
	// Logger gets connection changes (never secrets); nil discards them.
	Logger *slog.Logger
	// Registry gets the channel's metrics; nil registers none.
	Registry prometheus.Registerer
}

// WithDefaults returns the config with its defaults filled in, Logger
// included (tagged with the channel's name).
func (c BrokerConfig) WithDefaults(name string) BrokerConfig {
	if c.DialTimeout <= 0 {
		c.DialTimeout = 5 * time.Second
	}
	if c.ReconnectWait <= 0 {
		c.ReconnectWait = time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	c.Logger = c.Logger.With("channel", name)
	return c
}

// Register registers the collectors with the config's Registry, if any.
func (c BrokerConfig) Register(cs ...prometheus.Collector) {
	if c.Registry != nil {
		c.Registry.MustRegister(cs...)
	}
}

// Configs is the part of a broker channel that only handles its configs:
// Validate, Public and Destination (see Channel), from the config type C
// (a struct of JSON members, its JSON the canonical form) and three
// functions of the channel's own. Each broker package embeds one in its
// Channel and fills it in its constructor.
type Configs[C any] struct {
	// Name is the channel's, for errors ("amqp config: ...").
	Name string
	// Check validates a config as Channel.Validate documents: members
	// checked, defaults applied, secrets kept on an update.
	Check func(p ValidateParams) (C, error)
	// Hide blanks the secrets of a config, for Public.
	Hide func(*C)
	// Dest is where a config's deliveries go, for Destination.
	Dest func(C) string
}

// Validate returns the canonical form of the config Check accepts.
func (c Configs[C]) Validate(_ context.Context, p ValidateParams) (json.RawMessage, error) {
	cfg, err := c.Check(p)
	if err != nil {
		return nil, err
	}
	return EncodeConfig(cfg), nil
}

// Public returns the stored config without its secrets ({} when it does
// not parse).
func (c Configs[C]) Public(raw json.RawMessage) json.RawMessage {
	cfg, err := c.Parse(raw)
	if err != nil {
		return json.RawMessage(`{}`)
	}
	c.Hide(&cfg)
	return EncodeConfig(cfg)
}

// Destination is Dest of the stored config ("" when it does not parse).
func (c Configs[C]) Destination(raw json.RawMessage) string {
	cfg, err := c.Parse(raw)
	if err != nil {
		return ""
	}
	return c.Dest(cfg)
}

// Parse reads a stored config.
func (c Configs[C]) Parse(raw json.RawMessage) (C, error) { return ParseConfig[C](c.Name, raw) }

// ParseConfig reads a stored config of the named channel.
func ParseConfig[C any](name string, raw json.RawMessage) (C, error) {
	var cfg C
	if err := json.Unmarshal(raw, &cfg); err != nil {
		var zero C
		return zero, fmt.Errorf("%s config: %w", name, err)
	}
	return cfg, nil
}

// EncodeConfig is a config's canonical JSON. Configs hold strings,
// numbers, booleans and slices of them: encoding cannot fail.
func EncodeConfig(cfg any) json.RawMessage {
	b, _ := json.Marshal(cfg)
	return b
}

// MaxLingerMS is the largest linger_ms a broker config takes.
const MaxLingerMS = 1000

// Batching is the batch settings of a broker channel's config, embedded
// in it so they read "max_batch_events" and "linger_ms" in every one.
type Batching struct {
	// MaxBatchEvents bounds the events of one call to the broker; 0 in a
	// stored config (one written before the setting existed) means the
	// channel's default.
	MaxBatchEvents int `json:"max_batch_events"`
	// LingerMS is how long a partial batch waits for more events.
	LingerMS int `json:"linger_ms"`
}

// Check applies the default batch size (def, for 0) and checks both
// settings: max_batch_events 1..max, linger_ms 0..MaxLingerMS. Errors
// name the member.
func (b *Batching) Check(def, max int) error {
	if b.MaxBatchEvents == 0 {
		b.MaxBatchEvents = def
	}
	if b.MaxBatchEvents < 1 || b.MaxBatchEvents > max {
		return herald.FieldErrorf("max_batch_events", "max_batch_events must be between 1 and %d, got %d", max, b.MaxBatchEvents)
	}
	if b.LingerMS < 0 || b.LingerMS > MaxLingerMS {
		return herald.FieldErrorf("linger_ms", "linger_ms must be between 0 and %d, got %d", MaxLingerMS, b.LingerMS)
	}
	return nil
}

// Limits are the BatchLimits of the settings: def events when the stored
// config has none, up to maxBytes of payload.
func (b Batching) Limits(def, maxBytes int) BatchLimits {
	n := b.MaxBatchEvents
	if n <= 0 {
		n = def
	}
	return BatchLimits{MaxEvents: n, MaxBytes: maxBytes, Linger: time.Duration(b.LingerMS) * time.Millisecond}
}

// KeepSecret returns the secret an update stores in a member (field): the
// caller's when given (a "" removes it), else the stored one, but only
// while the destination stays the same: a stored secret never follows a
// subscription to another broker unless the caller gives it again.
func KeepSecret(given *string, stored string, sameDestination bool, field string) (string, error) {
	switch {
	case given != nil:
		return *given, nil
	case stored != "" && !sameDestination:
		return "", herald.FieldErrorf(field, "the broker changed: give the %s again (a stored %s is kept only for the broker it was given for), or \"\" to remove it", field, field)
	}
	return stored, nil
}

// PoolKey is the key of a pooled client (see Pool): the destination and
// every setting that makes two clients differ, secrets included; those
// enter only through a digest, so the key is harmless in a log.
func PoolKey(destination string, settings ...any) string {
	var b bytes.Buffer
	_ = json.NewEncoder(&b).Encode(settings) // strings, numbers, plain structs: cannot fail
	sum := sha256.Sum256(b.Bytes())
	return destination + "|" + hex.EncodeToString(sum[:12])
}

// Results are the per-event outcomes of one Batcher call, filled in as
// the broker answers. The zero Outcome means "not settled yet".
type Results struct {
	batch []Delivery
	res   []herald.DeliveryResult
	start time.Time
}

// NewResults starts the bookkeeping of a batch, timed from now.
func NewResults(batch []Delivery) *Results {
	return &Results{batch: batch, res: make([]herald.DeliveryResult, len(batch)), start: time.Now()}
}

// Delivered marks event i delivered.
func (r *Results) Delivered(i int) { r.res[i] = herald.DeliveryResult{Outcome: herald.Delivered} }

// Fail marks event i failed, to retry.
func (r *Results) Fail(i int, reason, detail string) {
	r.res[i] = herald.DeliveryResult{Outcome: herald.Failed, Err: reason, Detail: detail}
}

// FailRest marks every event from index from on that is not settled yet
// failed: what a broken connection or a deadline leaves unanswered.
func (r *Results) FailRest(from int, reason, detail string) {
	for i := from; i < len(r.res); i++ {
		if r.res[i].Outcome == 0 {
			r.Fail(i, reason, detail)
		}
	}
}

// Settled reports whether event i has an outcome.
func (r *Results) Settled(i int) bool { return r.res[i].Outcome != 0 }

// Outcome is event i's outcome so far.
func (r *Results) Outcome(i int) herald.DeliveryOutcome { return r.res[i].Outcome }

// Done fails what is still unsettled (reason, detail: the call ended
// without its answer), keeps per-key order across failures (KeepKeyOrder)
// and stamps every result with the batch's latency; it returns the
// results for DeliverBatch.
func (r *Results) Done(reason, detail string) []herald.DeliveryResult {
	r.FailRest(0, reason, detail)
	KeepKeyOrder(r.batch, r.res)
	took := time.Since(r.start)
	for i := range r.res {
		if r.res[i].Latency == 0 {
			r.res[i].Latency = took
		}
	}
	return r.res
}

// Wait waits for done or ctx, whichever comes first, and reports whether
// done came: the shared shape of waiting for a broker's acknowledgement.
func Wait(ctx context.Context, done <-chan struct{}) bool {
	select {
	case <-done:
		return true
	case <-ctx.Done():
		return false
	}
}

// DeliverOne is Sink.Deliver for a Batcher: a batch of one.
func DeliverOne(ctx context.Context, b Batcher, ev *herald.Event, attempt int) herald.DeliveryResult {
	return b.DeliverBatch(ctx, []Delivery{{Event: ev, Attempt: attempt}})[0]
}
