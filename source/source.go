// Package source is the seam between Herald and the places events already
// are: brokers, an application's transactional outbox, inbound webhooks.
//
// A source (herald.Source) names a Kind ("outbox", "kafka", "webhook",
// ...) and carries that kind's config; the kind alone reads it. A kind turns
// what its service holds into Messages; the runtime (Runtime) maps each
// Message to an event by the source's topic template and mapping rules and
// publishes it through engine.Publisher, so every rule of publishing
// applies. Each Message carries a deterministic idempotency key (a broker
// partition and offset, an outbox row id, an inbound delivery id), so a
// redelivery from the service is a duplicate in Herald: at least once in,
// deduplicated, never lost. A kind advances its position in its service
// (commits an offset, deletes a row, acks) only after Publish returned,
// that is after Herald's commit.
//
// Everything else is the runtime's and the same for every kind: shards
// leased to one node at a time with fencing epochs, retries with backoff,
// status (lag, counts, last error) and metrics.
package source

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"slices"
	"time"

	"github.com/heraldhq/herald"
)

// Kind is one kind of source. Its methods are safe for concurrent use.
type Kind interface {
	// Name is the value of Source.Kind this kind serves.
	Name() string

	// Validate checks a source's config and returns it in canonical form:
	// defaults applied, secrets kept from previous (the stored config on
	// an update, nil on create) when the caller left them out. Errors are
	// *herald.Error with CodeInvalid and a Field naming the member
	// ("dsn"); the API reports it as "config.<member>".
	Validate(config, previous json.RawMessage) (json.RawMessage, error)

	// Public returns the config without its secrets, for responses and
	// logs. The config is one Validate returned.
	Public(config json.RawMessage) json.RawMessage
}

// Runner is a Kind that pulls from a service: the runtime runs each shard
// of each active source on the node that holds the shard's lease.
type Runner interface {
	Kind
	// Run takes messages from the service for one shard and hands them to
	// sh.Publish, advancing its position in the service only after
	// Publish returned nil, until ctx ends (it then returns ctx's error or
	// nil) or it fails (it returns why; the runtime retries it after a
	// backoff). Run must return soon after ctx ends.
	Run(ctx context.Context, sh *Shard) error
}

// Receiver is a Kind that is pushed to: inbound webhooks arrive at
// POST /v1/inbound/{source}. The runtime runs nothing for it.
type Receiver interface {
	Kind
	// Receive checks an inbound request (its signature, for one) and
	// returns the message it carries. body is the raw body, byte for
	// byte. A request that fails verification returns a *herald.Error
	// with CodeUnauthorized.
	Receive(config json.RawMessage, header http.Header, body []byte, now time.Time) (Message, error)
}

// Message is one message from a source's service, before mapping.
type Message struct {
	// Topic is the message's topic, subject, queue or outbox row topic:
	// what "{topic}" in a template reads.
	Topic string
	// Key, Type and ID are what the service says of them: "{key}",
	// "{type}" and "{id}" in templates, and the event's key, type and id
	// under the default mapping.
	Key, Type, ID string
	// Headers are the message's headers, carried to the event under the
	// default mapping (names that cannot be event headers are skipped),
	// and read by "{header.NAME}".
	Headers map[string]string
	// Meta are more values templates may read ("{header.NAME}" looks here
	// after Headers) that are not carried by default: an inbound request's
	// HTTP headers, for one.
	Meta        map[string]string
	ContentType string
	Payload     []byte
	// IdempotencyKey identifies the message in its service, the same on
	// every redelivery: "p3@1042" (partition and offset), "row:77". The
	// runtime prefixes it with the source id.
	IdempotencyKey string
}

// Shard is one shard of a source as a Runner sees it.
type Shard struct {
	Source herald.Source
	// Index is this shard's number, from 0 to Count-1.
	Index, Count int
	Logger       *slog.Logger

	publish func(ctx context.Context, msgs []Message) error
	lag     func(n int64)
	running func()
}

// Running tells the runtime that the kind reached its service (connected,
// subscribed, joined its group): the shard's status shows it running, no
// longer starting or retrying, until the next failure. A committed batch
// says the same.
func (sh *Shard) Running() {
	if sh.running != nil {
		sh.running()
	}
}

// Publish maps the messages to events and commits them, all or none, in
// order. It returns after Herald's commit: only then may the caller advance
// its position in the service. An error means nothing needs to be
// considered committed; the caller returns it (or retries).
func (sh *Shard) Publish(ctx context.Context, msgs []Message) error {
	return sh.publish(ctx, msgs)
}

// SetLag reports how many messages wait in the service for this shard; -1
// when unknown.
func (sh *Shard) SetLag(n int64) {
	if sh.lag != nil {
		sh.lag(n)
	}
}

// Registry maps kind names to kinds. It is built once, at start, and
// read-only after.
type Registry struct {
	kinds map[string]Kind
}

// NewRegistry returns a registry of the kinds.
func NewRegistry(kinds ...Kind) *Registry {
	r := &Registry{kinds: map[string]Kind{}}
	for _, k := range kinds {
		r.kinds[k.Name()] = k
	}
	return r
}

// Get returns the kind with the name.
func (r *Registry) Get(name string) (Kind, bool) {
	k, ok := r.kinds[name]
	return k, ok
}

// Names returns the registered kinds' names, sorted.
func (r *Registry) Names() []string {
	var out []string
	for n := range r.kinds {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}
