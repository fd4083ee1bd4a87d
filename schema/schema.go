// Package schema compiles topics' schemas (JSON Schema draft 2020-12, and
// protobuf messages from .proto source or a FileDescriptorSet), validates
// payloads against them, renders protobuf payloads as JSON, and checks
// that a new version is compatible with the one it replaces.
//
// The JSON Schema validator is santhosh-tekuri/jsonschema (full 2020-12
// support, no network: references outside the document are refused); the
// .proto compiler is bufbuild/protocompile (pure Go, no protoc).
package schema

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"mime"
	"strconv"
	"strings"

	"github.com/bufbuild/protocompile"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/heraldhq/herald"
)

// Protobuf definition formats.
const (
	FormatProto         = "proto"          // .proto source
	FormatDescriptorSet = "descriptor_set" // a serialized google.protobuf.FileDescriptorSet
)

// Compiled is a schema ready to validate payloads. It is immutable and safe
// for concurrent use.
type Compiled struct {
	Schema herald.Schema

	json *jsonschema.Schema
	doc  any // the JSON Schema document, for compatibility checks
	msg  protoreflect.MessageDescriptor
}

// englishPrinter words validation errors.
var englishPrinter = message.NewPrinter(language.English)

// refuseLoader keeps $ref inside the document: a schema may not make the
// server read files or the network.
type refuseLoader struct{}

func (refuseLoader) Load(url string) (any, error) {
	return nil, fmt.Errorf("references outside the schema are not allowed: %s", url)
}

// Compile checks and compiles a schema. Errors are CodeInvalid naming the
// field at fault ("schema", "proto", "descriptor_set", "message").
func Compile(s herald.Schema) (*Compiled, error) {
	if len(s.Definition) > herald.MaxSchemaBytes {
		return nil, &herald.Error{Code: herald.CodeTooLarge, Field: "schema",
			Message: fmt.Sprintf("the schema is %d bytes; the limit is %d", len(s.Definition), herald.MaxSchemaBytes)}
	}
	switch s.Kind {
	case herald.SchemaJSON:
		return compileJSON(s)
	case herald.SchemaProtobuf:
		return compileProto(s)
	}
	return nil, herald.FieldErrorf("type", "schema type must be %q or %q, got %q", herald.SchemaJSON, herald.SchemaProtobuf, s.Kind)
}

func compileJSON(s herald.Schema) (*Compiled, error) {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(s.Definition))
	if err != nil {
		return nil, &herald.Error{Code: herald.CodeInvalid, Field: "schema", Message: "the schema is not JSON: " + err.Error(), Err: err}
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.UseLoader(refuseLoader{})
	const loc = "urn:herald:schema"
	if err := c.AddResource(loc, doc); err != nil {
		return nil, &herald.Error{Code: herald.CodeInvalid, Field: "schema", Message: "the schema is not valid: " + err.Error(), Err: err}
	}
	sch, err := c.Compile(loc)
	if err != nil {
		return nil, &herald.Error{Code: herald.CodeInvalid, Field: "schema", Message: "the schema is not valid: " + oneLine(err.Error()), Err: err}
	}
	return &Compiled{Schema: s, json: sch, doc: doc}, nil
}

func compileProto(s herald.Schema) (*Compiled, error) {
	if s.Message == "" {
		return nil, herald.FieldErrorf("message", "a protobuf schema names its message (\"package.Message\")")
	}
	var find func(protoreflect.FullName) (protoreflect.Descriptor, error)
	switch s.Format {
	case FormatProto, "":
		const name = "schema.proto"
		comp := protocompile.Compiler{
			Resolver: protocompile.WithStandardImports(&protocompile.SourceResolver{
				Accessor: protocompile.SourceAccessorFromMap(map[string]string{name: string(s.Definition)}),
			}),
		}
		files, err := comp.Compile(context.Background(), name)
		if err != nil {
			return nil, &herald.Error{Code: herald.CodeInvalid, Field: "proto", Message: "the .proto source does not compile: " + oneLine(err.Error()), Err: err}
		}
		find = files.AsResolver().FindDescriptorByName
	case FormatDescriptorSet:
		var set descriptorpb.FileDescriptorSet
		if err := proto.Unmarshal(s.Definition, &set); err != nil {
			return nil, &herald.Error{Code: herald.CodeInvalid, Field: "descriptor_set", Message: "not a FileDescriptorSet: " + err.Error(), Err: err}
		}
		files, err := protodesc.NewFiles(&set)
		if err != nil {
			return nil, &herald.Error{Code: herald.CodeInvalid, Field: "descriptor_set", Message: "the FileDescriptorSet is not valid: " + err.Error(), Err: err}
		}
		find = files.FindDescriptorByName
	default:
		return nil, herald.FieldErrorf("format", "protobuf format must be %q or %q, got %q", FormatProto, FormatDescriptorSet, s.Format)
	}
	d, err := find(protoreflect.FullName(strings.TrimPrefix(s.Message, ".")))
	if err != nil {
		return nil, herald.FieldErrorf("message", "no message %q in the schema", s.Message)
	}
	md, ok := d.(protoreflect.MessageDescriptor)
	if !ok {
		return nil, herald.FieldErrorf("message", "%q is not a message", s.Message)
	}
	return &Compiled{Schema: s, msg: md}, nil
}

