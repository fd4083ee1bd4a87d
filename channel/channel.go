// Package channel is the seam between the engine and the destinations a
// subscription delivers to: webhooks, brokers, people, the archive, rules.
//
// A subscription names a channel ("webhook", "kafka", ...) and carries that
// channel's config. The channel alone reads the config: it validates it when
// the subscription is written, hides its secrets when it is shown, and opens
// a Sink for it when a node takes the subscription's dispatch lease. The
// engine keeps everything else, the same for every channel: cursors,
// retries with backoff, dead letters, per-key order, leases, pause and
// resume, the attempt log, limits and metrics.
//
// Optional capabilities are separate interfaces, found by type assertion:
// a Sink that is a Batcher takes several events per call; a Channel that is
// a Verifier proves an endpoint agreed to receive before delivery starts; a
// Channel that is a Rotator rotates a signing secret.
//
// Every channel passes the conformance suite in channel/channeltest against
// its real service.
package channel

import (
	"bytes"
	"context"
	"encoding/json"
	"sort"
	"strings"
	"time"

	"github.com/heraldhq/herald"
)

// Channel is one kind of destination. Its methods are safe for concurrent
// use.
type Channel interface {
	// Name is the value of Subscription.Channel this channel serves: a
	// short lower-case word, stable on the wire.
	Name() string

	// Validate checks a subscription's config and returns it in canonical
	// form: defaults applied, members normalized, secrets kept. On an
	// update, p.Previous is the stored config, so a caller that leaves out
	// a secret keeps the stored one. Errors are *herald.Error with
	// CodeInvalid and a Field naming the member of the config at fault
	// ("url", "brokers"); the API reports it as "config.<member>".
	Validate(ctx context.Context, p ValidateParams) (json.RawMessage, error)

	// Public returns the config as callers may see it: every secret
	// removed. It is what responses, system events and logs carry. The
	// config is one Validate returned.
	Public(config json.RawMessage) json.RawMessage

	// Destination names where the config's deliveries go, for the
	// engine's fair share of send slots: subscriptions with the same
	// destination (a webhook host and port, a broker cluster, a mail
	// server) share one cap, so one hung server cannot hold every slot.
	// "" means the subscription is a destination of its own.
	Destination(config json.RawMessage) string

	// Open prepares delivery of the subscription on this node. The engine
	// calls it when a worker starts, that is once this node holds the
	// subscription's lease, and closes the Sink when the worker stops: a
	// channel whose state follows the lease (a rule's windows, an archive's
	// open file) opens and closes it here. Open should not wait for a
	// remote service: a destination that is down makes deliveries fail
	// (and retry), not Open. An error stops the worker, which starts again
	// at the next poll.
	Open(ctx context.Context, sub *herald.Subscription) (Sink, error)
}

// ValidateParams is what Channel.Validate checks.
type ValidateParams struct {
	// Config is the config as the caller wrote it (JSON; may be empty).
	Config json.RawMessage
	// Previous is the stored config when an existing subscription is
	// changed, nil when one is created.
	Previous json.RawMessage
	// Admin is true when an administrator makes the change: some options
	// (a trusted internal destination, say) are theirs only.
	Admin bool
	// Tenant is the tenant the subscription belongs to ("" for the
	// platform): a channel resolving names (a template library) looks in
	// the tenant's first.
	Tenant string
	// Internal is true when Herald itself writes the subscription for a
	// resource of its own (a rule, an archive), not a caller of
	// /v1/subscriptions. A channel that only such resources may use
	// refuses a config when it is false.
	Internal bool
}

// Sink delivers the events of one subscription. The engine calls Deliver
// from many goroutines at once (up to the subscription's max_in_flight),
// never after Close.
type Sink interface {
	// Deliver hands one event to the destination and reports the outcome:
	// Delivered once the destination accepted it (a 2xx, a broker's
	// acknowledgement), Failed to retry later (RetryAfter, when set, is the
	// shortest wait), Gone when the destination asked never to be called
	// again (the subscription is disabled). attempt counts from 1. Deliver
	// must return by ctx's deadline; the engine sets it from the
	// subscription's timeout, starting when the send can begin.
	Deliver(ctx context.Context, ev *herald.Event, attempt int) herald.DeliveryResult

	// Close releases what Open took (its share of a pooled connection, a
	// file). In-flight Deliver calls have returned when it is called.
	Close(ctx context.Context) error
}

// Parkable is a Sink that holds nothing between deliveries but what Open
// makes again from the subscription (a webhook's parsed URL and signing
// key). The engine closes it when the subscription's worker parks, caught
// up, and opens a new one when something wakes the worker: an idle
// subscription then keeps no sink in memory. A sink with state that
// follows the lease (a rule's windows, an open file) must not be Parkable.
type Parkable interface {
	Sink
	Parkable()
}

// SelfTimed is a Sink whose Deliver bounds its own time by the
// subscription's timeout (the webhook sink's HTTP request carries that
// deadline). The engine then hands it a context without a deadline of its
// own: a timer and a context fewer per delivery, which counted on the
// publish-and-deliver path (issue 20). A Sink that is not SelfTimed gets
// the deadline Deliver's comment describes.
type SelfTimed interface {
	Sink
	// SelfTimed marks the Sink; it is never called.
	SelfTimed()
}

// Delivery is one event handed to a Batcher, with its attempt number.
type Delivery struct {
	Event   *herald.Event
	Attempt int
}

// BatchLimits bound what the engine hands a Batcher in one call.
type BatchLimits struct {
	MaxEvents int           // at least 1
	MaxBytes  int           // payload bytes; 0 means no bound beyond MaxEvents
	Linger    time.Duration // how long a partial batch may wait for more events; 0 sends at once
}

