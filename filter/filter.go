package filter

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/heraldhq/herald"
)

// Limits on a filter, checked by Parse. They keep matching cheap: Match
// costs one pass over the payload plus, at most, every condition against
// every value found at its key.
const (
	// MaxSize is the largest filter accepted, in bytes of JSON.
	MaxSize = 16 << 10
	// MaxTypes is how many patterns "types" may list.
	MaxTypes = 100
	// MaxTypeLen is the longest type pattern, in bytes.
	MaxTypeLen = herald.MaxEventTypeLen
	// MaxDepth is how deep a payload policy may nest: a top-level key is
	// at depth 1, and each nested object and each "$or" adds one.
	MaxDepth = 5
	// MaxKeys is how many keys a payload policy may name in all, nested
	// keys and keys inside "$or" branches included.
	MaxKeys = 100
	// MaxConditions is how many conditions a payload policy may hold in
	// all; each value listed in "anything-but" counts as one.
	MaxConditions = 150

	// maxPayloadDepth bounds nesting in payloads, as encoding/json does.
	maxPayloadDepth = 10000
	// maxRawDepth bounds nesting in the filter's own JSON; deeper than any
	// valid filter can be.
	maxRawDepth = 2*MaxDepth + 4
)

func errTooDeep() error {
	return herald.FieldErrorf("filter", "the filter nests deeper than any valid filter (at most %d levels of payload policy)", MaxDepth)
}

func errDuplicate(key string) error {
	return herald.FieldErrorf("filter", "the key %q appears twice in one object", key)
}

// Filter selects events by type and by the content of JSON payloads. Build
// one with Parse; the language is described in the package documentation.
// A Filter is immutable and safe for concurrent use. A nil *Filter matches
// every event.
type Filter struct {
	types  []string // canonical: sorted, without duplicates, runs of '*' collapsed
	policy *policy  // nil: no payload policy
	root   *pathNode
	slots  int    // distinct key paths that carry conditions
	cel    *Expr  // nil: no CEL condition
	canon  []byte // canonical JSON
}

// policy is one object of a payload policy: every key must match, and when
// there are "$or" branches, at least one of them too.
type policy struct {
	keys []*keyRule // sorted by name
	or   []*policy  // sorted by canonical JSON
}

// keyRule is one key of a policy: a list of conditions (OR) on the values
// at its path, or a nested policy on the object below it.
type keyRule struct {
	name   string
	path   []string // from the payload's root
	slot   int      // index of the path's values, when conds != nil
	conds  []cond   // sorted by canonical JSON
	nested *policy
}

// pathNode is the trie of every key path the policy names, which Match
// walks along the payload: values under keys outside it are skipped.
type pathNode struct {
	children map[string]*pathNode
	slot     int // -1 when no conditions apply at this path
}

