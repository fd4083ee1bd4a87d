package filter

import (
	"encoding/json"
	"io"
	"slices"
	"strconv"
	"sync"
	"unsafe"
)

// kind is the type of a JSON value, in the filter's own JSON and in
// payloads.
type kind uint8

const (
	kindNull kind = iota
	kindBool
	kindNumber
	kindString
	kindArray
	kindObject
)

// value is one value found in a payload at a key path the policy names.
// Arrays are not values: their elements are, at the same path. An object is
// recorded only as present (kindObject), for "exists".
type value struct {
	kind kind
	b    bool
	f    float64
	s    string // string contents, unescaped; see payloadString
	next int32  // the next value at the same path, or -1
}

// scanner reads a payload once, validating it as JSON and recording the
// values found at the paths of a pathNode trie; it skips everything else
// without decoding it.
type scanner struct {
	data  []byte
	i     int
	depth int
	heads []int32 // per slot: the first value, or -1
	vals  []value
}

// scanners recycles scanners and their value buffers across Match calls,
// so a match allocates nothing in the common case. It is a cache, not
// state: a scanner is reset on the way out and on the way in, and what
// Match returns never depends on what the pool holds.
var scanners = sync.Pool{New: func() any { return new(scanner) }}

// maxPooledValues bounds the buffer a pooled scanner keeps, so one huge
// payload does not pin its memory.
const maxPooledValues = 4096

func getScanner(data []byte, slots int) *scanner {
	s := scanners.Get().(*scanner)
	s.data, s.i, s.depth = data, 0, 0
	s.heads = slices.Grow(s.heads[:0], slots)[:slots]
	for i := range s.heads {
		s.heads[i] = -1
	}
	return s
}

// release returns the scanner to the pool without any reference into the
// payload, which belongs to the caller.
func (s *scanner) release() {
	clear(s.vals)
	s.vals, s.data = s.vals[:0], nil
	if cap(s.vals) <= maxPooledValues {
		scanners.Put(s)
	}
}

// document scans a whole payload, which must be a JSON object, and reports
// whether it is valid JSON.
func (s *scanner) document(root *pathNode) bool {
	s.space()
	if s.i >= len(s.data) || s.data[s.i] != '{' {
		return false
	}
	if !s.value(root) {
		return false
	}
	s.space()
	return s.i == len(s.data)
}

func (s *scanner) space() {
	data, i := s.data, s.i
	for i < len(data) && (data[i] == ' ' || data[i] == '\n' || data[i] == '\r' || data[i] == '\t') {
		i++
	}
	s.i = i
}

func (s *scanner) add(slot int, v value) {
	v.next = s.heads[slot]
	s.heads[slot] = int32(len(s.vals))
	s.vals = append(s.vals, v)
}

// value scans one value at node n (nil: a path the policy does not name).
func (s *scanner) value(n *pathNode) bool {
	s.space()
	if s.i >= len(s.data) {
		return false
	}
	record := n != nil && n.slot >= 0
	switch c := s.data[s.i]; {
	case c == '{':
		if record {
			s.add(n.slot, value{kind: kindObject})
		}
		var children map[string]*pathNode
		if n != nil {
			children = n.children
		}
		return s.object(children)
	case c == '[':
		return s.array(n)
	case c == '"':
		str, ok := s.string(record)
		if ok && record {
			s.add(n.slot, value{kind: kindString, s: str})
		}
		return ok
	case c == 't':
		return s.literal("true", record, n, value{kind: kindBool, b: true})
	case c == 'f':
		return s.literal("false", record, n, value{kind: kindBool})
	case c == 'n':
		return s.literal("null", record, n, value{kind: kindNull})
	case c == '-' || c >= '0' && c <= '9':
		start := s.i
		if !s.number() {
			return false
		}
		if record {
			// The syntax is valid, so the only error is a range error,
			// which leaves ±Inf: still a number, greater than any bound.
			f, _ := strconv.ParseFloat(string(s.data[start:s.i]), 64)
			s.add(n.slot, value{kind: kindNumber, f: f})
		}
		return true
	}
	return false
}

func (s *scanner) literal(lit string, record bool, n *pathNode, v value) bool {
	if len(s.data)-s.i < len(lit) || string(s.data[s.i:s.i+len(lit)]) != lit {
		return false
	}
	s.i += len(lit)
	if record {
		s.add(n.slot, v)
	}
	return true
}

func (s *scanner) object(children map[string]*pathNode) bool {
	if s.depth++; s.depth > maxPayloadDepth {
		return false
	}
	s.i++ // '{'
	s.space()
	if s.i < len(s.data) && s.data[s.i] == '}' {
		s.i++
		s.depth--
		return true
	}
	for {
		s.space()
		if s.i >= len(s.data) || s.data[s.i] != '"' {
			return false
		}
		key, ok := s.string(children != nil)
		if !ok {
			return false
		}
		s.space()
		if s.i >= len(s.data) || s.data[s.i] != ':' {
			return false
		}
		s.i++
		var child *pathNode
		if children != nil {
			child = children[key]
		}
		if !s.value(child) {
			return false
		}
		s.space()
		if s.i >= len(s.data) {
			return false
		}
		switch s.data[s.i] {
		case ',':
			s.i++
		case '}':
			s.i++
			s.depth--
			return true
		default:
			return false
		}
	}
}

