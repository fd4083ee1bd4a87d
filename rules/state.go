package rules

import (
	"encoding/json"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// keyState is one key's state, stored as JSON in the key's row.
type keyState struct {
	// Seqs is the newest seq applied per input topic: an event at or
	// below it was applied before (a redelivery) and is skipped.
	Seqs    map[string]int64 `json:"seqs"`
	Entries []entry          `json:"entries,omitempty"` // sliding windows
	Start   int64            `json:"start,omitempty"`   // window start, Unix ns (tumbling, session)
	Last    int64            `json:"last,omitempty"`    // newest event time, Unix ns
	Acc     acc              `json:"acc"`
	Fired   bool             `json:"fired,omitempty"` // the condition held at the last event
	Deleted bool             `json:"deleted,omitempty"`
}

// entry is one event in a sliding window.
type entry struct {
	T int64           `json:"t"`
	V float64         `json:"v,omitempty"`
	N bool            `json:"n,omitempty"` // V is set: the field was a number
	D string          `json:"d,omitempty"`
	L json.RawMessage `json:"l,omitempty"`
}

// acc accumulates an aggregate.
type acc struct {
	Count    int64           `json:"n,omitempty"`
	Sum      float64         `json:"sum,omitempty"`
	Min      *float64        `json:"min,omitempty"`
	Max      *float64        `json:"max,omitempty"`
	Distinct []string        `json:"distinct,omitempty"` // sorted
	Latest   json.RawMessage `json:"latest,omitempty"`
}

// sample is what one event contributes: its number, its distinct value,
// its latest value.
type sample struct {
	v    float64
	ok   bool // v is set (the field is a number)
	d    string
	l    json.RawMessage // the value as JSON: only for latest and distinct_count
	have bool            // the event carries the field
}

func (a *acc) add(s sample) {
	a.Count++
	if s.ok {
		a.Sum += s.v
		if a.Min == nil || s.v < *a.Min {
			a.Min = new(s.v)
		}
		if a.Max == nil || s.v > *a.Max {
			a.Max = new(s.v)
		}
	}
	if s.l != nil { // latest and distinct_count keep the value
		if i, found := slices.BinarySearch(a.Distinct, s.d); !found && len(a.Distinct) < MaxDistinctPerKey {
			a.Distinct = slices.Insert(a.Distinct, i, s.d)
		}
		a.Latest = s.l
	}
}

// value is the aggregate op's value of the accumulator.
func (a *acc) value(op string) any {
	switch op {
	case "count":
		return a.Count
	case "sum":
		return a.Sum
	case "avg":
		if a.Count == 0 {
			return 0.0
		}
		return a.Sum / float64(a.Count)
	case "min":
		if a.Min == nil {
			return nil
		}
		return *a.Min
	case "max":
		if a.Max == nil {
			return nil
		}
		return *a.Max
	case "distinct_count":
		return int64(len(a.Distinct))
	case "latest":
		if a.Latest == nil {
			return nil
		}
		var v any
		_ = json.Unmarshal(a.Latest, &v)
		return v
	}
	return nil
}

// set makes the accumulator hold v, as an operator's override: latest
// holds it; numbers start again from it.
func (a *acc) set(op string, raw json.RawMessage) {
	*a = acc{Latest: raw}
	f, ok := number(raw)
	switch op {
	case "count", "distinct_count":
		if ok {
			a.Count = int64(f)
		}
	case "sum", "min", "max", "avg":
		if ok {
			a.Count, a.Sum, a.Min, a.Max = 1, f, new(f), new(f)
		}
	}
}

// field returns the value at a dotted path of a JSON payload.
func field(data any, path string) (any, bool) {
	if path == "" {
		return data, data != nil
	}
	cur := data
	for seg := range strings.SplitSeq(path, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[seg]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// number reads a JSON number, or a string holding one (protojson writes
// 64-bit integers as strings; many producers send amounts as strings).
func number(raw json.RawMessage) (float64, bool) {
	var v any
	if json.Unmarshal(raw, &v) != nil {
		return 0, false
	}
	return toNumber(v)
}

func toNumber(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, !math.IsInf(x, 0) && !math.IsNaN(x)
	case json.Number:
		f, err := x.Float64()
		return f, err == nil
	case string:
		f, err := strconv.ParseFloat(strings.TrimSpace(x), 64)
		return f, err == nil && !math.IsInf(f, 0) && !math.IsNaN(f)
	}
	return 0, false
}

// keyString renders a key field: strings as they are, numbers and
// booleans in JSON.
func keyString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case nil:
		return ""
	case map[string]any, []any:
		return ""
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// timeOf reads an event time field: RFC 3339, or Unix seconds.
func timeOf(v any) (time.Time, bool) {
	switch x := v.(type) {
	case string:
		if t, err := time.Parse(time.RFC3339Nano, x); err == nil {
			return t, true
		}
		if f, ok := toNumber(x); ok {
			return time.Unix(0, int64(f*1e9)), true
		}
	case float64:
		return time.Unix(0, int64(x*1e9)), true
	}
	return time.Time{}, false
}
