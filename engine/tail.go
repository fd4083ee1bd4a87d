package engine

import (
	"sync"

	"github.com/heraldhq/herald"
)

// TailConfig bounds the tail cache. Zero values mean the defaults.
type TailConfig struct {
	MaxBytes  int64 // payload bytes held across all topics; default 64 MiB
	MaxEvents int   // events held across all topics; default 65536
}

// Tail keeps the newest committed events of every topic in memory, so the
// many dispatchers and streams reading at the head of a topic do not each
// query the store. It is fed by the committer after each commit and evicts
// in commit order once over its bounds. Safe for concurrent use.
type Tail struct {
	cfg TailConfig

	mu     sync.RWMutex
	topics map[string]*tailRing
	order  []*herald.Event // commit order across topics: the eviction queue
	head   int             // index of the oldest live entry in order
	bytes  int64
}

type tailRing struct {
	events []*herald.Event // consecutive seqs, oldest first
	start  int             // index of the oldest live event in events
}

func (r *tailRing) live() []*herald.Event { return r.events[r.start:] }

// NewTail returns an empty tail cache.
func NewTail(cfg TailConfig) *Tail {
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = 64 << 20
	}
	if cfg.MaxEvents <= 0 {
		cfg.MaxEvents = 65536
	}
	return &Tail{cfg: cfg, topics: make(map[string]*tailRing)}
}

// Add records committed events; the committer calls it after each commit.
// Events of one topic must come in seq order; a gap (say, events committed
// by another node) resets that topic's ring so reads never skip an event.
func (t *Tail) Add(events []*herald.Event) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, e := range events {
		r := t.topics[e.Topic]
		if r == nil {
			r = &tailRing{}
			t.topics[e.Topic] = r
		}
		if l := r.live(); len(l) > 0 && l[len(l)-1].Seq+1 != e.Seq {
			r.events, r.start = r.events[:0], 0 // gap: forget, readers go to the store
		}
		r.events = append(r.events, e)
		t.order = append(t.order, e)
		t.bytes += int64(len(e.Payload))
	}
	for len(t.order)-t.head > t.cfg.MaxEvents || t.bytes > t.cfg.MaxBytes {
		t.evictOldest()
	}
	if t.head > len(t.order)/2 && t.head > 1024 {
		t.order = append(t.order[:0:0], t.order[t.head:]...)
		t.head = 0
	}
}

func (t *Tail) evictOldest() {
	e := t.order[t.head]
	t.order[t.head] = nil
	t.head++
	t.bytes -= int64(len(e.Payload))
	r := t.topics[e.Topic]
	if r == nil {
		return
	}
	l := r.live()
	if len(l) == 0 || l[0] != e {
		return // the ring was reset after a gap; e is no longer in it
	}
	r.events[r.start] = nil
	r.start++
	if r.start == len(r.events) {
		delete(t.topics, e.Topic)
	} else if r.start > len(r.events)/2 && r.start > 256 {
		r.events = append(r.events[:0:0], r.events[r.start:]...)
		r.start = 0
	}
}

// Listener is the tail's part in a Feed, at StageCache: it keeps this
// node's commits, forgets a topic deleted anywhere, and forgets a topic
// another node committed past what it has seen, so readers go to the
// store rather than be told "nothing newer" by a cache that only saw this
// node's share of the topic.
func (t *Tail) Listener() Listener {
	return Listener{
		Committed: t.Add,
		RemoteCommitted: func(topic string, head int64) {
			if t.Head(topic) < head {
				t.Forget(topic)
			}
		},
		TopicDeleted: t.Forget,
	}
}

// Forget drops a topic (it was deleted).
func (t *Tail) Forget(topic string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.topics, topic)
}

// Read returns up to limit cached events of the topic with seq > afterSeq,
// in order. ok is false when the cache cannot answer for sure (the event
// after afterSeq is older than the cache or unknown to it): read the store.
// With ok true and no events, nothing newer than afterSeq has been seen.
// The events are shared: callers must not modify them.
func (t *Tail) Read(topic string, afterSeq int64, limit int) (events []*herald.Event, ok bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	r := t.topics[topic]
	if r == nil {
		return nil, false
	}
	l := r.live()
	if len(l) == 0 {
		return nil, false
	}
	first, last := l[0].Seq, l[len(l)-1].Seq
	switch {
	case afterSeq >= last:
		return nil, true
	case afterSeq+1 < first:
		return nil, false
	}
	l = l[afterSeq+1-first:]
	if len(l) > limit {
		l = l[:limit]
	}
	return append([]*herald.Event(nil), l...), true
}

// Head returns the newest seq the cache has seen for the topic (0 if none).
func (t *Tail) Head(topic string) int64 {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if r := t.topics[topic]; r != nil {
		if l := r.live(); len(l) > 0 {
			return l[len(l)-1].Seq
		}
	}
	return 0
}
