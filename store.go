package herald

import (
	"context"
	"time"
)

// Store is the durable state behind Herald: topics, their event logs, dedup
// keys, API keys, and (through SubscriptionStore) subscriptions with their
// delivery state. It is the one big seam of the system: the engine and the
// API depend on it, never on a driver. Every implementation passes the
// conformance suite in store/storetest, which is the executable form of the
// contracts written here.
//
// All methods are safe for concurrent use. Errors that callers act on carry
// a Code (see Error): CodeNotFound, CodeConflict, CodeInvalid. Anything else
// is CodeInternal.
type Store interface {
	SubscriptionStore
	SchemaStore
	StateStore
	TenantStore
	AuditStore
	UsageStore

	// PutTopic creates the topic, or updates the settings of an existing
	// one (its name, creation time and seqs stay). It returns the stored
	// topic and whether it was created. Settings must be valid (callers
	// apply Topic.Validate); a zero DedupWindow turns deduplication off.
	PutTopic(ctx context.Context, t Topic) (Topic, bool, error)

	// GetTopic returns the topic with its statistics, or CodeNotFound.
	GetTopic(ctx context.Context, name string) (Topic, error)

	// ListTopics returns up to limit topics whose names sort after the
	// given name ("" for the first page), in name order, with statistics.
	ListTopics(ctx context.Context, after string, limit int) ([]Topic, error)

	// DeleteTopic removes the topic, its events and its dedup keys, or
	// returns CodeNotFound. A topic created again later starts at seq 1.
	DeleteTopic(ctx context.Context, name string) error

	// Append commits the events in one transaction and returns one result
	// per event, in order, after the commit is durable (it survives a crash
	// of the process and of the machine). Each event must have Topic and
	// Time set and valid metadata; Append sets Seq on each stored event,
	// and ID on each stored one that had none: a new NewID at its Time,
	// unique by construction.
	//
	// Seqs are per topic, gap-free and increasing: events of one topic in
	// one call get consecutive seqs in slice order, after every seq
	// committed before. An event whose IdempotencyKey was stored on its topic
	// less than the topic's DedupWindow before the event's Time (including
	// earlier in the same call) is not stored: its result has Duplicate set
	// and the first event's ID and Seq. An event whose topic does not exist
	// has Err with CodeNotFound and is not stored; the other events are.
	//
	// An event id is unique within its topic for the dedup window: an event
	// given an ID (by its producer), not a duplicate by its IdempotencyKey,
	// whose ID names the newest event of its topic with that id, stored
	// less than the DedupWindow before the event's Time (including earlier
	// in the same call), repeats it. With a byte-equal Payload it is a duplicate as above: not stored,
	// Duplicate set, that event's ID and Seq. With another Payload it
	// conflicts, and then Append stores nothing at all and returns
	// ErrAppendConflict with the results: each conflicting event's Err is
	// an EventIDConflict error (CodeConflict), each event that could not be
	// stored for another reason has its Err, and every other result is
	// zero. The caller drops what failed and appends the rest again, so one
	// producer's mistake does not fail the events it was grouped with. With
	// a DedupWindow of zero, ids are not checked. Outside the window, or
	// once retention removed the event, the id may name a new event.
	//
	// A non-nil error means nothing was stored.
	Append(ctx context.Context, events []*Event) ([]AppendResult, error)

	// ReadEvents returns up to limit events of the topic with seq > afterSeq,
	// in seq order. An unknown topic yields no events and no error.
	ReadEvents(ctx context.Context, topic string, afterSeq int64, limit int) ([]Event, error)

	// GetEvent returns the event of the topic with the id (the newest one if
	// a producer reused an id outside the dedup window, or on a topic
	// without one), or CodeNotFound.
	GetEvent(ctx context.Context, topic, id string) (Event, error)

	// SeqAtTime returns the seq of the first retained event of the topic
	// whose Time is at or after t, or HeadSeq+1 when there is none. It is the
	// starting point of a replay from a time.
	SeqAtTime(ctx context.Context, topic string, t time.Time) (int64, error)

	// Prune deletes up to limit events whose topic's retention has passed at
	// now, and dedup keys whose window has passed, oldest first, in short
	// transactions so publishing is not stalled. It returns how many rows it
	// deleted; callers repeat while the result is limit.
	//
	// Archives hold retention back: an event that an archive (ArchiveStore)
	// has not written yet (its seq is above the archive subscription's
	// cursor in the topic, or in that subscription's retry set; every event
	// of a matching topic where it has no cursor) is kept while the
	// subscription is active, and at most the archive's MaxHold past its
	// retention otherwise (see ArchiveHold). Retention still removes a
	// prefix of each log: Prune stops at the first event it keeps.
	// Dead letters do not hold.
	Prune(ctx context.Context, now time.Time, limit int) (int64, error)

	// CreateKey stores a new API key; CodeConflict if the ID exists.
	CreateKey(ctx context.Context, k APIKey) error

	// KeyByHash returns the key whose secret has the hash, or CodeNotFound.
	KeyByHash(ctx context.Context, hash []byte) (APIKey, error)

	// ListKeys returns every key, oldest first. Hashes are included.
	ListKeys(ctx context.Context) ([]APIKey, error)

	// DeleteKey removes the key, or returns CodeNotFound.
	DeleteKey(ctx context.Context, id string) error

	// Ping checks that the store can serve requests (for /readyz).
	Ping(ctx context.Context) error

	// Close releases the store's resources. Calls after Close fail.
	Close() error
}