// Batcher is a Sink that takes several events in one call, for
// destinations where one round trip per event would waste most of the time
// (brokers, files). The engine gathers ready events up to the limits and
// counts one call as one of the subscription's max_in_flight.
type Batcher interface {
	Sink
	// BatchLimits are fixed for the Sink's life.
	BatchLimits() BatchLimits
	// DeliverBatch delivers the events, in order, and returns one result
	// per event, in the same order. Events of one key are in seq order in
	// the batch; a Batcher that cannot keep per-key order when one event of
	// a key fails must report the later events of that key Failed too.
	DeliverBatch(ctx context.Context, batch []Delivery) []herald.DeliveryResult
}

// Progress is where a subscription will stand once every event of a batch
// is delivered, for a ProgressBatcher to commit with its own writes.
type Progress struct {
	SubscriptionID string
	// Epoch is the lease epoch the node dispatches under: a commit under
	// an older one must fail (herald.StateBatch checks it).
	Epoch int64
	// Cursors are the subscription's cursors with the batch delivered, in
	// the topics where the batch moves them: every event at or below
	// each is settled then. A cursor only advances.
	Cursors []herald.Cursor
}

// ProgressBatcher is a Batcher that commits the subscription's progress
// itself, in the transaction that holds its own effect (a rule's state
// and the events it emits): after a crash its input is not delivered
// again past what it committed, and its commit fails once the node has
// lost the lease. The engine still settles the events as usual; the
// cursors it writes then only repeat these.
type ProgressBatcher interface {
	Batcher
	// DeliverBatchAt is DeliverBatch with the progress to commit.
	DeliverBatchAt(ctx context.Context, batch []Delivery, p Progress) []herald.DeliveryResult
}

// Verifier is a Channel whose subscriptions start pending until their
// endpoint proves it agreed to receive. The engine calls Verify on the
// challenge schedule until the subscription's verification deadline.
type Verifier interface {
	// Verify sends the proof request for sub (its Challenge token is set).
	// Delivered means the endpoint proved it there and then (a webhook
	// echoed the challenge); Sent means a request to confirm went out and
	// the confirmation arrives out of band (a link in an email, a code by
	// SMS); Failed means try again later.
	Verify(ctx context.Context, sub *herald.Subscription) herald.DeliveryResult

	// Reverify reports whether changing a subscription's config from
	// previous to next points it at an endpoint that has not proved it
	// agreed to receive (a new URL, a new address): it must verify again.
	Reverify(previous, next json.RawMessage) bool
}

// Rotator is a Channel whose configs hold a signing secret that callers
// read (GET .../secret) and rotate.
type Rotator interface {
	// Secrets returns the config's current signing secret and, during a
	// rotation's grace period, the previous one with when it stops being
	// used (zero values otherwise).
	Secrets(config json.RawMessage, now time.Time) Secrets
	// Rotate returns the config with a new current secret (secret, or a
	// fresh one when secret is ""), the old one kept valid until
	// now+grace, and the secrets as they now are. Errors name the field
	// "secret".
	Rotate(config json.RawMessage, secret string, now time.Time, grace time.Duration) (json.RawMessage, Secrets, error)
}

// Secrets are a config's signing secrets, as a Rotator reports them.
type Secrets struct {
	Secret            string
	PreviousSecret    string
	PreviousExpiresAt time.Time
}

// Registry holds the channels a server offers, by name. It is built once
// at start and read-only afterwards, so it is safe for concurrent use.
type Registry struct {
	byName map[string]Channel
}

// NewRegistry returns a registry of the channels; a repeated name is a
// wiring bug and panics.
func NewRegistry(channels ...Channel) *Registry {
	r := &Registry{byName: make(map[string]Channel, len(channels))}
	for _, c := range channels {
		if _, dup := r.byName[c.Name()]; dup {
			panic("channel: " + c.Name() + " registered twice")
		}
		r.byName[c.Name()] = c
	}
	return r
}

// Get returns the named channel, or a CodeInvalid error naming the field
// "channel" and the channels there are.
func (r *Registry) Get(name string) (Channel, error) {
	if c, ok := r.byName[name]; ok {
		return c, nil
	}
	return nil, herald.FieldErrorf("channel", "unknown channel %q; this server offers: %s", name, strings.Join(r.Names(), ", "))
}

// Names returns the names of the registered channels, sorted.
func (r *Registry) Names() []string {
	names := make([]string, 0, len(r.byName))
	for n := range r.byName {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Has reports whether the named channel is registered.
func (r *Registry) Has(name string) bool {
	_, ok := r.byName[name]
	return ok
}

// DecodeConfig reads a config object into v strictly, for a channel's
// Validate: an unknown member is an error naming it, so a misspelt setting
// is not silently ignored; an empty config is an empty object. Errors are
// *herald.Error with CodeInvalid and the member as the field.
func DecodeConfig(raw json.RawMessage, v any) error {
	if len(bytes.TrimSpace(raw)) == 0 || string(bytes.TrimSpace(raw)) == "null" {
		raw = []byte("{}")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		msg := err.Error()
		if name, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
			name = strings.Trim(name, `"`)
			return herald.FieldErrorf(name, "unknown config member %q", name)
		}
		if te, ok := err.(*json.UnmarshalTypeError); ok && te.Field != "" {
			return herald.FieldErrorf(te.Field, "%s has the wrong type: want %s", te.Field, te.Type)
		}
		return herald.FieldErrorf("", "the config must be a JSON object: %v", err)
	}
	return nil
}
