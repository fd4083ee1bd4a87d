package filter

import (
	"errors"
	"testing"

	"github.com/heraldhq/herald"
)

// FuzzParse checks that Parse never panics, fails only with CodeInvalid,
// and that the canonical form of what it accepts parses back to itself.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		`{}`, `{"types":["order.*"]}`,
		`{"types":["a","b.*"],"payload":{"a":[1,"x",null,true],"b":{"c":[{"prefix":"p"}]}}}`,
		`{"payload":{"$or":[{"a":[{"numeric":[">",0,"<=",100]}]},{"b":[{"anything-but":["x",1]}]}]}}`,
		`{"payload":{"ip":[{"cidr":"10.0.0.0/8"}],"e":[{"exists":false},{"equals-ignore-case":"X"}]}}`,
		`"event.data.amount > 100"`, `{"types":["o.*"],"cel":"event.key == 'k' || event.seq > 3"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		flt, err := Parse(raw)
		if err != nil {
			if e, ok := errors.AsType[*herald.Error](err); !ok || e.Code != herald.CodeInvalid || e.Field == "" {
				t.Fatalf("Parse error %#v is not CodeInvalid with a field", err)
			}
			return
		}
		canon := flt.String()
		again, err := Parse([]byte(canon))
		if err != nil {
			t.Fatalf("the canonical form %s does not parse: %v", canon, err)
		}
		if again.String() != canon {
			t.Fatalf("canonical form unstable: %s then %s", canon, again)
		}
	})
}

// FuzzMatch checks that Match never panics and agrees with the plain
// reference implementation on every payload where the two can be compared.
func FuzzMatch(f *testing.F) {
	f.Add([]byte(`{"payload":{"a":[1]}}`), "x", "application/json", []byte(`{"a":1}`))
	f.Add([]byte(`{"types":["o.*"],"payload":{"a":{"b":[{"exists":false}]}}}`), "o.x", "", []byte(`{"a":[{"b":1},{"c":2}]}`))
	f.Fuzz(func(t *testing.T, filter []byte, eventType, contentType string, payload []byte) {
		flt, err := Parse(filter)
		if err != nil {
			return
		}
		got := flt.Match(eventType, contentType, payload)
		if want, ok := referenceMatch(flt, eventType, contentType, payload); ok && got != want {
			t.Fatalf("filter %s, type %q, content type %q, payload %q: Match = %v, reference = %v",
				flt, eventType, contentType, payload, got, want)
		}
	})
}
