package archive

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"unicode/utf8"
)

// fieldPaths are the payload fields an archive reads (its partition
// keys'), split on '.' once per sink rather than once per event.
type fieldPaths [][]string

func newFieldPaths(keys []PartitionKey) fieldPaths {
	p := make(fieldPaths, len(keys))
	for i, k := range keys {
		p[i] = strings.Split(k.Field, ".")
	}
	return p
}

// scanPayload reads a JSON payload once: the scalar values at the paths
// (string, number as written, or bool as text; "" when a path is missing
// or holds null, an object or an array, or when the payload's first JSON
// value is not a valid object), and whether the whole payload is one
// valid JSON value (as json.Valid). It decodes nothing it does not need:
// other members are only checked and skipped. A member named twice counts
// once, as its last occurrence, as when decoding into a map.
//
// It replaces a json.Decoder into map[string]any per event, which was a
// quarter of the archive writer's CPU (docs/benchmarks.md).
func scanPayload(payload []byte, paths fieldPaths) (vals []string, valid bool) {
	vals = make([]string, len(paths))
	s := scanner{data: payload}
	s.ws()
	if s.peek() == '{' && len(paths) > 0 {
		active := make([]bool, len(paths))
		for i := range active {
			active[i] = true
		}
		if s.object(paths, active, 0, vals) != nil {
			clear(vals)
			return vals, false
		}
	} else if s.value(0) != nil {
		return vals, false
	}
	s.ws()
	return vals, s.pos == len(s.data)
}

// errSyntax is any JSON syntax error; scanPayload only needs to know
// there was one.
var errSyntax = errors.New("invalid JSON")

// maxScanDepth is encoding/json's nesting limit: more objects and arrays
// inside one another are invalid. A value depth levels deep is inside
// depth of them.
const maxScanDepth = 10000

type scanner struct {
	data []byte
	pos  int
}

func (s *scanner) peek() byte {
	if s.pos < len(s.data) {
		return s.data[s.pos]
	}
	return 0
}

func (s *scanner) ws() {
	for s.pos < len(s.data) {
		switch s.data[s.pos] {
		case ' ', '\t', '\n', '\r':
			s.pos++
		default:
			return
		}
	}
}

// object scans an object at s.pos ('{') depth levels deep, capturing
// into vals the values of the paths marked active (those whose first
// depth names matched so far).
func (s *scanner) object(paths fieldPaths, active []bool, depth int, vals []string) error {
	if depth >= maxScanDepth {
		return errSyntax
	}
	s.pos++ // '{'
	s.ws()
	if s.peek() == '}' {
		s.pos++
		return nil
	}
	var sub []bool // the paths that go on into this member, reused
	for {
		s.ws()
		raw, esc, err := s.str()
		if err != nil {
			return err
		}
		s.ws()
		if s.peek() != ':' {
			return errSyntax
		}
		s.pos++
		s.ws()
		name := raw
		if esc {
			name = unquote(raw)
		}
		// Which paths name this member here: those ending here take its
		// value; those going on descend into it. Either way a later
		// member of the same name replaces what an earlier one gave.
		var leaf, deeper bool
		for i, p := range paths {
			if active[i] && string(name) == p[depth] {
				vals[i] = ""
				if len(p) == depth+1 {
					leaf = true
				} else {
					deeper = true
				}
			}
		}
		switch {
		case deeper && s.peek() == '{':
			if sub == nil {
				sub = make([]bool, len(paths))
			}
			for i, p := range paths {
				sub[i] = active[i] && len(p) > depth+1 && string(name) == p[depth]
			}
			// The paths ending here stay "": an object is no scalar.
			if err := s.object(paths, sub, depth+1, vals); err != nil {
				return err
			}
		case leaf:
			start := s.pos
			if err := s.value(depth + 1); err != nil {
				return err
			}
			v := scalar(s.data[start:s.pos])
			for i, p := range paths {
				if active[i] && len(p) == depth+1 && string(name) == p[depth] {
					vals[i] = v
				}
			}
		default:
			if err := s.value(depth + 1); err != nil {
				return err
			}
		}
		s.ws()
		switch s.peek() {
		case ',':
			s.pos++
		case '}':
			s.pos++
			return nil
		default:
			return errSyntax
		}
	}
}

