package schema

import (
	"fmt"
	"slices"

	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/heraldhq/herald"
)

// Compatible reports whether next may replace prev without breaking the
// producers and readers of prev: nil if so, else a CodeConflict error
// saying what breaks. What is allowed:
//
//   - JSON Schema: adding optional properties, relaxing; refused are a
//     property newly required, a required property removed, and a
//     property whose "type" changed (at any depth of "properties").
//   - Protobuf: adding fields; refused are a removed required field, a new
//     required field, a field number reused with another type or
//     cardinality, and a different message name.
//   - Changing the kind (JSON Schema to protobuf) is refused.
func Compatible(prev, next *Compiled) error {
	switch {
	case prev.Schema.Kind != next.Schema.Kind:
		return incompatible("the schema type changes from %s to %s", prev.Schema.Kind, next.Schema.Kind)
	case prev.msg != nil:
		if prev.msg.FullName() != next.msg.FullName() {
			return incompatible("the message changes from %s to %s", prev.msg.FullName(), next.msg.FullName())
		}
		return protoCompatible(prev.msg, next.msg, string(prev.msg.FullName()), map[protoreflect.FullName]bool{})
	default:
		return jsonCompatible(prev.doc, next.doc, "")
	}
}

func incompatible(format string, args ...any) error {
	return &herald.Error{Code: herald.CodeConflict, Field: "schema",
		Message: "the new schema is not compatible with the current one: " + fmt.Sprintf(format, args...) + " (set \"force\": true to replace it anyway)"}
}

func protoCompatible(prev, next protoreflect.MessageDescriptor, path string, seen map[protoreflect.FullName]bool) error {
	if seen[prev.FullName()] {
		return nil
	}
	seen[prev.FullName()] = true
	pf, nf := prev.Fields(), next.Fields()
	for i := range pf.Len() {
		p := pf.Get(i)
		n := nf.ByNumber(p.Number())
		if n == nil {
			if p.Cardinality() == protoreflect.Required {
				return incompatible("required field %s.%s is removed", path, p.Name())
			}
			continue
		}
		if p.Kind() != n.Kind() || p.Cardinality() != n.Cardinality() && (p.Cardinality() == protoreflect.Repeated || n.Cardinality() == protoreflect.Repeated) {
			return incompatible("field %d of %s changes from %s %s to %s %s", p.Number(), path, p.Cardinality(), p.Kind(), n.Cardinality(), n.Kind())
		}
		if n.Cardinality() == protoreflect.Required && p.Cardinality() != protoreflect.Required {
			return incompatible("field %s.%s becomes required", path, n.Name())
		}
		if p.Message() != nil && n.Message() != nil && !p.IsMap() {
			if err := protoCompatible(p.Message(), n.Message(), path+"."+string(p.Name()), seen); err != nil {
				return err
			}
		}
	}
	for i := range nf.Len() {
		n := nf.Get(i)
		if pf.ByNumber(n.Number()) == nil && n.Cardinality() == protoreflect.Required {
			return incompatible("new field %s.%s is required", path, n.Name())
		}
	}
	return nil
}

func jsonCompatible(prev, next any, path string) error {
	po, ok1 := prev.(map[string]any)
	no, ok2 := next.(map[string]any)
	if !ok1 || !ok2 {
		return nil
	}
	at := path
	if at == "" {
		at = "the top level"
	}
	if pt, nt := po["type"], no["type"]; pt != nil && nt != nil && fmt.Sprint(pt) != fmt.Sprint(nt) {
		return incompatible("the type of %s changes from %v to %v", at, pt, nt)
	}
	preq, nreq := stringList(po["required"]), stringList(no["required"])
	for _, r := range nreq {
		if !slices.Contains(preq, r) {
			return incompatible("property %q of %s becomes required", r, at)
		}
	}
	pprops, _ := po["properties"].(map[string]any)
	nprops, _ := no["properties"].(map[string]any)
	for _, r := range preq {
		if !slices.Contains(nreq, r) {
			if _, still := nprops[r]; !still {
				return incompatible("required property %q of %s is removed", r, at)
			}
		}
	}
	for name, p := range pprops {
		if n, ok := nprops[name]; ok {
			if err := jsonCompatible(p, n, path+"/"+name); err != nil {
				return err
			}
		}
	}
	return nil
}

func stringList(v any) []string {
	list, _ := v.([]any)
	out := make([]string, 0, len(list))
	for _, x := range list {
		if s, ok := x.(string); ok {
			out = append(out, s)
		}
	}
	return out
}
