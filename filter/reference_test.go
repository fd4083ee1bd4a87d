package filter

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"
)

// This file holds a second, deliberately plain implementation of matching,
// built on encoding/json and regexp, to check the single-pass scanner and
// the glob matcher against. It shares only the condition semantics
// (cond.match), which the tables test on their own.

// referenceGlob matches with a regular expression built from the pattern.
func referenceGlob(pattern, s string) bool {
	parts := strings.Split(pattern, "*")
	for i, p := range parts {
		parts[i] = regexp.QuoteMeta(p)
	}
	return regexp.MustCompile(`\A(?s:` + strings.Join(parts, ".*") + `)\z`).MatchString(s)
}

// referenceMatch decodes the payload with encoding/json and walks the
// decoded tree. ok is false when the two may rightly differ: payloads with
// duplicate keys (encoding/json keeps the last, the scanner every one) or
// invalid UTF-8 (encoding/json replaces it, the scanner compares bytes).
func referenceMatch(f *Filter, eventType, contentType string, payload []byte) (match, ok bool) {
	if f == nil {
		return true, true
	}
	if f.cel != nil {
		return false, false // CEL is cel-go's; TestCEL covers it
	}
	if len(f.types) > 0 {
		any := false
		for _, p := range f.types {
			any = any || referenceGlob(p, eventType)
		}
		if !any {
			return false, true
		}
	}
	if f.policy == nil {
		return true, true
	}
	if !jsonMediaType(contentType) || !json.Valid(payload) {
		return false, true
	}
	if !utf8.Valid(payload) || hasDuplicateKeys(payload) {
		return false, false
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	var doc any
	if dec.Decode(&doc) != nil {
		return false, true
	}
	if _, isObject := doc.(map[string]any); !isObject {
		return false, true
	}
	return referencePolicy(f.policy, doc), true
}

func referencePolicy(p *policy, doc any) bool {
	for _, k := range p.keys {
		if k.nested != nil {
			if !referencePolicy(k.nested, doc) {
				return false
			}
			continue
		}
		vals := collect(doc, k.path)
		matched := false
		for i := range k.conds {
			c := &k.conds[i]
			if c.op == opExists {
				matched = matched || (len(vals) > 0) == c.b
				continue
			}
			for j := range vals {
				matched = matched || c.match(&vals[j])
			}
		}
		if !matched {
			return false
		}
	}
	if len(p.or) == 0 {
		return true
	}
	for _, b := range p.or {
		if referencePolicy(b, doc) {
			return true
		}
	}
	return false
}

// collect returns the values at path below v, looking through arrays at
// every level.
func collect(v any, path []string) []value {
	if a, isArray := v.([]any); isArray {
		var out []value
		for _, e := range a {
			out = append(out, collect(e, path)...)
		}
		return out
	}
	if len(path) == 0 {
		switch x := v.(type) {
		case map[string]any:
			return []value{{kind: kindObject}}
		case string:
			return []value{{kind: kindString, s: x}}
		case json.Number:
			f, _ := strconv.ParseFloat(string(x), 64)
			return []value{{kind: kindNumber, f: f}}
		case bool:
			return []value{{kind: kindBool, b: x}}
		default:
			return []value{{kind: kindNull}}
		}
	}
	if m, isObject := v.(map[string]any); isObject {
		if child, found := m[path[0]]; found {
			return collect(child, path[1:])
		}
	}
	return nil
}

// hasDuplicateKeys reports whether any object in a valid JSON document has
// the same key twice.
func hasDuplicateKeys(doc []byte) bool {
	dec := json.NewDecoder(bytes.NewReader(doc))
	type frame struct {
		object bool
		keys   map[string]bool
		expect bool // in an object: the next token is a key
	}
	var stack []*frame
	for {
		tok, err := dec.Token()
		if err != nil {
			return false
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if d, isDelim := tok.(json.Delim); isDelim && (d == '}' || d == ']') {
			stack = stack[:len(stack)-1]
			if len(stack) > 0 && stack[len(stack)-1].object {
				stack[len(stack)-1].expect = true
			}
			continue
		}
		if top != nil && top.object && top.expect {
			k := tok.(string)
			if top.keys[k] {
				return true
			}
			top.keys[k] = true
			top.expect = false
			continue
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, &frame{object: true, keys: map[string]bool{}, expect: true})
		case json.Delim('['):
			stack = append(stack, &frame{})
		default:
			if top != nil && top.object {
				top.expect = true
			}
		}
	}
}