// IsProtobuf reports whether the schema is a protobuf message.
func (c *Compiled) IsProtobuf() bool { return c.msg != nil }

// Validate checks a payload. JSON Schema topics take JSON payloads;
// protobuf topics take the binary encoding, or its JSON form (protojson)
// when the content type says JSON. The error is CodeInvalid, names the
// first violation, and has the field "data" or "data.<path>".
func (c *Compiled) Validate(payload []byte, contentType string) error {
	if c.msg != nil {
		_, err := c.decodeProto(payload, contentType)
		return err
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(payload))
	if err != nil {
		return c.violation("data", "the payload is not JSON")
	}
	err = c.json.Validate(inst)
	if err == nil {
		return nil
	}
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return c.violation("data", oneLine(err.Error()))
	}
	for len(ve.Causes) > 0 {
		ve = ve.Causes[0]
	}
	field := "data"
	for _, seg := range ve.InstanceLocation {
		if _, err := strconv.Atoi(seg); err == nil {
			field += "[" + seg + "]"
		} else {
			field += "." + seg
		}
	}
	where := "/" + strings.Join(ve.InstanceLocation, "/")
	return c.violation(field, "at "+where+": "+ve.ErrorKind.LocalizedString(englishPrinter))
}

func (c *Compiled) violation(field, msg string) error {
	return &herald.Error{Code: herald.CodeInvalid, Field: field,
		Message: fmt.Sprintf("the payload does not match the schema of topic %q (version %d): %s", c.Schema.Topic, c.Schema.Version, msg)}
}

func isJSON(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return false
	}
	return mt == "application/json" || strings.HasSuffix(mt, "+json")
}

func (c *Compiled) decodeProto(payload []byte, contentType string) (*dynamicpb.Message, error) {
	m := dynamicpb.NewMessage(c.msg)
	if isJSON(contentType) {
		if err := protojson.Unmarshal(payload, m); err != nil {
			return nil, c.violation("data", oneLine(err.Error()))
		}
	} else {
		if err := proto.Unmarshal(payload, m); err != nil {
			return nil, c.violation("data", "not a "+string(c.msg.FullName())+" message: "+oneLine(err.Error()))
		}
		if unknown := firstUnknown(m); unknown != "" {
			return nil, c.violation("data", unknown)
		}
	}
	if err := proto.CheckInitialized(m); err != nil {
		return nil, c.violation("data", oneLine(err.Error()))
	}
	return m, nil
}

// firstUnknown names the first field of the message (not of nested ones)
// that its descriptor does not declare.
func firstUnknown(m *dynamicpb.Message) string {
	raw := m.GetUnknown()
	if len(raw) == 0 {
		return ""
	}
	num, _ := protowireNumber(raw)
	return fmt.Sprintf("field number %d is not in the schema", num)
}

// protowireNumber reads the field number of the first tag in b.
func protowireNumber(b []byte) (int64, bool) {
	var v uint64
	for i, s := 0, uint(0); i < len(b) && i < 10; i, s = i+1, s+7 {
		v |= uint64(b[i]&0x7f) << s
		if b[i] < 0x80 {
			return int64(v >> 3), true
		}
	}
	return 0, false
}

// JSON returns the payload as JSON: a protobuf payload in its protojson
// form (field names as in the .proto, zero values included), anything else
// as it is.
func (c *Compiled) JSON(payload []byte, contentType string) ([]byte, error) {
	if c == nil || c.msg == nil || isJSON(contentType) {
		return payload, nil
	}
	m, err := c.decodeProto(payload, contentType)
	if err != nil {
		return nil, err
	}
	return protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}.Marshal(m)
}

func oneLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		rest := strings.Fields(s[i+1:])
		s = s[:i]
		if len(rest) > 0 {
			s += ": " + strings.Join(rest, " ")
		}
	}
	if len(s) > 500 {
		s = s[:500] + "..."
	}
	return s
}

// Descriptor is the protobuf message of the schema; nil for a JSON Schema.
func (c *Compiled) Descriptor() protoreflect.MessageDescriptor { return c.msg }

// JSONSchema is the compiled JSON Schema and its document (each compiled
// schema's Location is a JSON pointer into it, after '#'); nil for a
// protobuf schema. The archive derives typed Parquet columns from them.
func (c *Compiled) JSONSchema() (*jsonschema.Schema, any) { return c.json, c.doc }
