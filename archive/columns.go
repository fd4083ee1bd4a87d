package archive

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"math"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/compress"
	"github.com/parquet-go/parquet-go/encoding"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/heraldhq/herald/schema"
)

// PayloadColumn is the name of the Parquet column that holds a payload's
// fields as typed columns (a group, DuckDB's STRUCT), written for topics
// with a schema beside the raw payload (data or data_base64).
const PayloadColumn = "payload"

// Bounds of a payload column derived from a schema: deeper levels and the
// columns past the limit are JSON text (a schema may be recursive, and a
// file with thousands of columns helps no reader).
const (
	maxColumnDepth = 8
	maxColumns     = 512
)

// colKind is the type of a payload column.
type colKind int

const (
	colString colKind = iota
	colInt            // INT64
	colDouble         // DOUBLE
	colBool           // BOOLEAN
	colBytes          // BYTE_ARRAY (protobuf bytes)
	colTime           // TIMESTAMP(NANOS, UTC): JSON Schema "date-time", google.protobuf.Timestamp
	colJSON           // the value as JSON text: what the schema does not type
	colGroup          // an object / message with declared fields
	colList           // an array / repeated field
)

// colType is a payload column's type, derived from a topic's schema.
type colType struct {
	kind   colKind
	fields []colField // colGroup, in the schema's order
	elem   *colType   // colList
}

type colField struct {
	name string
	t    *colType
}

// payloadType returns the column type of a topic's schema, or nil when
// it gives no fields (a schema that is not an object or message with
// properties): the payload then stays in data only.
func payloadType(c *schema.Compiled) *colType {
	if c == nil {
		return nil
	}
	n := 0
	var t *colType
	if md := c.Descriptor(); md != nil {
		t = protoType(md, 0, &n)
	} else if js, doc := c.JSONSchema(); js != nil {
		t = jsonSchemaType(js, doc, 0, &n)
	}
	if t == nil || t.kind != colGroup {
		return nil
	}
	return t
}

// jsonSchemaType maps a JSON Schema to a column type: one JSON type (null
// aside) gives a typed column, an object with properties a group of them
// (additionalProperties are in data only), an array with items a list;
// anything else (unions, no type, oneOf) is JSON text.
func jsonSchemaType(s *jsonschema.Schema, doc any, depth int, n *int) *colType {
	for i := 0; s != nil && s.Ref != nil && s.Types == nil && len(s.Properties) == 0 && i < 32; i++ {
		s = s.Ref // a bare $ref
	}
	*n++
	if s == nil || depth > maxColumnDepth || *n > maxColumns {
		return &colType{kind: colJSON}
	}
	var types []string
	if s.Types != nil {
		for _, t := range s.Types.ToStrings() {
			if t != "null" {
				types = append(types, t)
			}
		}
	}
	if len(types) == 0 && len(s.Properties) > 0 {
		types = []string{"object"}
	}
	if len(types) != 1 {
		return &colType{kind: colJSON}
	}
	switch types[0] {
	case "string":
		// format is an annotation (not asserted), so the compiled schema
		// does not keep it: read it from the document.
		if f, _ := keyword(doc, s.Location, "format").(string); f == "date-time" {
			return &colType{kind: colTime}
		}
		return &colType{kind: colString}
	case "integer":
		return &colType{kind: colInt}
	case "number":
		return &colType{kind: colDouble}
	case "boolean":
		return &colType{kind: colBool}
	case "object":
		names := slices.Sorted(func(yield func(string) bool) {
			for k := range s.Properties {
				if !yield(k) {
					return
				}
			}
		})
		if len(names) == 0 {
			return &colType{kind: colJSON}
		}
		g := &colType{kind: colGroup}
		for _, k := range names {
			g.fields = append(g.fields, colField{name: k, t: jsonSchemaType(s.Properties[k], doc, depth+1, n)})
		}
		return g
	case "array":
		items := s.Items2020
		if items == nil {
			items, _ = s.Items.(*jsonschema.Schema)
		}
		if items == nil {
			return &colType{kind: colJSON}
		}
		return &colType{kind: colList, elem: jsonSchemaType(items, doc, depth+1, n)}
	}
	return &colType{kind: colJSON}
}