func (s *scanner) array(n *pathNode) bool {
	if s.depth++; s.depth > maxPayloadDepth {
		return false
	}
	s.i++ // '['
	s.space()
	if s.i < len(s.data) && s.data[s.i] == ']' {
		s.i++
		s.depth--
		return true
	}
	for {
		if !s.value(n) { // elements sit at the array's own path
			return false
		}
		s.space()
		if s.i >= len(s.data) {
			return false
		}
		switch s.data[s.i] {
		case ',':
			s.i++
		case ']':
			s.i++
			s.depth--
			return true
		default:
			return false
		}
	}
}

// payloadString returns the bytes as a string without copying them. The
// string aliases the payload, so it must not outlive the Match call that
// scanned it: values live only in the scanner, and release clears them
// before the scanner goes back to the pool. The payload is not written
// while Match runs.
func payloadString(b []byte) string {
	return unsafe.String(unsafe.SliceData(b), len(b))
}

// string scans a string starting at its opening quote. With decode, it
// returns the contents: the payload's own bytes when there are no escapes
// (see payloadString), otherwise a decoded copy.
func (s *scanner) string(decode bool) (string, bool) {
	data, start := s.data, s.i
	i := start + 1 // past '"'
	escaped := false
	for i < len(data) {
		c := data[i]
		if !plain[c] {
			i++
			continue
		}
		switch {
		case c == '"':
			s.i = i + 1
			switch {
			case !decode:
				return "", true
			case !escaped:
				return payloadString(data[start+1 : i]), true
			}
			// Rare: let encoding/json apply the escapes, so surrogate
			// pairs and invalid ones decode exactly as elsewhere.
			var out string
			if json.Unmarshal(data[start:i+1], &out) != nil {
				return "", false
			}
			return out, true
		case c == '\\':
			escaped = true
			if i+1 >= len(data) {
				return "", false
			}
			switch data[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if len(data)-i < 6 || !isHex(data[i+2]) || !isHex(data[i+3]) || !isHex(data[i+4]) || !isHex(data[i+5]) {
					return "", false
				}
				i += 6
			default:
				return "", false
			}
		default: // a control character
			return "", false
		}
	}
	return "", false
}

// plain marks the bytes a string scan must stop at: the closing quote, an
// escape, and control characters, which JSON forbids unescaped.
var plain = func() (t [256]bool) {
	for c := range 0x20 {
		t[c] = true
	}
	t['"'], t['\\'] = true, true
	return t
}()

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// number scans a number as RFC 8259 writes it:
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (s *scanner) number() bool {
	if s.data[s.i] == '-' {
		s.i++
	}
	switch {
	case s.i < len(s.data) && s.data[s.i] == '0':
		s.i++
	case s.i < len(s.data) && s.data[s.i] >= '1' && s.data[s.i] <= '9':
		s.digits()
	default:
		return false
	}
	if s.i < len(s.data) && s.data[s.i] == '.' {
		s.i++
		if !s.digits() {
			return false
		}
	}
	if s.i < len(s.data) && (s.data[s.i] == 'e' || s.data[s.i] == 'E') {
		s.i++
		if s.i < len(s.data) && (s.data[s.i] == '+' || s.data[s.i] == '-') {
			s.i++
		}
		if !s.digits() {
			return false
		}
	}
	return true
}

func (s *scanner) digits() bool {
	start := s.i
	for s.i < len(s.data) && s.data[s.i] >= '0' && s.data[s.i] <= '9' {
		s.i++
	}
	return s.i > start
}

// jv is a decoded value of the filter's own JSON. Objects keep their keys
// in order, and decodeValue refuses duplicate keys, which encoding/json
// would silently resolve to the last one.
type jv struct {
	kind kind
	obj  []member
	arr  []jv
	str  string
	num  json.Number
	b    bool
}

type member struct {
	key string
	val jv
}

func decodeValue(dec *json.Decoder, depth int) (jv, error) {
	if depth > maxRawDepth {
		return jv{}, errTooDeep()
	}
	tok, err := dec.Token()
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return jv{}, err
	}
	switch t := tok.(type) {
	case nil:
		return jv{kind: kindNull}, nil
	case bool:
		return jv{kind: kindBool, b: t}, nil
	case json.Number:
		return jv{kind: kindNumber, num: t}, nil
	case string:
		return jv{kind: kindString, str: t}, nil
	case json.Delim:
		switch t {
		case '[':
			v := jv{kind: kindArray}
			for dec.More() {
				e, err := decodeValue(dec, depth+1)
				if err != nil {
					return jv{}, err
				}
				v.arr = append(v.arr, e)
			}
			_, err := dec.Token() // ']'
			return v, err
		case '{':
			v := jv{kind: kindObject}
			seen := map[string]bool{}
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return jv{}, err
				}
				key := kt.(string) // the decoder allows only strings here
				if seen[key] {
					return jv{}, errDuplicate(key)
				}
				seen[key] = true
				e, err := decodeValue(dec, depth+1)
				if err != nil {
					return jv{}, err
				}
				v.obj = append(v.obj, member{key, e})
			}
			_, err := dec.Token() // '}'
			return v, err
		}
	}
	return jv{}, io.ErrUnexpectedEOF // unreachable: Token returns only the above
}
