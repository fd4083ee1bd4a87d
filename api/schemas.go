package api

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/heraldhq/herald"
)

// Schemas registers and checks topics' schemas (schema.Registry
// implements it).
type Schemas interface {
	// Put compiles the schema and stores it as the topic's next version,
	// refusing (CodeConflict) one incompatible with the current version
	// unless force.
	Put(ctx context.Context, s herald.Schema, force bool) (herald.Schema, error)
	// Delete removes the topic's schema; CodeNotFound when it has none.
	Delete(ctx context.Context, topic string) error
	// Forget drops what is cached of a deleted topic's schema.
	Forget(topic string)
	// JSON renders a payload of the topic as JSON: protobuf through its
	// schema; anything else as it is.
	JSON(ctx context.Context, topic string, payload []byte, contentType string) ([]byte, error)
}

// maxSchemaBody bounds PUT .../schema: the largest definition, base64 and
// JSON quoting included.
const maxSchemaBody = herald.MaxSchemaBytes*4/3 + 64<<10

// schemaBody is PUT /v1/topics/{topic}/schema: a JSON Schema, or a
// protobuf message from .proto source or a base64 FileDescriptorSet.
type schemaBody struct {
	Type          string          `json:"type"`
	Schema        json.RawMessage `json:"schema,omitempty"`
	Proto         string          `json:"proto,omitempty"`
	DescriptorSet string          `json:"descriptor_set,omitempty"`
	Message       string          `json:"message,omitempty"`
	Force         bool            `json:"force,omitempty"`
}

// schemaJSON is a schema version on the wire.
type schemaJSON struct {
	Topic         string          `json:"topic"`
	Version       int             `json:"version"`
	Type          string          `json:"type"`
	Schema        json.RawMessage `json:"schema,omitempty"`
	Proto         string          `json:"proto,omitempty"`
	DescriptorSet string          `json:"descriptor_set,omitempty"`
	Message       string          `json:"message,omitempty"`
	CreatedAt     string          `json:"created_at"`
}

func toSchemaJSON(s herald.Schema) schemaJSON {
	out := schemaJSON{Topic: s.Topic, Version: s.Version, Type: s.Kind, Message: s.Message, CreatedAt: formatTime(s.CreatedAt)}
	switch {
	case s.Kind == herald.SchemaJSON:
		out.Schema = json.RawMessage(s.Definition)
	case s.Format == "descriptor_set":
		out.DescriptorSet = base64.StdEncoding.EncodeToString(s.Definition)
	default:
		out.Proto = string(s.Definition)
	}
	return out
}

func (b schemaBody) schema(topic string) (herald.Schema, error) {
	s := herald.Schema{Topic: topic, Kind: b.Type, Message: b.Message}
	switch b.Type {
	case herald.SchemaJSON, "jsonschema", "json":
		s.Kind = herald.SchemaJSON
		if len(b.Schema) == 0 {
			return s, herald.FieldErrorf("schema", "a json_schema needs its schema: a JSON Schema (draft 2020-12) object")
		}
		if b.Message != "" || b.Proto != "" || b.DescriptorSet != "" {
			return s, herald.FieldErrorf("type", "proto, descriptor_set and message are for protobuf schemas")
		}
		s.Definition = b.Schema
	case herald.SchemaProtobuf, "proto":
		s.Kind = herald.SchemaProtobuf
		switch {
		case (b.Proto == "") == (b.DescriptorSet == ""):
			return s, herald.FieldErrorf("proto", "a protobuf schema needs exactly one of proto (.proto source) and descriptor_set (a base64 FileDescriptorSet)")
		case b.Proto != "":
			s.Format, s.Definition = "proto", []byte(b.Proto)
		default:
			raw, err := base64.StdEncoding.DecodeString(b.DescriptorSet)
			if err != nil {
				return s, herald.FieldErrorf("descriptor_set", "descriptor_set must be base64: %v", err)
			}
			s.Format, s.Definition = "descriptor_set", raw
		}
		if len(b.Schema) > 0 {
			return s, herald.FieldErrorf("schema", "schema is for json_schema; a protobuf schema gives proto or descriptor_set")
		}
	case "":
		return s, herald.FieldErrorf("type", "type is required: %q or %q", herald.SchemaJSON, herald.SchemaProtobuf)
	default:
		return s, herald.FieldErrorf("type", "type must be %q or %q, got %q", herald.SchemaJSON, herald.SchemaProtobuf, b.Type)
	}
	return s, nil
}

// userTopic returns the {topic} path value of a topic callers may change.
func userTopic(r *http.Request) (string, error) {
	name, err := topicName(r)
	if err != nil {
		return "", err
	}
	if herald.IsSystemTopic(name) {
		return "", errReserved(name)
	}
	return name, nil
}

func (s *Server) schemasOr503() error {
	if s.schemas == nil {
		return herald.Errorf(herald.CodeUnavailable, "this server does not keep schemas")
	}
	return nil
}

func (s *Server) putSchema(w http.ResponseWriter, r *http.Request) error {
	if err := s.schemasOr503(); err != nil {
		return err
	}
	name, err := userTopic(r)
	if err != nil {
		return err
	}
	var body schemaBody
	if err := decodeJSON(w, r, maxSchemaBody, false, &body); err != nil {
		return err
	}
	sc, err := body.schema(name)
	if err != nil {
		return err
	}
	// A schema may come before the first event: the topic is created
	// with the defaults, as a publish would create it.
	if _, err := s.topics.Get(r.Context(), name); herald.IsCode(err, herald.CodeNotFound) {
		if _, _, err := s.topics.Put(r.Context(), herald.Topic{Name: name}.WithDefaults()); err != nil {
			return err
		}
	} else if err != nil {
		return err
	}
	stored, err := s.schemas.Put(r.Context(), sc, body.Force)
	if err != nil {
		return err
	}
	status := http.StatusOK
	if stored.Version == 1 {
		status = http.StatusCreated
	}
	return writeJSON(w, status, toSchemaJSON(stored))
}

func (s *Server) getSchema(w http.ResponseWriter, r *http.Request) error {
	name, err := topicName(r)
	if err != nil {
		return err
	}
	if err := authorize(r, herald.ActionRead, name); err != nil {
		return err
	}
	version := 0
	if v := r.URL.Query().Get("version"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return herald.FieldErrorf("version", "version must be a positive integer, got %q", v)
		}
		version = n
	}
	sc, err := s.store.GetSchema(r.Context(), name, version)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, toSchemaJSON(sc))
}

type schemaListJSON struct {
	Versions []schemaJSON `json:"versions"`
}

func (s *Server) listSchemaVersions(w http.ResponseWriter, r *http.Request) error {
	name, err := topicName(r)
	if err != nil {
		return err
	}
	if err := authorize(r, herald.ActionRead, name); err != nil {
		return err
	}
	list, err := s.store.ListSchemas(r.Context(), name)
	if err != nil {
		return err
	}
	out := schemaListJSON{Versions: make([]schemaJSON, 0, len(list))}
	for _, sc := range list {
		out.Versions = append(out.Versions, toSchemaJSON(sc))
	}
	return writeJSON(w, http.StatusOK, out)
}

func (s *Server) deleteSchema(w http.ResponseWriter, r *http.Request) error {
	if err := s.schemasOr503(); err != nil {
		return err
	}
	name, err := userTopic(r)
	if err != nil {
		return err
	}
	if err := s.schemas.Delete(r.Context(), name); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