// keyword returns a keyword of the schema at location (URI#/json/pointer)
// in the document; nil when there is none.
func keyword(doc any, location, name string) any {
	_, ptr, _ := strings.Cut(location, "#")
	v := doc
	for tok := range strings.SplitSeq(strings.TrimPrefix(ptr, "/"), "/") {
		if tok == "" {
			continue
		}
		if u, err := url.PathUnescape(tok); err == nil {
			tok = u
		}
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[tok]
	}
	m, _ := v.(map[string]any)
	return m[name]
}

// protoType maps a protobuf message to a group of its fields in
// declaration order, named as in the .proto (as Herald renders protobuf
// payloads as JSON). Enums are their names, google.protobuf.Timestamp a
// timestamp, maps and the other well-known types JSON text.
func protoType(md protoreflect.MessageDescriptor, depth int, n *int) *colType {
	*n++
	if depth > maxColumnDepth || *n > maxColumns || md.Fields().Len() == 0 {
		return &colType{kind: colJSON}
	}
	g := &colType{kind: colGroup}
	fs := md.Fields()
	for i := range fs.Len() {
		fd := fs.Get(i)
		var t *colType
		if fd.IsMap() {
			t = &colType{kind: colJSON}
		} else {
			t = protoFieldType(fd, depth, n)
			if fd.IsList() {
				t = &colType{kind: colList, elem: t}
			}
		}
		g.fields = append(g.fields, colField{name: string(fd.Name()), t: t})
	}
	return g
}

func protoFieldType(fd protoreflect.FieldDescriptor, depth int, n *int) *colType {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return &colType{kind: colBool}
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind, protoreflect.Uint32Kind, protoreflect.Fixed32Kind,
		protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind, protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return &colType{kind: colInt} // a uint64 past 2^63-1 is null here, in data whole
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		return &colType{kind: colDouble}
	case protoreflect.StringKind, protoreflect.EnumKind:
		return &colType{kind: colString}
	case protoreflect.BytesKind:
		return &colType{kind: colBytes}
	case protoreflect.MessageKind, protoreflect.GroupKind:
		m := fd.Message()
		switch m.FullName() {
		case "google.protobuf.Timestamp":
			return &colType{kind: colTime}
		case "google.protobuf.StringValue":
			return &colType{kind: colString}
		case "google.protobuf.BoolValue":
			return &colType{kind: colBool}
		case "google.protobuf.Int32Value", "google.protobuf.Int64Value", "google.protobuf.UInt32Value", "google.protobuf.UInt64Value":
			return &colType{kind: colInt}
		case "google.protobuf.FloatValue", "google.protobuf.DoubleValue":
			return &colType{kind: colDouble}
		case "google.protobuf.BytesValue":
			return &colType{kind: colBytes}
		}
		if m.ParentFile() != nil && m.ParentFile().Package() == "google.protobuf" {
			return &colType{kind: colJSON} // Struct, Value, Any, Duration, ...: their JSON form
		}
		return protoType(m, depth+1, n)
	}
	return &colType{kind: colJSON}
}

// node is the Parquet node of the column type; every payload column is
// optional (a field may be missing, or not of its schema's type in an
// event published before the schema).
func (t *colType) node() parquet.Node {
	var n parquet.Node
	switch t.kind {
	case colString, colJSON:
		n = parquet.String()
	case colInt:
		n = parquet.Int(64)
	case colDouble:
		n = parquet.Leaf(parquet.DoubleType)
	case colBool:
		n = parquet.Leaf(parquet.BooleanType)
	case colBytes:
		n = parquet.Leaf(parquet.ByteArrayType)
	case colTime:
		n = parquet.Timestamp(parquet.Nanosecond)
	case colList:
		n = parquet.List(t.elem.node())
	case colGroup:
		g := make(orderedGroup, len(t.fields))
		for i, f := range t.fields {
			g[i] = parquet.Group{f.name: f.t.node()}.Fields()[0]
		}
		n = g
	}
	return parquet.Optional(n)
}

