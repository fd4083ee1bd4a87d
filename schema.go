package herald

import (
	"context"
	"time"
)

// Schema kinds: what a topic's schema is written in.
const (
	SchemaJSON     = "json_schema" // a JSON Schema, draft 2020-12
	SchemaProtobuf = "protobuf"    // a protobuf message, from .proto source or a FileDescriptorSet
)

// Schema limits.
const (
	// MaxSchemaBytes bounds a schema's definition (JSON Schema text,
	// .proto source or FileDescriptorSet).
	MaxSchemaBytes = 256 << 10
	// MaxSchemaVersions bounds the versions a topic keeps; the oldest go.
	MaxSchemaVersions = 100
)

// Schema is one version of a topic's schema. Publishing to a topic with a
// schema validates every event against its newest version.
type Schema struct {
	Topic   string
	Version int    // 1, 2, ...: assigned by the store
	Kind    string // SchemaJSON or SchemaProtobuf
	// Definition is the JSON Schema document, the .proto source, or a
	// serialized FileDescriptorSet (see Format).
	Definition []byte
	// Format is how a protobuf Definition is written: "proto" (source) or
	// "descriptor_set"; "" for a JSON Schema.
	Format string
	// Message is the full name of the protobuf message the payloads are
	// ("deposits.v1.Deposit"); "" for a JSON Schema.
	Message   string
	CreatedAt time.Time
}

// SchemaStore keeps the versions of topics' schemas. Schemas are named by
// topic name; DeleteTopic removes the topic's schemas with it.
type SchemaStore interface {
	// AddSchema stores s as the topic's next version (one more than the
	// newest, 1 for the first) and returns it as stored. The topic must
	// exist (CodeNotFound otherwise). When the topic has more than
	// MaxSchemaVersions versions, the oldest are removed.
	AddSchema(ctx context.Context, s Schema) (Schema, error)

	// GetSchema returns the version of the topic's schema, the newest when
	// version is 0, or CodeNotFound.
	GetSchema(ctx context.Context, topic string, version int) (Schema, error)

	// ListSchemas returns the topic's versions, oldest first (none for a
	// topic without a schema).
	ListSchemas(ctx context.Context, topic string) ([]Schema, error)

	// DeleteSchemas removes every version of the topic's schema, so
	// publishing is no longer checked; CodeNotFound when there is none.
	DeleteSchemas(ctx context.Context, topic string) error
}
