package herald

import (
	"context"
	"encoding/json"
	"time"
)

// SourceState is whether a source runs.
type SourceState string

// The states of a source. Only active sources run; a paused one keeps its
// position (in its service: a consumer group's offsets, the rows of an
// outbox) and resume continues from it.
const (
	SourceActive SourceState = "active"
	SourcePaused SourceState = "paused"
)

// Source limits.
const (
	MaxSources          = 1000
	MaxSourceShards     = 256
	MaxSourceConfigSize = 16 << 10
)

// Source feeds topics from outside Herald: a broker, an application's
// outbox table, inbound webhooks. Kind names the connector and Config is
// its settings (package source); Topic and Mapping say how a message
// becomes an event. Everything else (running, leases, backoff, metrics) is
// the source runtime's and the same for every kind.
type Source struct {
	ID   string // "src_..." from the API; a config-file source's own id
	Kind string // "outbox", "kafka", "webhook", ...
	// Config is the kind's settings in the canonical JSON its Validate
	// returned. It holds secrets (a password, a signing secret): only the
	// kind reads it, and callers see its public form.
	Config json.RawMessage
	// Topic is the target topic: a name, or a template with {...}
	// placeholders read from the message (package source).
	Topic string
	// Mapping is the canonical JSON of the rules for the event's key,
	// type, id and headers (package source reads it).
	Mapping     json.RawMessage
	Description string
	// Shards splits the source's work into this many parts, each run by
	// one node at a time under a lease: Kafka consumers, outbox key-hash
	// ranges, consumer workers. At least 1.
	Shards      int
	State       SourceState
	StateReason string
	// Tenant is the tenant the source belongs to ("" for the platform's):
	// its events count in the tenant's usage and publish rate, and land
	// only in its topics. It never changes.
	Tenant string
	// Managed marks a source declared in the server's configuration file:
	// the file is its truth, and the API does not change it.
	Managed   bool
	CreatedAt time.Time
	UpdatedAt time.Time
	// Version increases with every UpdateSource; UpdateSource refuses a
	// copy whose Version is not the stored one.
	Version int64
}

// SourceShard is one shard of a source as the store knows it: who runs it
// under which lease, and what its runner last reported.
type SourceShard struct {
	SourceID       string
	Shard          int
	Node           string    // the lease holder; "" when none
	LeaseExpiresAt time.Time // the lease's end
	Epoch          int64
	SourceShardStatus
}

// SourceShardStatus is what a shard's runner reports: how far behind its
// service it is, how many events it brought in, and its last error.
type SourceShardStatus struct {
	Lag         int64 // messages waiting in the service; -1 when unknown
	EventsIn    int64 // events published (duplicates included) since the runner started
	Duplicates  int64 // of EventsIn, those Herald had already (a redelivery), since the runner started
	Errors      int64 // errors since the runner started
	LastError   string
	LastErrorAt time.Time
	ReportedAt  time.Time
	// State is what the runner is doing: ShardStarting, ShardRunning or
	// ShardRetrying; "" before its first report.
	State ShardState
}

// ShardState is what a source shard's runner is doing.
type ShardState string

// The states of a shard's runner.
const (
	// ShardStarting: the shard holds its lease and is connecting to its
	// service.
	ShardStarting ShardState = "starting"
	// ShardRunning: the service answered (the kind connected, or a batch
	// was committed) since the last failure.
	ShardRunning ShardState = "running"
	// ShardRetrying: the last run failed (LastError says why); the shard
	// runs again after a backoff.
	ShardRetrying ShardState = "retrying"
)

// SourceStore keeps sources and the leases of their shards. Both stores
// implement it; storetest checks them alike.
type SourceStore interface {
	// CreateSource stores a new source; its stored Version starts at 0.
	// CodeConflict if the ID exists.
	CreateSource(ctx context.Context, s Source) error

	// GetSource returns the source, or CodeNotFound.
	GetSource(ctx context.Context, id string) (Source, error)

	// ListSources returns up to limit sources with IDs after the given one,
	// in ID order.
	ListSources(ctx context.Context, after string, limit int) ([]Source, error)

	// UpdateSource replaces the stored source's fields except ID, Kind,
	// CreatedAt and Version, if s.Version is the stored version, and
	// increments it. CodeNotFound if missing, CodeConflict (changing
	// nothing) when the version differs.
	UpdateSource(ctx context.Context, s Source) error

	// DeleteSource removes the source and its shards' leases and status.
	// CodeNotFound if missing.
	DeleteSource(ctx context.Context, id string) error

	// AcquireSourceLease gives node the right to run the shard of the
	// source until now+ttl and returns the lease epoch: the same epoch when
	// node holds a live lease already, the previous one plus one when the
	// lease was free, released or expired. CodeConflict when another node
	// holds a live lease; CodeNotFound when the source does not exist.
	AcquireSourceLease(ctx context.Context, id string, shard int, node string, now time.Time, ttl time.Duration) (int64, error)

	// ReleaseSourceLease ends node's lease on the shard if it still holds
	// it with this epoch; anything else is left as it is, without error.
	ReleaseSourceLease(ctx context.Context, id string, shard int, node string, epoch int64) error

	// ReportSource records the shard's status under the lease epoch:
	// CodeConflict, changing nothing, when epoch is not the shard's current
	// one (a fenced-out node's report never lands); CodeNotFound when the
	// source is gone.
	ReportSource(ctx context.Context, id string, shard int, epoch int64, st SourceShardStatus) error

	// SourceShards returns the shards of the source that ever had a lease,
	// in shard order.
	SourceShards(ctx context.Context, id string) ([]SourceShard, error)
}