// Parse reads a filter from its JSON form. Empty input and "null" give a
// nil *Filter, which matches every event. Errors are *herald.Error with
// CodeInvalid and a Field naming the part at fault, such as "filter.types"
// or "filter.payload.amount".
func Parse(raw []byte) (*Filter, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	if len(raw) > MaxSize {
		return nil, herald.FieldErrorf("filter", "the filter is %d bytes of JSON; the limit is %d", len(raw), MaxSize)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	top, err := decodeValue(dec, 0)
	if err == nil {
		if _, err = dec.Token(); err == io.EOF {
			err = nil
		} else if err == nil {
			err = errors.New("data after the filter object")
		}
	}
	if err != nil {
		if e, ok := errors.AsType[*herald.Error](err); ok {
			return nil, e
		}
		return nil, herald.FieldErrorf("filter", "the filter is not valid JSON: %v", err)
	}
	f := &Filter{root: &pathNode{slot: -1}}
	if top.kind == kindString { // a CEL expression alone
		if f.cel, err = CompileCEL("filter", top.str); err != nil {
			return nil, err
		}
		f.canon = f.appendJSON(nil)
		return f, nil
	}
	if top.kind != kindObject {
		return nil, herald.FieldErrorf("filter", `the filter must be a JSON object such as {"types": ["order.*"], "payload": {...}}, or a string holding a CEL expression such as "event.data.amount > 100"`)
	}
	for _, m := range top.obj {
		switch m.key {
		case "cel":
			if m.val.kind != kindString {
				return nil, herald.FieldErrorf("filter.cel", "cel must be a string holding a CEL expression over event, such as \"event.data.amount > 100\"")
			}
			if f.cel, err = CompileCEL("filter.cel", m.val.str); err != nil {
				return nil, err
			}
		case "types":
			if err := f.parseTypes(m.val); err != nil {
				return nil, err
			}
		case "payload":
			if m.val.kind == kindNull {
				continue
			}
			if m.val.kind != kindObject {
				return nil, herald.FieldErrorf("filter.payload", "payload must be an object that maps payload keys to conditions")
			}
			if len(m.val.obj) == 0 {
				continue // matches everything, like no policy
			}
			st := &parseState{f: f}
			p, err := st.policy(m.val, "filter.payload", nil, 0)
			if err != nil {
				return nil, err
			}
			f.policy = p
		default:
			return nil, herald.FieldErrorf("filter."+m.key, "unknown filter field %q; a filter has \"types\", \"payload\" and \"cel\"", m.key)
		}
	}
	f.canon = f.appendJSON(nil)
	return f, nil
}

func (f *Filter) parseTypes(v jv) error {
	const field = "filter.types"
	switch {
	case v.kind == kindNull:
		return nil
	case v.kind != kindArray:
		return herald.FieldErrorf(field, "types must be an array of event type patterns")
	case len(v.arr) == 0:
		return herald.FieldErrorf(field, "types is empty; leave it out to accept every type")
	case len(v.arr) > MaxTypes:
		return herald.FieldErrorf(field, "types lists %d patterns; the limit is %d", len(v.arr), MaxTypes)
	}
	for i, t := range v.arr {
		if t.kind != kindString {
			return herald.FieldErrorf(field, "types[%d] must be a string", i)
		}
		if t.str == "" || len(t.str) > MaxTypeLen || !printable(t.str) {
			return herald.FieldErrorf(field, "types[%d] must be 1 to %d printable ASCII characters without spaces", i, MaxTypeLen)
		}
		p := t.str
		for strings.Contains(p, "**") {
			p = strings.ReplaceAll(p, "**", "*")
		}
		f.types = append(f.types, p)
	}
	slices.Sort(f.types)
	f.types = slices.Compact(f.types)
	return nil
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

// parseState counts what the limits bound while a policy is parsed.
type parseState struct {
	f          *Filter
	keys       int
	conditions int
}

func (st *parseState) policy(v jv, field string, prefix []string, depth int) (*policy, error) {
	if v.kind != kindObject {
		return nil, herald.FieldErrorf(field, "%s must be an object", field)
	}
	if len(v.obj) == 0 {
		return nil, herald.FieldErrorf(field, "%s is an empty object; name at least one key", field)
	}
	p := &policy{}
	for _, m := range v.obj {
		if m.key == "$or" {
			if depth+1 > MaxDepth {
				return nil, herald.FieldErrorf(field, "%s nests deeper than %d levels (each nested object and each $or is a level)", field, MaxDepth)
			}
			if m.val.kind != kindArray || len(m.val.arr) == 0 {
				return nil, herald.FieldErrorf(field+".$or", "$or must be a non-empty array of policies")
			}
			for i, b := range m.val.arr {
				bp, err := st.policy(b, fmt.Sprintf("%s.$or[%d]", field, i), prefix, depth+1)
				if err != nil {
					return nil, err
				}
				p.or = append(p.or, bp)
			}
			continue
		}
		kfield := field + "." + m.key
		switch {
		case m.key == "":
			return nil, herald.FieldErrorf(field, "%s has an empty key", field)
		case strings.HasPrefix(m.key, "$"):
			return nil, herald.FieldErrorf(kfield, "unknown operator %q; the only $ key is $or", m.key)
		case depth+1 > MaxDepth:
			return nil, herald.FieldErrorf(kfield, "%s nests deeper than %d levels (each nested object and each $or is a level)", kfield, MaxDepth)
		}
		if st.keys++; st.keys > MaxKeys {
			return nil, herald.FieldErrorf(kfield, "the payload policy names more than %d keys", MaxKeys)
		}
		k := &keyRule{name: m.key, path: append(slices.Clip(prefix), m.key), slot: -1}
		switch m.val.kind {
		case kindArray:
			if len(m.val.arr) == 0 {
				return nil, herald.FieldErrorf(kfield, "%s has no conditions; list at least one", kfield)
			}
			for i, c := range m.val.arr {
				cd, err := st.cond(c, kfield, i)
				if err != nil {
					return nil, err
				}
				k.conds = append(k.conds, cd)
			}
			k.conds = sortConds(k.conds)
			k.slot = st.slotFor(k.path)
		case kindObject:
			nested, err := st.policy(m.val, kfield, k.path, depth+1)
			if err != nil {
				return nil, err
			}
			k.nested = nested
		default:
			return nil, herald.FieldErrorf(kfield, "%s must be an array of conditions or an object of nested keys", kfield)
		}
		p.keys = append(p.keys, k)
	}
	slices.SortFunc(p.keys, func(a, b *keyRule) int { return strings.Compare(a.name, b.name) })
	if len(p.or) > 0 {
		p.or = sortPolicies(p.or)
	}
	return p, nil
}

// slotFor returns the value slot of a key path, adding it to the trie.
func (st *parseState) slotFor(path []string) int {
	n := st.f.root
	for _, k := range path {
		c := n.children[k]
		if c == nil {
			if n.children == nil {
				n.children = map[string]*pathNode{}
			}
			c = &pathNode{slot: -1}
			n.children[k] = c
		}
		n = c
	}
	if n.slot < 0 {
		n.slot = st.f.slots
		st.f.slots++
	}
	return n.slot
}

// op is a condition's operator.
type op uint8

const (
	opString op = iota // exact string
	opNumber           // exact number, compared numerically
	opBool
	opNull
	opPrefix
	opSuffix
	opEqualsIgnoreCase
	opWildcard
	opCIDR
	opNumeric
	opExists
	opAnythingBut
)

// cond is one condition of a key.
type cond struct {
	op     op
	s      string
	f      float64
	b      bool
	cidr   netip.Prefix
	lo, hi bound  // opNumeric
	not    []cond // opAnythingBut: exact values, or one pattern condition
}

// bound is one end of a numeric range.
type bound struct {
	set       bool
	v         float64
	inclusive bool
}

func (st *parseState) cond(v jv, field string, i int) (cond, error) {
	bad := func(format string, args ...any) (cond, error) {
		return cond{}, herald.FieldErrorf(field, "condition %d of %s: %s", i+1, field, fmt.Sprintf(format, args...))
	}
	if st.conditions++; st.conditions > MaxConditions {
		return bad("the payload policy holds more than %d conditions", MaxConditions)
	}
	switch v.kind {
	case kindString, kindNumber, kindBool, kindNull:
		c, err := exact(v)
		if err != nil {
			return bad("%v", err)
		}
		return c, nil
	case kindArray:
		return bad("a condition cannot be an array; list the values in the key's array")
	}
	if len(v.obj) != 1 {
		return bad("an operator object has exactly one key, such as {\"prefix\": \"ord_\"}")
	}
	name, arg := v.obj[0].key, v.obj[0].val
	switch name {
	case "prefix", "suffix", "equals-ignore-case", "wildcard":
		if arg.kind != kindString {
			return bad("%s takes a string", name)
		}
		return stringOp(name, arg.str), nil
	case "cidr":
		if arg.kind != kindString {
			return bad("cidr takes a string such as \"10.0.0.0/8\"")
		}
		p, err := netip.ParsePrefix(arg.str)
		if err != nil {
			a, aerr := netip.ParseAddr(arg.str)
			if aerr != nil || a.Zone() != "" {
				return bad("cidr %q is not an IP prefix such as \"10.0.0.0/8\" or an IP address", arg.str)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		return cond{op: opCIDR, cidr: p.Masked()}, nil
	case "numeric":
		return st.numeric(arg, bad)
	case "exists":
		if arg.kind != kindBool {
			return bad("exists takes true or false")
		}
		return cond{op: opExists, b: arg.b}, nil
	case "anything-but":
		return st.anythingBut(arg, bad)
	}
	return bad("unknown operator %q; use prefix, suffix, equals-ignore-case, wildcard, cidr, numeric, exists or anything-but", name)
}

func exact(v jv) (cond, error) {
	switch v.kind {
	case kindString:
		return cond{op: opString, s: v.str}, nil
	case kindNumber:
		f, err := number(v.num)
		if err != nil {
			return cond{}, err
		}
		return cond{op: opNumber, f: f}, nil
	case kindBool:
		return cond{op: opBool, b: v.b}, nil
	default:
		return cond{op: opNull}, nil
	}
}

func number(n json.Number) (float64, error) {
	f, err := strconv.ParseFloat(string(n), 64)
	if err != nil || math.IsInf(f, 0) {
		return 0, fmt.Errorf("the number %s is out of range", n)
	}
	if f == 0 {
		f = 0 // -0 is 0
	}
	return f, nil
}

func stringOp(name, s string) cond {
	switch name {
	case "prefix":
		return cond{op: opPrefix, s: s}
	case "suffix":
		return cond{op: opSuffix, s: s}
	case "equals-ignore-case":
		return cond{op: opEqualsIgnoreCase, s: s}
	default:
		for strings.Contains(s, "**") {
			s = strings.ReplaceAll(s, "**", "*")
		}
		return cond{op: opWildcard, s: s}
	}
}

func (st *parseState) numeric(arg jv, bad func(string, ...any) (cond, error)) (cond, error) {
	const usage = `numeric takes [op, number] or a range [">" or ">=", number, "<" or "<=", number]; op is one of =, <, <=, >, >=`
	if arg.kind != kindArray || (len(arg.arr) != 2 && len(arg.arr) != 4) {
		return bad(usage)
	}
	c := cond{op: opNumeric}
	for j := 0; j < len(arg.arr); j += 2 {
		o, n := arg.arr[j], arg.arr[j+1]
		if o.kind != kindString || n.kind != kindNumber {
			return bad(usage)
		}
		f, err := number(n.num)
		if err != nil {
			return bad("%v", err)
		}
		switch o.str {
		case "=":
			if len(arg.arr) != 2 {
				return bad(`"=" cannot be part of a range; use it alone: ["=", %s]`, n.num)
			}
			c.lo, c.hi = bound{true, f, true}, bound{true, f, true}
		case ">", ">=":
			if c.lo.set {
				return bad("a range has one lower bound (> or >=) and one upper bound (< or <=)")
			}
			c.lo = bound{true, f, o.str == ">="}
		case "<", "<=":
			if c.hi.set {
				return bad("a range has one lower bound (> or >=) and one upper bound (< or <=)")
			}
			c.hi = bound{true, f, o.str == "<="}
		default:
			return bad("unknown numeric operator %q; use =, <, <=, > or >=", o.str)
		}
	}
	if c.lo.set && c.hi.set && (c.lo.v > c.hi.v || c.lo.v == c.hi.v && !(c.lo.inclusive && c.hi.inclusive)) {
		return bad("the range matches no number: its lower bound is not below its upper bound")
	}
	return c, nil
}

func (st *parseState) anythingBut(arg jv, bad func(string, ...any) (cond, error)) (cond, error) {
	c := cond{op: opAnythingBut}
	switch arg.kind {
	case kindString, kindNumber, kindBool, kindNull:
		e, err := exact(arg)
		if err != nil {
			return bad("%v", err)
		}
		c.not = []cond{e}
	case kindArray:
		if len(arg.arr) == 0 {
			return bad("anything-but needs at least one value")
		}
		st.conditions += len(arg.arr) - 1
		if st.conditions > MaxConditions {
			return bad("the payload policy holds more than %d conditions", MaxConditions)
		}
		for _, v := range arg.arr {
			if v.kind == kindArray || v.kind == kindObject {
				return bad("anything-but lists strings, numbers, true, false or null")
			}
			e, err := exact(v)
			if err != nil {
				return bad("%v", err)
			}
			c.not = append(c.not, e)
		}
		c.not = sortConds(c.not)
	case kindObject:
		if len(arg.obj) != 1 {
			return bad("anything-but takes one of prefix, suffix, equals-ignore-case or wildcard")
		}
		name, v := arg.obj[0].key, arg.obj[0].val
		switch name {
		case "prefix", "suffix", "equals-ignore-case", "wildcard":
		default:
			return bad("anything-but takes prefix, suffix, equals-ignore-case or wildcard, not %q", name)
		}
		if v.kind != kindString {
			return bad("anything-but %s takes a string", name)
		}
		c.not = []cond{stringOp(name, v.str)}
	}
	return c, nil
}

// sortConds sorts conditions by their canonical JSON and drops duplicates.
func sortConds(cs []cond) []cond {
	type rendered struct {
		j string
		c cond
	}
	r := make([]rendered, len(cs))
	for i, c := range cs {
		r[i] = rendered{string(c.appendJSON(nil)), c}
	}
	slices.SortFunc(r, func(a, b rendered) int { return strings.Compare(a.j, b.j) })
	r = slices.CompactFunc(r, func(a, b rendered) bool { return a.j == b.j })
	out := make([]cond, len(r))
	for i := range r {
		out[i] = r[i].c
	}
	return out
}

func sortPolicies(ps []*policy) []*policy {
	type rendered struct {
		j string
		p *policy
	}
	r := make([]rendered, len(ps))
	for i, p := range ps {
		r[i] = rendered{string(p.appendJSON(nil)), p}
	}
	slices.SortFunc(r, func(a, b rendered) int { return strings.Compare(a.j, b.j) })
	r = slices.CompactFunc(r, func(a, b rendered) bool { return a.j == b.j })
	out := make([]*policy, len(r))
	for i := range r {
		out[i] = r[i].p
	}
	return out
}

// Match reports whether the event passes the filter: its type matches one
// of the type patterns (when there are any), and its payload matches the
// payload policy (when there is one). A payload policy matches only a JSON
// object payload whose content type is JSON ("application/json", any
// "+json" type, or empty); anything else, including malformed JSON, does
// not match. The payload is read once, without building a tree. A nil
// *Filter matches everything. Match is safe for concurrent use.
//
// A CEL condition sees only the type and the payload here (topic, seq,
// id, key and time are empty): use MatchEvent where the event is at hand.
func (f *Filter) Match(eventType, contentType string, payload []byte) bool {
	if f == nil {
		return true
	}
	if f.cel != nil {
		return f.MatchEvent(context.Background(), &herald.Event{Type: eventType, ContentType: contentType, Payload: payload}, nil)
	}
	if len(f.types) > 0 && !f.matchType(eventType) {
		return false
	}
	if f.policy == nil {
		return true
	}
	if !jsonMediaType(contentType) {
		return false
	}
	return f.matchPayload(payload)
}

// MatchEvent reports whether the event passes the filter: its type, its
// payload policy and its CEL condition, each when there is one. dec, when
// not nil, renders payloads that are not JSON (protobuf, through the
// topic's schema) so that payload policies and CEL read their fields as
// they read a JSON payload's; without it, or when it renders nothing, such
// a payload fails every payload policy and CEL sees its data as null.
// MatchEvent is safe for concurrent use.
func (f *Filter) MatchEvent(ctx context.Context, ev *herald.Event, dec Decoder) bool {
	if f == nil {
		return true
	}
	if len(f.types) > 0 && !f.matchType(ev.Type) {
		return false
	}
	if f.policy == nil && f.cel == nil {
		return true
	}
	raw := jsonPayload(ctx, ev, dec)
	if f.policy != nil && (raw == nil || !f.matchPayload(raw)) {
		return false
	}
	if f.cel == nil {
		return true
	}
	cv := &Event{Topic: ev.Topic, Seq: ev.Seq, ID: ev.ID, Type: ev.Type, Key: ev.Key, Time: ev.Time}
	if raw != nil {
		var v any
		if json.Unmarshal(raw, &v) == nil {
			cv.Data = v
		}
	}
	return f.cel.Test(cv)
}

// matchPayload matches a JSON payload against the payload policy.
func (f *Filter) matchPayload(payload []byte) bool {
	s := getScanner(payload, f.slots)
	defer s.release()
	return s.document(f.root) && f.policy.match(s)
}

func (f *Filter) matchType(t string) bool {
	for _, p := range f.types {
		if glob(p, t) {
			return true
		}
	}
	return false
}

// jsonMediaType reports whether a content type may hold JSON.
func jsonMediaType(ct string) bool {
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	ct = strings.TrimSpace(ct)
	if ct == "" || strings.EqualFold(ct, "application/json") {
		return true
	}
	return len(ct) > 5 && strings.EqualFold(ct[len(ct)-5:], "+json") && strings.IndexByte(ct, '/') > 0
}

// glob reports whether s matches pattern, where '*' matches any run of
// bytes, including none, and every other byte matches itself. It runs in
// O(len(pattern)·len(s)) at worst and allocates nothing.
func glob(pattern, s string) bool {
	px, sx := 0, 0
	starPx, starSx := -1, 0
	for sx < len(s) {
		switch {
		case px < len(pattern) && pattern[px] == '*':
			starPx, starSx = px, sx
			px++
		case px < len(pattern) && pattern[px] == s[sx]:
			px++
			sx++
		case starPx >= 0:
			starSx++
			px, sx = starPx+1, starSx
		default:
			return false
		}
	}
	for px < len(pattern) && pattern[px] == '*' {
		px++
	}
	return px == len(pattern)
}

func (p *policy) match(s *scanner) bool {
	for _, k := range p.keys {
		if !k.match(s) {
			return false
		}
	}
	if len(p.or) == 0 {
		return true
	}
	for _, b := range p.or {
		if b.match(s) {
			return true
		}
	}
	return false
}

func (k *keyRule) match(s *scanner) bool {
	if k.nested != nil {
		return k.nested.match(s)
	}
	head := s.heads[k.slot]
	for i := range k.conds {
		c := &k.conds[i]
		if c.op == opExists {
			if (head >= 0) == c.b {
				return true
			}
			continue
		}
		for j := head; j >= 0; j = s.vals[j].next {
			if c.match(&s.vals[j]) {
				return true
			}
		}
	}
	return false
}

// match reports whether the condition holds for one value found at its key.
func (c *cond) match(v *value) bool {
	switch c.op {
	case opString:
		return v.kind == kindString && v.s == c.s
	case opNumber:
		return v.kind == kindNumber && v.f == c.f
	case opBool:
		return v.kind == kindBool && v.b == c.b
	case opNull:
		return v.kind == kindNull
	case opPrefix:
		return v.kind == kindString && strings.HasPrefix(v.s, c.s)
	case opSuffix:
		return v.kind == kindString && strings.HasSuffix(v.s, c.s)
	case opEqualsIgnoreCase:
		return v.kind == kindString && strings.EqualFold(v.s, c.s)
	case opWildcard:
		return v.kind == kindString && glob(c.s, v.s)
	case opCIDR:
		if v.kind != kindString {
			return false
		}
		a, err := netip.ParseAddr(v.s)
		if err != nil {
			return false
		}
		a = a.WithZone("")
		if c.cidr.Addr().Is4() {
			a = a.Unmap()
		}
		return c.cidr.Contains(a)
	case opNumeric:
		if v.kind != kindNumber {
			return false
		}
		if c.lo.set && (v.f < c.lo.v || v.f == c.lo.v && !c.lo.inclusive) {
			return false
		}
		if c.hi.set && (v.f > c.hi.v || v.f == c.hi.v && !c.hi.inclusive) {
			return false
		}
		return true
	case opAnythingBut:
		if v.kind == kindObject {
			return false
		}
		for i := range c.not {
			n := &c.not[i]
			switch n.op {
			case opPrefix, opSuffix, opEqualsIgnoreCase, opWildcard:
				if v.kind != kindString || n.match(v) {
					return false
				}
			default:
				if n.match(v) {
					return false
				}
			}
		}
		return true
	}
	return false
}

// String returns the canonical JSON form of the filter: no spaces, type
// patterns sorted and deduplicated, keys sorted, conditions and $or
// branches sorted and deduplicated, numbers in shortest form, strings
// escaped as encoding/json escapes them (so "<" is written \u003c and
// json.Marshal(f) is byte for byte f.String()). Equal filters have equal
// canonical forms, and Parse(f.String()) gives f back. A nil or zero Filter
// gives "{}".
func (f *Filter) String() string {
	if f == nil || f.canon == nil {
		return "{}"
	}
	return string(f.canon)
}

// MarshalJSON returns the canonical JSON form (see String).
func (f *Filter) MarshalJSON() ([]byte, error) {
	return []byte(f.String()), nil
}

// UnmarshalJSON parses the filter with Parse; JSON null leaves a zero
// Filter, which matches everything.
func (f *Filter) UnmarshalJSON(b []byte) error {
	p, err := Parse(b)
	if err != nil {
		return err
	}
	if p == nil {
		p = &Filter{}
	}
	*f = *p
	return nil
}

// Types returns the canonical type patterns; nil when the filter accepts
// every type.
func (f *Filter) Types() []string {
	if f == nil {
		return nil
	}
	return slices.Clone(f.types)
}

// HasPayloadPolicy reports whether the filter looks into payloads, so that
// a caller can skip reading payloads it would not need.
func (f *Filter) HasPayloadPolicy() bool { return f != nil && (f.policy != nil || f.cel != nil) }

// CEL returns the filter's CEL expression, "" when it has none.
func (f *Filter) CEL() string {
	if f == nil || f.cel == nil {
		return ""
	}
	return f.cel.src
}

// Canonical JSON.

func (f *Filter) appendJSON(b []byte) []byte {
	if f.cel != nil && len(f.types) == 0 && f.policy == nil {
		return appendString(b, f.cel.src) // a CEL expression alone stays a string
	}
	b = append(b, '{')
	if len(f.types) > 0 {
		b = append(b, `"types":[`...)
		for i, t := range f.types {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, t)
		}
		b = append(b, ']')
	}
	if f.policy != nil {
		if len(f.types) > 0 {
			b = append(b, ',')
		}
		b = append(b, `"payload":`...)
		b = f.policy.appendJSON(b)
	}
	if f.cel != nil {
		if len(f.types) > 0 || f.policy != nil {
			b = append(b, ',')
		}
		b = append(b, `"cel":`...)
		b = appendString(b, f.cel.src)
	}
	return append(b, '}')
}

func (p *policy) appendJSON(b []byte) []byte {
	b = append(b, '{')
	if len(p.or) > 0 { // "$or" sorts before every other key
		b = append(b, `"$or":[`...)
		for i, o := range p.or {
			if i > 0 {
				b = append(b, ',')
			}
			b = o.appendJSON(b)
		}
		b = append(b, ']')
	}
	for i, k := range p.keys {
		if i > 0 || len(p.or) > 0 {
			b = append(b, ',')
		}
		b = appendString(b, k.name)
		b = append(b, ':')
		if k.nested != nil {
			b = k.nested.appendJSON(b)
			continue
		}
		b = append(b, '[')
		for j := range k.conds {
			if j > 0 {
				b = append(b, ',')
			}
			b = k.conds[j].appendJSON(b)
		}
		b = append(b, ']')
	}
	return append(b, '}')
}

func (c *cond) appendJSON(b []byte) []byte {
	switch c.op {
	case opString:
		return appendString(b, c.s)
	case opNumber:
		return appendNumber(b, c.f)
	case opBool:
		return strconv.AppendBool(b, c.b)
	case opNull:
		return append(b, "null"...)
	case opPrefix:
		return append(appendString(append(b, `{"prefix":`...), c.s), '}')
	case opSuffix:
		return append(appendString(append(b, `{"suffix":`...), c.s), '}')
	case opEqualsIgnoreCase:
		return append(appendString(append(b, `{"equals-ignore-case":`...), c.s), '}')
	case opWildcard:
		return append(appendString(append(b, `{"wildcard":`...), c.s), '}')
	case opCIDR:
		return append(appendString(append(b, `{"cidr":`...), c.cidr.String()), '}')
	case opExists:
		return append(strconv.AppendBool(append(b, `{"exists":`...), c.b), '}')
	case opNumeric:
		b = append(b, `{"numeric":[`...)
		if c.lo == c.hi {
			b = appendNumber(append(b, `"=",`...), c.lo.v)
			return append(b, "]}"...)
		}
		if c.lo.set {
			op := ">"
			if c.lo.inclusive {
				op = ">="
			}
			b = appendNumber(append(appendString(b, op), ','), c.lo.v)
		}
		if c.hi.set {
			if c.lo.set {
				b = append(b, ',')
			}
			op := "<"
			if c.hi.inclusive {
				op = "<="
			}
			b = appendNumber(append(appendString(b, op), ','), c.hi.v)
		}
		return append(b, "]}"...)
	case opAnythingBut:
		b = append(b, `{"anything-but":`...)
		switch n := c.not[0].op; {
		case n == opPrefix || n == opSuffix || n == opEqualsIgnoreCase || n == opWildcard:
			b = c.not[0].appendJSON(b)
		default:
			b = append(b, '[')
			for i := range c.not {
				if i > 0 {
					b = append(b, ',')
				}
				b = c.not[i].appendJSON(b)
			}
			b = append(b, ']')
		}
		return append(b, '}')
	}
	return b
}

// appendNumber writes a float64 as encoding/json does: the shortest
// representation that reads back to the same value.
func appendNumber(b []byte, f float64) []byte {
	j, _ := json.Marshal(f) // f is finite: Parse rejects the rest
	return append(b, j...)
}

// appendString writes s as a JSON string escaped the way encoding/json
// escapes it by default (<, > and & too, and U+2028 and U+2029), so that
// json.Marshal of a Filter gives exactly its String.
func appendString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c == '\n':
			b = append(b, '\\', 'n')
		case c == '\r':
			b = append(b, '\\', 'r')
		case c == '\t':
			b = append(b, '\\', 't')
		case c < 0x20 || c == '<' || c == '>' || c == '&':
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		case c == 0xe2 && i+2 < len(s) && s[i+1] == 0x80 && s[i+2]&^1 == 0xa8: // U+2028, U+2029
			b = append(b, '\\', 'u', '2', '0', '2', hex[s[i+2]&0xf])
			i += 2
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}