// scalar is a partition value of a JSON value already checked: a string
// unquoted, a number as written, true or false; "" for anything else.
func scalar(v []byte) string {
	switch v[0] {
	case '"':
		body := v[1 : len(v)-1]
		if bytes.IndexByte(body, '\\') < 0 && utf8.Valid(body) {
			return string(body)
		}
		return string(unquote(v[1 : len(v)-1]))
	case '{', '[', 'n':
		return ""
	}
	return string(v) // a number, true or false
}

// unquote is the string a JSON string's body (between its quotes, already
// checked) stands for, as encoding/json reads it (invalid UTF-8 becomes
// U+FFFD).
func unquote(body []byte) []byte {
	q := make([]byte, 0, len(body)+2)
	q = append(append(append(q, '"'), body...), '"')
	var s string
	if json.Unmarshal(q, &s) != nil {
		return nil
	}
	return []byte(s)
}

// value checks and skips the JSON value at s.pos.
func (s *scanner) value(depth int) error {
	switch c := s.peek(); {
	case c == '{':
		return s.object(nil, nil, depth, nil)
	case c == '[':
		if depth >= maxScanDepth {
			return errSyntax
		}
		s.pos++
		s.ws()
		if s.peek() == ']' {
			s.pos++
			return nil
		}
		for {
			s.ws()
			if err := s.value(depth + 1); err != nil {
				return err
			}
			s.ws()
			switch s.peek() {
			case ',':
				s.pos++
			case ']':
				s.pos++
				return nil
			default:
				return errSyntax
			}
		}
	case c == '"':
		_, _, err := s.str()
		return err
	case c == '-' || c >= '0' && c <= '9':
		return s.number()
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	}
	return errSyntax
}

func (s *scanner) literal(lit string) error {
	if !bytes.HasPrefix(s.data[s.pos:], []byte(lit)) {
		return errSyntax
	}
	s.pos += len(lit)
	return nil
}

// str checks the string at s.pos and returns its body (between the
// quotes) and whether it holds escapes.
func (s *scanner) str() (body []byte, escaped bool, err error) {
	if s.peek() != '"' {
		return nil, false, errSyntax
	}
	s.pos++
	start := s.pos
	for s.pos < len(s.data) {
		c := s.data[s.pos]
		switch {
		case c == '"':
			body = s.data[start:s.pos]
			s.pos++
			return body, escaped, nil
		case c < 0x20:
			return nil, false, errSyntax
		case c == '\\':
			escaped = true
			s.pos++
			switch s.peek() {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				s.pos++
			case 'u':
				s.pos++
				for range 4 {
					if !isHex(s.peek()) {
						return nil, false, errSyntax
					}
					s.pos++
				}
			default:
				return nil, false, errSyntax
			}
		default:
			s.pos++
		}
	}
	return nil, false, errSyntax
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// number checks a number as JSON's grammar has it:
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (s *scanner) number() error {
	if s.peek() == '-' {
		s.pos++
	}
	switch c := s.peek(); {
	case c == '0':
		s.pos++
	case c >= '1' && c <= '9':
		s.digits()
	default:
		return errSyntax
	}
	if s.peek() == '.' {
		s.pos++
		if s.digits() == 0 {
			return errSyntax
		}
	}
	if c := s.peek(); c == 'e' || c == 'E' {
		s.pos++
		if c := s.peek(); c == '+' || c == '-' {
			s.pos++
		}
		if s.digits() == 0 {
			return errSyntax
		}
	}
	return nil
}

func (s *scanner) digits() int {
	n := 0
	for c := s.peek(); c >= '0' && c <= '9'; c = s.peek() {
		s.pos++
		n++
	}
	return n
}
