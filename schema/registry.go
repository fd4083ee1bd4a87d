package schema

import (
	"bytes"
	"context"
	"sync"
	"time"

	"github.com/heraldhq/herald"
)

// DefaultCacheTTL is how long a Registry trusts what it read of a topic's
// schema: a schema changed through another node applies here within it.
const DefaultCacheTTL = 5 * time.Second

// Registry is the topics' schemas over the store, compiled and cached. It
// is safe for concurrent use and owns no goroutine.
type Registry struct {
	store herald.SchemaStore
	ttl   time.Duration
	now   func() time.Time

	mu    sync.Mutex
	cache map[string]cached
}

type cached struct {
	c  *Compiled // nil: the topic has no schema
	at time.Time
}

// maxCached bounds the cache; past it the cache starts over.
const maxCached = 10000

// NewRegistry returns a registry over store; ttl 0 means DefaultCacheTTL.
func NewRegistry(store herald.SchemaStore, ttl time.Duration) *Registry {
	if ttl <= 0 {
		ttl = DefaultCacheTTL
	}
	return &Registry{store: store, ttl: ttl, now: time.Now, cache: map[string]cached{}}
}

// Get returns the topic's newest schema compiled, or nil when it has none.
func (r *Registry) Get(ctx context.Context, topic string) (*Compiled, error) {
	now := r.now()
	r.mu.Lock()
	e, ok := r.cache[topic]
	r.mu.Unlock()
	if ok && now.Sub(e.at) < r.ttl {
		return e.c, nil
	}
	s, err := r.store.GetSchema(ctx, topic, 0)
	var c *Compiled
	switch {
	case herald.IsCode(err, herald.CodeNotFound):
	case err != nil:
		return nil, err
	default:
		if ok && e.c != nil && e.c.Schema.Version == s.Version {
			c = e.c
		} else if c, err = Compile(s); err != nil {
			return nil, err
		}
	}
	r.remember(topic, c, now)
	return c, nil
}

func (r *Registry) remember(topic string, c *Compiled, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.cache) >= maxCached {
		clear(r.cache)
	}
	r.cache[topic] = cached{c: c, at: at}
}

// Validate checks a payload against the topic's schema (nil when the
// topic has none); see Compiled.Validate.
func (r *Registry) Validate(ctx context.Context, topic string, payload []byte, contentType string) error {
	c, err := r.Get(ctx, topic)
	if err != nil || c == nil {
		return err
	}
	return c.Validate(payload, contentType)
}

// JSON renders a payload of the topic as JSON (protobuf through protojson);
// see Compiled.JSON.
func (r *Registry) JSON(ctx context.Context, topic string, payload []byte, contentType string) ([]byte, error) {
	c, err := r.Get(ctx, topic)
	if err != nil {
		return nil, err
	}
	return c.JSON(payload, contentType)
}

// Put compiles s and stores it as the topic's next version. Unless force,
// it must be compatible with the current version (CodeConflict otherwise).
// A schema equal to the current version is that version: nothing is
// stored.
func (r *Registry) Put(ctx context.Context, s herald.Schema, force bool) (herald.Schema, error) {
	next, err := Compile(s)
	if err != nil {
		return herald.Schema{}, err
	}
	prev, err := r.store.GetSchema(ctx, s.Topic, 0)
	switch {
	case herald.IsCode(err, herald.CodeNotFound):
	case err != nil:
		return herald.Schema{}, err
	case prev.Kind == s.Kind && prev.Format == s.Format && prev.Message == s.Message && bytes.Equal(prev.Definition, s.Definition):
		// The same schema again (a deployment applying its config at
		// every start): no new version.
		return prev, nil
	case !force:
		if pc, err := Compile(prev); err == nil {
			if err := Compatible(pc, next); err != nil {
				return herald.Schema{}, err
			}
		}
	}
	stored, err := r.store.AddSchema(ctx, s)
	if err != nil {
		return herald.Schema{}, err
	}
	next.Schema = stored
	r.remember(s.Topic, next, r.now())
	return stored, nil
}

// Delete removes the topic's schema; CodeNotFound when it has none.
func (r *Registry) Delete(ctx context.Context, topic string) error {
	err := r.store.DeleteSchemas(ctx, topic)
	r.Forget(topic)
	return err
}

// Forget drops what the registry cached of the topic (it was deleted).
func (r *Registry) Forget(topic string) {
	r.mu.Lock()
	delete(r.cache, topic)
	r.mu.Unlock()
}