// value converts a payload value (decoded from JSON with UseNumber) to
// what the column holds; nil (null) when it is missing or not of the
// column's type.
func (t *colType) value(v any) any {
	if v == nil {
		return nil
	}
	switch t.kind {
	case colString:
		if s, ok := v.(string); ok {
			return s
		}
	case colJSON:
		b, err := json.Marshal(v)
		if err == nil {
			return string(b)
		}
	case colInt:
		switch x := v.(type) {
		case json.Number:
			if i, err := strconv.ParseInt(string(x), 10, 64); err == nil {
				return i
			}
			if f, err := x.Float64(); err == nil && f == math.Trunc(f) && math.Abs(f) < 1<<63 {
				return int64(f) // 1e3, 2.0
			}
		case string: // protobuf's JSON form of 64-bit integers
			if i, err := strconv.ParseInt(x, 10, 64); err == nil {
				return i
			}
		}
	case colDouble:
		switch x := v.(type) {
		case json.Number:
			if f, err := x.Float64(); err == nil {
				return f
			}
		case string: // "NaN", "Infinity" in protobuf's JSON form
			if f, err := strconv.ParseFloat(x, 64); err == nil {
				return f
			}
		}
	case colBool:
		if b, ok := v.(bool); ok {
			return b
		}
	case colBytes:
		if s, ok := v.(string); ok {
			for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
				if b, err := enc.DecodeString(s); err == nil {
					return b
				}
			}
		}
	case colTime:
		if s, ok := v.(string); ok {
			if at, err := time.Parse(time.RFC3339Nano, s); err == nil {
				return at.UTC()
			}
		}
	case colList:
		if xs, ok := v.([]any); ok {
			out := make([]any, len(xs))
			for i, x := range xs {
				out[i] = t.elem.value(x)
			}
			return out
		}
	case colGroup:
		if m, ok := v.(map[string]any); ok {
			out := make(map[string]any, len(t.fields))
			for _, f := range t.fields {
				out[f.name] = f.t.value(m[f.name])
			}
			return out
		}
	}
	return nil
}

// payloadValue is the payload column's value of one event: its JSON form
// (a protobuf payload through the schema) converted to the columns; nil
// when it is no JSON object.
func (t *colType) payloadValue(c *schema.Compiled, payload []byte, contentType string) any {
	js, err := c.JSON(payload, contentType)
	if err != nil {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.UseNumber()
	var v any
	if dec.Decode(&v) != nil {
		return nil
	}
	return t.value(v)
}

// orderedGroup is a group node whose fields keep their order (parquet.Group
// sorts them by name): the event columns first, as they always were, and a
// message's fields as the .proto declares them.
type orderedGroup []parquet.Field

func (g orderedGroup) ID() int                     { return 0 }
func (g orderedGroup) String() string              { return "group" }
func (g orderedGroup) Type() parquet.Type          { return parquet.Group{}.Type() }
func (g orderedGroup) Optional() bool              { return false }
func (g orderedGroup) Repeated() bool              { return false }
func (g orderedGroup) Required() bool              { return true }
func (g orderedGroup) Leaf() bool                  { return false }
func (g orderedGroup) Fields() []parquet.Field     { return g }
func (g orderedGroup) Encoding() encoding.Encoding { return nil }
func (g orderedGroup) Compression() compress.Codec { return nil }
func (g orderedGroup) GoType() reflect.Type        { return reflect.TypeFor[map[string]any]() }
