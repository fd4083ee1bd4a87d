package engine

import (
	"context"
	"sync"
	"time"

	"github.com/heraldhq/herald"
)

// TopicsConfig tunes the topic cache. Zero values mean the defaults.
type TopicsConfig struct {
	// TTL is how long a topic's settings are served from memory before the
	// store is asked again; it bounds how long a change made on another node
	// takes to be seen here. Default 5s.
	TTL time.Duration
	// MissTTL is how long "no such topic" is remembered, so a flood of
	// publishes to a missing topic does not each query the store. Default 1s.
	MissTTL time.Duration
	// MaxEntries bounds the cache; when full it is emptied. Default 10000.
	MaxEntries int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Topics is a cached view of topic settings over the store, for the publish
// path that needs a topic's limits on every request. Changes made through it
// are seen at once on this node. Statistics (HeadSeq, FirstSeq) in cached
// topics are stale: read them from the store.
type Topics struct {
	store herald.Store
	cfg   TopicsConfig

	mu sync.Mutex
	m  map[string]topicEntry
}

type topicEntry struct {
	topic   herald.Topic
	missing bool
	expires time.Time
}

// NewTopics returns a topic cache over the store.
func NewTopics(store herald.Store, cfg TopicsConfig) *Topics {
	if cfg.TTL <= 0 {
		cfg.TTL = 5 * time.Second
	}
	if cfg.MissTTL <= 0 {
		cfg.MissTTL = time.Second
	}
	if cfg.MaxEntries <= 0 {
		cfg.MaxEntries = 10000
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Topics{store: store, cfg: cfg, m: make(map[string]topicEntry)}
}

// Get returns the topic's settings, or CodeNotFound.
func (t *Topics) Get(ctx context.Context, name string) (herald.Topic, error) {
	now := t.cfg.Now()
	t.mu.Lock()
	e, ok := t.m[name]
	t.mu.Unlock()
	if ok && now.Before(e.expires) {
		if e.missing {
			return herald.Topic{}, herald.Errorf(herald.CodeNotFound, "topic %q does not exist", name)
		}
		return e.topic, nil
	}
	topic, err := t.store.GetTopic(ctx, name)
	switch {
	case herald.IsCode(err, herald.CodeNotFound):
		t.set(name, topicEntry{missing: true, expires: now.Add(t.cfg.MissTTL)})
		return herald.Topic{}, err
	case err != nil:
		return herald.Topic{}, err
	}
	t.set(name, topicEntry{topic: topic, expires: now.Add(t.cfg.TTL)})
	return topic, nil
}

// Put creates or updates the topic in the store and caches the result.
func (t *Topics) Put(ctx context.Context, topic herald.Topic) (herald.Topic, bool, error) {
	stored, created, err := t.store.PutTopic(ctx, topic)
	if err != nil {
		return herald.Topic{}, false, err
	}
	t.set(stored.Name, topicEntry{topic: stored, expires: t.cfg.Now().Add(t.cfg.TTL)})
	return stored, created, nil
}

// Delete removes the topic from the store and the cache.
func (t *Topics) Delete(ctx context.Context, name string) error {
	err := t.store.DeleteTopic(ctx, name)
	t.Forget(name)
	return err
}

// Listener is the topic cache's part in a Feed, at StageCache: a topic
// deleted anywhere is forgotten.
func (t *Topics) Listener() Listener { return Listener{TopicDeleted: t.Forget} }

// Forget drops the topic from the cache, so its settings are read from the
// store again: the cluster calls it when another node deleted the topic,
// so a topic created again under the name is not served with the old one's
// settings for up to TTL.
func (t *Topics) Forget(name string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.m, name)
}

func (t *Topics) set(name string, e topicEntry) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.m) >= t.cfg.MaxEntries {
		clear(t.m)
	}
	t.m[name] = e
}
