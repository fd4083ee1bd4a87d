package filter

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/heraldhq/herald"
)

func mustParse(t testing.TB, s string) *Filter {
	t.Helper()
	f, err := Parse([]byte(s))
	if err != nil {
		t.Fatalf("Parse(%s): %v", s, err)
	}
	return f
}

// payloadCase is one payload against one filter; the event type is
// "order.created" and the content type application/json unless given.
type payloadCase struct {
	payload string
	want    bool
}

func TestMatchPayload(t *testing.T) {
	cases := []struct {
		name   string
		filter string
		cases  []payloadCase
	}{
		{"exact string", `{"payload":{"status":["shipped"]}}`, []payloadCase{
			{`{"status":"shipped"}`, true},
			{`{"status":"Shipped"}`, false},
			{`{"status":"shipped "}`, false},
			{`{"status":["pending","shipped"]}`, true},
			{`{"status":["pending"]}`, false},
			{`{"status":1}`, false},
			{`{"status":null}`, false},
			{`{"status":{"shipped":true}}`, false},
			{`{"other":"shipped"}`, false},
			{`{}`, false},
		}},
		{"OR within a key", `{"payload":{"status":["shipped","delivered"]}}`, []payloadCase{
			{`{"status":"delivered"}`, true},
			{`{"status":"shipped"}`, true},
			{`{"status":"lost"}`, false},
		}},
		{"AND across keys", `{"payload":{"a":["x"],"b":["y"]}}`, []payloadCase{
			{`{"a":"x","b":"y"}`, true},
			{`{"b":"y","a":"x","c":"z"}`, true},
			{`{"a":"x","b":"z"}`, false},
			{`{"a":"x"}`, false},
		}},
		{"exact number", `{"payload":{"n":[100]}}`, []payloadCase{
			{`{"n":100}`, true},
			{`{"n":100.0}`, true},
			{`{"n":1e2}`, true},
			{`{"n":1.00e+2}`, true},
			{`{"n":"100"}`, false},
			{`{"n":100.5}`, false},
			{`{"n":-100}`, false},
			{`{"n":[1,100]}`, true},
		}},
		{"exact zero and minus zero", `{"payload":{"n":[0]}}`, []payloadCase{
			{`{"n":0}`, true},
			{`{"n":-0}`, true},
			{`{"n":0.0e5}`, true},
			{`{"n":false}`, false},
		}},
		{"exact fraction", `{"payload":{"n":[0.1]}}`, []payloadCase{
			{`{"n":0.1}`, true},
			{`{"n":1e-1}`, true},
			{`{"n":0.10000000000000001}`, true}, // the same double
			{`{"n":0.2}`, false},
		}},
		{"numbers beyond 2^53 compare as doubles", `{"payload":{"n":[9007199254740993]}}`, []payloadCase{
			{`{"n":9007199254740992}`, true},
			{`{"n":9007199254740995}`, false},
		}},
		{"booleans", `{"payload":{"b":[true]}}`, []payloadCase{
			{`{"b":true}`, true},
			{`{"b":false}`, false},
			{`{"b":"true"}`, false},
			{`{"b":1}`, false},
		}},
		{"null", `{"payload":{"v":[null]}}`, []payloadCase{
			{`{"v":null}`, true},
			{`{"v":"null"}`, false},
			{`{"v":[null,1]}`, true},
			{`{}`, false},
		}},
		{"prefix", `{"payload":{"id":[{"prefix":"ord_"}]}}`, []payloadCase{
			{`{"id":"ord_123"}`, true},
			{`{"id":"ord_"}`, true},
			{`{"id":"or"}`, false},
			{`{"id":"ORD_1"}`, false},
			{`{"id":"xord_1"}`, false},
			{`{"id":5}`, false},
			{`{"id":["x","ord_9"]}`, true},
		}},
		{"suffix", `{"payload":{"file":[{"suffix":".png"}]}}`, []payloadCase{
			{`{"file":"a.png"}`, true},
			{`{"file":".png"}`, true},
			{`{"file":"a.png.gz"}`, false},
			{`{"file":"png"}`, false},
		}},
		{"equals-ignore-case", `{"payload":{"cur":[{"equals-ignore-case":"eur"}]}}`, []payloadCase{
			{`{"cur":"EUR"}`, true},
			{`{"cur":"eUr"}`, true},
			{`{"cur":"euro"}`, false},
			{`{"cur":"usd"}`, false},
		}},
		{"equals-ignore-case folds Unicode", `{"payload":{"w":[{"equals-ignore-case":"σας"}, {"equals-ignore-case":"k"}]}}`, []payloadCase{
			{`{"w":"ΣΑΣ"}`, true},
			{`{"w":"\u212a"}`, true}, // KELVIN SIGN folds to k
			{`{"w":"K"}`, true},
		}},
		{"wildcard", `{"payload":{"path":[{"wildcard":"img/*.png"}]}}`, []payloadCase{
			{`{"path":"img/a.png"}`, true},
			{`{"path":"img/a/b/c.png"}`, true},
			{`{"path":"img/.png"}`, true},
			{`{"path":"img/a.jpg"}`, false},
			{`{"path":"x/img/a.png"}`, false},
			{`{"path":"img/a.png/x"}`, false},
		}},
		{"wildcard with several stars", `{"payload":{"s":[{"wildcard":"a*b*c"}]}}`, []payloadCase{
			{`{"s":"abc"}`, true},
			{`{"s":"aXXbYYc"}`, true},
			{`{"s":"abcbc"}`, true},
			{`{"s":"acb"}`, false},
			{`{"s":"abcd"}`, false},
		}},
		{"cidr IPv4", `{"payload":{"ip":[{"cidr":"10.0.0.0/8"}]}}`, []payloadCase{
			{`{"ip":"10.1.2.3"}`, true},
			{`{"ip":"10.255.255.255"}`, true},
			{`{"ip":"11.0.0.1"}`, false},
			{`{"ip":"::ffff:10.0.0.1"}`, true},
			{`{"ip":"10.1.2.3/32"}`, false},
			{`{"ip":"not an ip"}`, false},
			{`{"ip":167772161}`, false},
		}},
		{"cidr IPv6 and a bare address", `{"payload":{"ip":[{"cidr":"2001:db8::/32"},{"cidr":"192.168.1.1"}]}}`, []payloadCase{
			{`{"ip":"2001:db8::1"}`, true},
			{`{"ip":"2001:db9::1"}`, false},
			{`{"ip":"192.168.1.1"}`, true},
			{`{"ip":"192.168.1.2"}`, false},
		}},
		{"numeric greater than", `{"payload":{"n":[{"numeric":[">",0]}]}}`, []payloadCase{
			{`{"n":0}`, false},
			{`{"n":-0}`, false},
			{`{"n":0.0001}`, true},
			{`{"n":5e-324}`, true},
			{`{"n":-1}`, false},
			{`{"n":"5"}`, false},
			{`{"n":true}`, false},
			{`{"n":1e400}`, true}, // too large for a double: +Inf
			{`{"n":-1e400}`, false},
		}},
		{"numeric at least", `{"payload":{"n":[{"numeric":[">=",0]}]}}`, []payloadCase{
			{`{"n":0}`, true},
			{`{"n":-0}`, true},
			{`{"n":-0.0000001}`, false},
		}},
		{"numeric below and at most", `{"payload":{"lt":[{"numeric":["<",100]}],"le":[{"numeric":["<=",100]}]}}`, []payloadCase{
			{`{"lt":99.999,"le":100}`, true},
			{`{"lt":100,"le":100}`, false},
			{`{"lt":1,"le":100.0000001}`, false},
			{`{"lt":-1e300,"le":-1e300}`, true},
		}},
		{"numeric equal", `{"payload":{"n":[{"numeric":["=",5]}]}}`, []payloadCase{
			{`{"n":5}`, true},
			{`{"n":5.0}`, true},
			{`{"n":5e0}`, true},
			{`{"n":0.5e1}`, true},
			{`{"n":5.000001}`, false},
		}},
		{"numeric range", `{"payload":{"n":[{"numeric":[">",0,"<=",100]}]}}`, []payloadCase{
			{`{"n":0}`, false},
			{`{"n":1}`, true},
			{`{"n":50.5}`, true},
			{`{"n":100}`, true},
			{`{"n":100.0001}`, false},
			{`{"n":[-5,500]}`, false},
			{`{"n":[-5,50]}`, true},
		}},
		{"numeric range written upper bound first", `{"payload":{"n":[{"numeric":["<",-5,">=",-10]}]}}`, []payloadCase{
			{`{"n":-10}`, true},
			{`{"n":-7}`, true},
			{`{"n":-5}`, false},
			{`{"n":-10.5}`, false},
		}},
		{"numeric with exponents", `{"payload":{"n":[{"numeric":[">",1e3]}]}}`, []payloadCase{
			{`{"n":1001}`, true},
			{`{"n":1e3}`, false},
			{`{"n":1.0E+3}`, false},
			{`{"n":1.0000001e3}`, true},
		}},
		{"exists true", `{"payload":{"a":[{"exists":true}]}}`, []payloadCase{
			{`{"a":1}`, true},
			{`{"a":null}`, true},
			{`{"a":""}`, true},
			{`{"a":{}}`, true},
			{`{"a":[null]}`, true},
			{`{"a":[]}`, false},
			{`{"b":1}`, false},
			{`{}`, false},
		}},
		{"exists false", `{"payload":{"a":[{"exists":false}]}}`, []payloadCase{
			{`{}`, true},
			{`{"b":{"a":1}}`, true},
			{`{"a":[]}`, true},
			{`{"a":null}`, false},
			{`{"a":0}`, false},
		}},
		{"exists false on a nested key", `{"payload":{"a":{"b":[{"exists":false}]}}}`, []payloadCase{
			{`{}`, true},
			{`{"a":5}`, true},
			{`{"a":{"c":1}}`, true},
			{`{"a":{"b":1}}`, false},
			{`{"a":[{"c":1},{"b":2}]}`, false},
		}},
		{"exists true on a nested key", `{"payload":{"a":{"b":[{"exists":true}]}}}`, []payloadCase{
			{`{"a":{"b":null}}`, true},
			{`{"a":[{"x":1},{"b":1}]}`, true},
			{`{"a":{"x":{"b":1}}}`, false},
			{`{"b":1}`, false},
		}},
		{"anything-but a value", `{"payload":{"color":[{"anything-but":"red"}]}}`, []payloadCase{
			{`{"color":"blue"}`, true},
			{`{"color":"red"}`, false},
			{`{"color":"RED"}`, true},
			{`{"color":5}`, true},
			{`{"color":null}`, true},
			{`{"color":{"r":255}}`, false},
			{`{"color":["red","blue"]}`, true},
			{`{"color":["red"]}`, false},
			{`{"color":[]}`, false},
			{`{}`, false},
		}},
		{"anything-but a list", `{"payload":{"color":[{"anything-but":["red","green"]}]}}`, []payloadCase{
			{`{"color":"green"}`, false},
			{`{"color":"red"}`, false},
			{`{"color":"blue"}`, true},
		}},
		{"anything-but numbers and null", `{"payload":{"n":[{"anything-but":[0,null]}]}}`, []payloadCase{
			{`{"n":0}`, false},
			{`{"n":0.0}`, false},
			{`{"n":-0}`, false},
			{`{"n":null}`, false},
			{`{"n":1}`, true},
			{`{"n":"0"}`, true},
			{`{"n":false}`, true},
		}},
		{"anything-but prefix", `{"payload":{"env":[{"anything-but":{"prefix":"test_"}}]}}`, []payloadCase{
			{`{"env":"test_1"}`, false},
			{`{"env":"prod"}`, true},
			{`{"env":"tes"}`, true},
			{`{"env":5}`, false},
			{`{"env":null}`, false},
		}},
		{"anything-but suffix", `{"payload":{"f":[{"anything-but":{"suffix":".tmp"}}]}}`, []payloadCase{
			{`{"f":"a.tmp"}`, false},
			{`{"f":"a.txt"}`, true},
		}},
		{"anything-but equals-ignore-case", `{"payload":{"f":[{"anything-but":{"equals-ignore-case":"TEST"}}]}}`, []payloadCase{
			{`{"f":"test"}`, false},
			{`{"f":"TeSt"}`, false},
			{`{"f":"prod"}`, true},
		}},
		{"anything-but wildcard", `{"payload":{"host":[{"anything-but":{"wildcard":"*-dev"}}]}}`, []payloadCase{
			{`{"host":"api-dev"}`, false},
			{`{"host":"api-prod"}`, true},
		}},
		{"anything-but or missing", `{"payload":{"env":[{"anything-but":"test"},{"exists":false}]}}`, []payloadCase{
			{`{}`, true},
			{`{"env":"prod"}`, true},
			{`{"env":"test"}`, false},
		}},
		{"mixed conditions on one key", `{"payload":{"v":["a",{"prefix":"zz"},{"numeric":[">",10]},null]}}`, []payloadCase{
			{`{"v":"a"}`, true},
			{`{"v":"zzz"}`, true},
			{`{"v":11}`, true},
			{`{"v":null}`, true},
			{`{"v":10}`, false},
			{`{"v":"b"}`, false},
		}},
		{"nested object", `{"payload":{"customer":{"tier":["gold"]}}}`, []payloadCase{
			{`{"customer":{"tier":"gold","id":7}}`, true},
			{`{"customer":{"tier":"silver"}}`, false},
			{`{"customer":"gold"}`, false},
			{`{"tier":"gold"}`, false},
			{`{"customer":{"x":{"tier":"gold"}}}`, false},
			{`{}`, false},
		}},
		{"five levels", `{"payload":{"a":{"b":{"c":{"d":{"e":[1]}}}}}}`, []payloadCase{
			{`{"a":{"b":{"c":{"d":{"e":1}}}}}`, true},
			{`{"a":{"b":{"c":{"d":{"e":2}}}}}`, false},
			{`{"a":[{"b":[{"c":{"d":[{"e":[0,1]}]}}]}]}`, true},
		}},
		{"arrays of objects", `{"payload":{"items":{"sku":["A-1"]}}}`, []payloadCase{
			{`{"items":[{"sku":"B"},{"sku":"A-1"}]}`, true},
			{`{"items":[{"sku":"B"}]}`, false},
			{`{"items":[[{"sku":"A-1"}]]}`, true},
			{`{"items":[]}`, false},
		}},
		{"keys match on their own across array elements", `{"payload":{"items":{"sku":["A-1"],"qty":[5]}}}`, []payloadCase{
			{`{"items":[{"sku":"A-1","qty":1},{"sku":"B","qty":5}]}`, true},
			{`{"items":[{"sku":"A-1","qty":1}]}`, false},
		}},
		{"nested arrays flatten", `{"payload":{"m":[3]}}`, []payloadCase{
			{`{"m":[[1,2],[3,[4]]]}`, true},
			{`{"m":[[1,2],[[4]]]}`, false},
		}},
		{"a key with a dot is one key", `{"payload":{"a.b":["x"]}}`, []payloadCase{
			{`{"a.b":"x"}`, true},
			{`{"a":{"b":"x"}}`, false},
		}},
		{"escapes in payload keys and strings", `{"payload":{"café":["crème"],"q":["say \"hi\"\n"],"e":["😀"]}}`, []payloadCase{
			{`{"caf\u00e9":"cr\u00e8me","q":"say \"hi\"\n","e":"\ud83d\ude00"}`, true},
			{`{"café":"crème","q":"say \u0022hi\u0022\u000a","e":"😀"}`, true},
			{`{"cafe":"crème","q":"say \"hi\"\n","e":"😀"}`, false},
		}},
		{"duplicate payload keys: every value counts", `{"payload":{"a":["x"]}}`, []payloadCase{
			{`{"a":"y","a":"x"}`, true},
		}},
		{"$or across keys", `{"payload":{"$or":[{"a":[1]},{"b":[2]}]}}`, []payloadCase{
			{`{"a":1}`, true},
			{`{"b":2}`, true},
			{`{"a":1,"b":2}`, true},
			{`{"a":2,"b":1}`, false},
			{`{}`, false},
		}},
		{"$or beside a key", `{"payload":{"c":["x"],"$or":[{"a":[1]},{"b":[{"numeric":[">",5]}]}]}}`, []payloadCase{
			{`{"c":"x","a":1}`, true},
			{`{"c":"x","b":6}`, true},
			{`{"c":"y","a":1}`, false},
			{`{"c":"x","b":5}`, false},
		}},
		{"$or inside a nested object", `{"payload":{"o":{"$or":[{"a":[1]},{"b":[2]}]}}}`, []payloadCase{
			{`{"o":{"b":2}}`, true},
			{`{"o":{"a":2}}`, false},
			{`{"b":2}`, false},
		}},
		{"$or inside $or", `{"payload":{"$or":[{"a":[1]},{"$or":[{"b":[2]},{"c":[3]}]}]}}`, []payloadCase{
			{`{"c":3}`, true},
			{`{"b":2}`, true},
			{`{"d":4}`, false},
		}},
		{"$or branches on the same key", `{"payload":{"$or":[{"a":[{"numeric":["<",0]}]},{"a":[{"numeric":[">",100]}]}]}}`, []payloadCase{
			{`{"a":-1}`, true},
			{`{"a":101}`, true},
			{`{"a":50}`, false},
		}},
		{"payload validity", `{"payload":{"s":["ok"]}}`, []payloadCase{
			{" \n\t{\"s\" : \"ok\"}\r\n ", true},
			{`{"s":"ok","rest":[1,2.5,-3e-2,true,false,null,{"x":[{}]},"\u00e9"]}`, true},
			{`not json`, false},
			{``, false},
			{`{"s":"ok"`, false},
			{`{"s":"ok"} x`, false},
			{`{"s":"ok"}{}`, false},
			{`[{"s":"ok"}]`, false},
			{`"ok"`, false},
			{`{"s":"ok","x":[1,2,]}`, false},
			{`{"s":"ok","x":01}`, false},
			{`{"s":"ok","x":1.}`, false},
			{`{"s":"ok","x":.5}`, false},
			{`{"s":"ok","x":+1}`, false},
			{`{"s":"ok","x":-}`, false},
			{`{"s":"ok","x":1e}`, false},
			{`{"s":"ok","x":tru}`, false},
			{`{"s":"ok","x":nul}`, false},
			{`{"s":"ok","x":NaN}`, false},
			{`{"s":"ok","x":"\q"}`, false},
			{`{"s":"ok","x":"\u12"}`, false},
			{"{\"s\":\"ok\",\"x\":\"a\x01b\"}", false},
			{`{"s":"ok",}`, false},
			{`{"s" "ok"}`, false},
			{`{s:"ok"}`, false},
			{`{"s":'ok'}`, false},
			{"\ufeff{\"s\":\"ok\"}", false},
			{`{"s":"ok","x":"unterminated}`, false},
		}},
	}
	for _, tc := range cases {
		f := mustParse(t, tc.filter)
		for _, c := range tc.cases {
			if got := f.Match("order.created", "application/json", []byte(c.payload)); got != c.want {
				t.Errorf("%s: %s\n  payload %s: got %v, want %v", tc.name, f, c.payload, got, c.want)
			}
			if want, ok := referenceMatch(f, "order.created", "application/json", []byte(c.payload)); ok && want != c.want {
				t.Errorf("%s: the reference matcher disagrees with the table on %s", tc.name, c.payload)
			}
		}
	}
}

func TestMatchDeepPayloads(t *testing.T) {
	f := mustParse(t, `{"payload":{"s":["ok"]}}`)
	deep := func(n int) []byte {
		return []byte(`{"s":"ok","d":` + strings.Repeat("[", n) + strings.Repeat("]", n) + `}`)
	}
	// The object itself is one level, as in encoding/json's limit of 10000.
	if !f.Match("", "", deep(9999)) {
		t.Error("a payload 10000 levels deep does not match")
	}
	if f.Match("", "", deep(10000)) {
		t.Error("a payload 10001 levels deep matches")
	}
	deepObjects := func(n int) []byte {
		return []byte(`{"s":"ok","d":` + strings.Repeat(`{"d":`, n-1) + `{}` + strings.Repeat("}", n-1) + `}`)
	}
	if !f.Match("", "", deepObjects(9999)) {
		t.Error("a payload of objects 10000 levels deep does not match")
	}
	if f.Match("", "", deepObjects(10000)) {
		t.Error("a payload of objects 10001 levels deep matches")
	}
	if f.Match("", "", []byte(strings.Repeat("[", 1_000_000))) {
		t.Error("a million open brackets match")
	}
}

func TestMatchTypes(t *testing.T) {
	cases := []struct {
		types string
		typ   string
		want  bool
	}{
		{`["order.*"]`, "order.created", true},
		{`["order.*"]`, "order.item.added", true},
		{`["order.*"]`, "order.", true},
		{`["order.*"]`, "order", false},
		{`["order.*"]`, "orders.created", false},
		{`["order.*"]`, "", false},
		{`["order.*"]`, "Order.created", false},
		{`["*.failed"]`, "payment.failed", true},
		{`["*.failed"]`, "job.retry.failed", true},
		{`["*.failed"]`, "payment.failed.twice", false},
		{`["*"]`, "", true},
		{`["*"]`, "anything.at.all", true},
		{`["payment.captured"]`, "payment.captured", true},
		{`["payment.captured"]`, "payment.captured.v2", false},
		{`["payment.captured"]`, "payment", false},
		{`["a*b*c"]`, "abc", true},
		{`["a*b*c"]`, "a.x.b.y.c", true},
		{`["a*b*c"]`, "a.x.c.y.b", false},
		{`["order.*","payment.captured"]`, "payment.captured", true},
		{`["order.*","payment.captured"]`, "payment.failed", false},
		{`["*.*"]`, "a.b", true},
		{`["*.*"]`, "ab", false},
	}
	for _, c := range cases {
		f := mustParse(t, `{"types":`+c.types+`}`)
		if got := f.Match(c.typ, "application/octet-stream", []byte{0xff, 0x00}); got != c.want {
			t.Errorf("types %s, event type %q: got %v, want %v", c.types, c.typ, got, c.want)
		}
	}
}

func TestMatchTypesAndPayload(t *testing.T) {
	f := mustParse(t, `{"types":["order.*"],"payload":{"total":[{"numeric":[">",100]}]}}`)
	for _, c := range []struct {
		typ, payload string
		want         bool
	}{
		{"order.created", `{"total":150}`, true},
		{"order.created", `{"total":50}`, false},
		{"payment.captured", `{"total":150}`, false},
	} {
		if got := f.Match(c.typ, "application/json", []byte(c.payload)); got != c.want {
			t.Errorf("%s %s: got %v, want %v", c.typ, c.payload, got, c.want)
		}
	}
}

func TestMatchContentTypes(t *testing.T) {
	withPolicy := mustParse(t, `{"payload":{"a":[1]}}`)
	typesOnly := mustParse(t, `{"types":["order.*"]}`)
	exclusion := mustParse(t, `{"payload":{"a":[{"exists":false}]}}`)
	payload := []byte(`{"a":1}`)
	for ct, isJSON := range map[string]bool{
		"":                                true,
		"application/json":                true,
		"application/json; charset=utf-8": true,
		"APPLICATION/JSON":                true,
		" application/json ;x=y":          true,
		"application/cloudevents+json":    true,
		"application/vnd.acme.v2+JSON":    true,
		"text/plain":                      false,
		"application/x-protobuf":          false,
		"application/octet-stream":        false,
		"text/json-seq":                   false,
		"+json":                           false,
		"application/jsonx":               false,
	} {
		if got := withPolicy.Match("order.created", ct, payload); got != isJSON {
			t.Errorf("payload policy, content type %q: got %v, want %v", ct, got, isJSON)
		}
		if got := exclusion.Match("order.created", ct, []byte(`{}`)); got != isJSON {
			t.Errorf("exists:false policy, content type %q: got %v, want %v", ct, got, isJSON)
		}
		if !typesOnly.Match("order.created", ct, []byte("\x00not json")) {
			t.Errorf("types-only filter, content type %q: a non-JSON payload must still match by type", ct)
		}
	}
	// Non-JSON bytes under a JSON content type fail every payload policy,
	// even one that asks for a key to be absent.
	if exclusion.Match("", "application/json", []byte("\x00not json")) {
		t.Error("a malformed JSON payload matched an exists:false policy")
	}
}

func TestMatchEverything(t *testing.T) {
	var nilFilter *Filter
	for _, f := range []*Filter{nilFilter, mustParse(t, `{}`), mustParse(t, `{"types":null,"payload":{}}`), {}} {
		for _, p := range []string{``, `{"a":1}`, "\x00\xff", `[1]`} {
			if !f.Match("", "text/plain", []byte(p)) || !f.Match("x.y", "application/json", []byte(p)) {
				t.Errorf("%v does not match %q", f, p)
			}
		}
	}
	for _, in := range []string{"", "  ", "null", " null\n"} {
		f, err := Parse([]byte(in))
		if f != nil || err != nil {
			t.Errorf("Parse(%q) = %v, %v; want nil, nil", in, f, err)
		}
	}
}

func TestParseErrors(t *testing.T) {
	nest := func(levels int) string {
		return strings.Repeat(`{"k":`, levels-1) + `{"k":[1]}` + strings.Repeat("}", levels-1)
	}
	manyKeys := func(n int) string {
		var b strings.Builder
		b.WriteString(`{"payload":{`)
		for i := range n {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `"k%d":[1]`, i)
		}
		b.WriteString(`}}`)
		return b.String()
	}
	manyConds := func(n int) string {
		vals := make([]string, n)
		for i := range vals {
			vals[i] = fmt.Sprint(i)
		}
		return `{"payload":{"k":[` + strings.Join(vals, ",") + `]}}`
	}
	manyTypes := func(n int) string {
		ts := make([]string, n)
		for i := range ts {
			ts[i] = fmt.Sprintf(`"t%d"`, i)
		}
		return `{"types":[` + strings.Join(ts, ",") + `]}`
	}
	cases := []struct {
		in    string
		field string
	}{
		{`[]`, "filter"},
		{`"order.*"`, "filter"},
		{`{"types":`, "filter"},
		{`{"types":["a"]} {}`, "filter"},
		{`{"types":["a"],}`, "filter"},
		{`{"types":["a"],"types":["b"]}`, "filter"},
		{`{"type":["a"]}`, "filter.type"},
		{`{"Types":["a"]}`, "filter.Types"},
		{`{"types":"order.*"}`, "filter.types"},
		{`{"types":[]}`, "filter.types"},
		{`{"types":[1]}`, "filter.types"},
		{`{"types":[""]}`, "filter.types"},
		{`{"types":["has space"]}`, "filter.types"},
		{`{"types":["caf\u00e9"]}`, "filter.types"},
		{`{"types":["` + strings.Repeat("a", 201) + `"]}`, "filter.types"},
		{manyTypes(101), "filter.types"},
		{`{"payload":[]}`, "filter.payload"},
		{`{"payload":"a"}`, "filter.payload"},
		{`{"payload":{"a":"x"}}`, "filter.payload.a"},
		{`{"payload":{"a":1}}`, "filter.payload.a"},
		{`{"payload":{"a":null}}`, "filter.payload.a"},
		{`{"payload":{"a":[]}}`, "filter.payload.a"},
		{`{"payload":{"a":{}}}`, "filter.payload.a"},
		{`{"payload":{"a":{"b":{"c":[]}}}}`, "filter.payload.a.b.c"},
		{`{"payload":{"a":[[1]]}}`, "filter.payload.a"},
		{`{"payload":{"a":["x"],"a":["y"]}}`, "filter"},
		{`{"payload":{"":[1]}}`, "filter.payload"},
		{`{"payload":{"$and":[{"a":[1]}]}}`, "filter.payload.$and"},
		{`{"payload":{"$or":{"a":[1]}}}`, "filter.payload.$or"},
		{`{"payload":{"$or":[]}}`, "filter.payload.$or"},
		{`{"payload":{"$or":[{}]}}`, "filter.payload.$or[0]"},
		{`{"payload":{"$or":[{"a":[1]},1]}}`, "filter.payload.$or[1]"},
		{`{"payload":{"$or":[{"a":[1]},{"b":["x",{"nope":1}]}]}}`, "filter.payload.$or[1].b"},
		{`{"payload":{"a":[{}]}}`, "filter.payload.a"},
		{`{"payload":{"a":[{"prefix":"a","suffix":"b"}]}}`, "filter.payload.a"},
		{`{"payload":{"a":[{"regex":"x"}]}}`, "filter.payload.a"},
		{`{"payload":{"a":[{"prefix":1}]}}`, "filter.payload.a"},
		{`{"payload":{"a":[{"suffix":null}]}}`, "filter.payload.a"},
		{`{"payload":{"a":[{"equals-ignore-case":["x"]}]}}`, "filter.payload.a"},
		{`{"payload":{"a":[{"wildcard":true}]}}`, "filter.payload.a"},
		{`{"payload":{"a":[{"exists":"yes"}]}}`, "filter.payload.a"},
		{`{"payload":{"a":[{"exists":1}]}}`, "filter.payload.a"},
		{`{"payload":{"a":[{"cidr":"nope"}]}}`, "filter.payload.a"},
		{`{"payload":{"a":[{"cidr":"10.0.0.0/33"}]}}`, "filter.payload.a"},
		{`{"payload":{"a":[{"cidr":"fe80::1%eth0"}]}}`, "filter.payload.a"},
		{`{"payload":{"a":[{"cidr":24}]}}`, "filter.payload.a"},
		{`{"payload":{"a":[1e400]}}`, "filter.payload.a"},
		{`{"payload":{"a":[-1e400]}}`, "filter.payload.a"},
		{`{"payload":{"a":[{"numeric":[">"]}]}}`, "filter.payload.a"},
		{`{"payload":{"a":[{"numeric":[">",1,"<"]}]}}`, "filter.payload.a"},
		{`{"payload":{"a":[{"numeric":[">",1,"<",2,"=",3]}]}}`, "filter.payload.a"},
		{`{"payload":{"a":[{"numeric":[">",1,">",2]}]}}`, "filter.payload.a"},
		{`{"payload":{"a":[{"numeric":["<",1,"<=",2]}]}}`, "filter.payload.a"},
		{`{"payload":{"a":[{"numeric":["=",1,"<",2]}]}}`, "filter.payload.a"},
		{`{"payload":{"a":[{"numeric":[">",5,"<",1]}]}}`, "filter.payload.a"},
		{`{"payload":{"a":[{"numeric":[">",5,"<",5]}]}}`, "filter.payload.a"},
		{`{"payload":{"a":[{"numeric":[">=",5,"<",5]}]}}`, "filter.payload.a"},
		{`{"payload":{"a":[{"numeric":["~",1]}]}}`, "filter.payload.a"},
		{`{"payload":{"a":[{"numeric":["==",1]}]}}`, "filter.payload.a"},
		{`{"payload":{"a":[{"numeric":[">","1"]}]}}`, "filter.payload.a"},
		{`{"payload":{"a":[{"numeric":[1,">"]}]}}`, "filter.payload.a"},
		{`{"payload":{"a":[{"numeric":[">",1e999]}]}}`, "filter.payload.a"},
		{`{"payload":{"a":[{"numeric":5}]}}`, "filter.payload.a"},
		{`{"payload":{"a":[{"anything-but":[]}]}}`, "filter.payload.a"},
		{`{"payload":{"a":[{"anything-but":[[1]]}]}}`, "filter.payload.a"},
		{`{"payload":{"a":[{"anything-but":[{"prefix":"x"}]}]}}`, "filter.payload.a"},
		{`{"payload":{"a":[{"anything-but":{"numeric":[">",1]}}]}}`, "filter.payload.a"},
		{`{"payload":{"a":[{"anything-but":{"prefix":1}}]}}`, "filter.payload.a"},
		{`{"payload":{"a":[{"anything-but":{"prefix":"a","suffix":"b"}}]}}`, "filter.payload.a"},
		{`{"payload":{"a":[{"anything-but":{}}]}}`, "filter.payload.a"},
		{`{"payload":{"a":[{"anything-but":1e400}]}}`, "filter.payload.a"},
		{`{"payload":` + nest(6) + `}`, "filter.payload.k.k.k.k.k.k"},
		{`{"payload":{"$or":[` + nest(5) + `]}}`, "filter.payload.$or[0].k.k.k.k.k"},
		{`{"payload":{"a":{"b":{"c":{"d":{"$or":[{"e":[1]}]}}}}}}`, "filter.payload.a.b.c.d.$or[0].e"},
		{`{"payload":{"a":{"b":{"c":{"d":{"e":{"$or":[{"f":[1]}]}}}}}}}`, "filter.payload.a.b.c.d.e"},
		{`{"payload":{"a":[{"anything-but":[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]}]}}`, "filter"},
		{manyKeys(101), "filter.payload.k100"},
		{manyConds(151), "filter.payload.k"},
		{`{"payload":{"a":[` + strings.Repeat(`1,`, 100) + `{"anything-but":[` + strings.Repeat(`1,`, 50) + `1]}]}}`, "filter.payload.a"},
		{`{"types":["` + strings.Repeat("a", MaxSize) + `"]}`, "filter"},
	}
	for _, c := range cases {
		f, err := Parse([]byte(c.in))
		if err == nil {
			t.Errorf("Parse(%.120s) = %s, want an error on %s", c.in, f, c.field)
			continue
		}
		e, ok := errors.AsType[*herald.Error](err)
		if !ok || e.Code != herald.CodeInvalid || e.Field != c.field {
			t.Errorf("Parse(%.120s) = %#v, want CodeInvalid on %s", c.in, err, c.field)
			continue
		}
		if e.Message == "" {
			t.Errorf("Parse(%.120s): empty message", c.in)
		}
	}

	// The limits themselves are accepted.
	for _, in := range []string{
		`{"payload":` + nest(5) + `}`,
		`{"payload":{"$or":[` + nest(4) + `]}}`,
		manyKeys(100), manyConds(150), manyTypes(100),
		`{"payload":{"a":[` + strings.Repeat(`1,`, 100) + `{"anything-but":[` + strings.Repeat(`1,`, 49) + `1]}]}}`,
		`{"types":["` + strings.Repeat("a", 200) + `"]}`,
	} {
		if _, err := Parse([]byte(in)); err != nil {
			t.Errorf("Parse(%.120s): %v", in, err)
		}
	}
}

func TestCanonical(t *testing.T) {
	cases := []struct{ in, want string }{
		{`{}`, `{}`},
		{` { "types" : null , "payload" : null } `, `{}`},
		{`{"payload":{}}`, `{}`},
		{`{"payload":{"a":[1]},"types":["x"]}`, `{"types":["x"],"payload":{"a":[1]}}`},
		{`{"types":["b.*","a","b.*","x**y","***"]}`, `{"types":["*","a","b.*","x*y"]}`},
		{`{"payload":{"b":["y","x","x"],"a":[2,1.0,1]}}`, `{"payload":{"a":[1,2],"b":["x","y"]}}`},
		{`{"payload":{"a":[{"prefix":"a"},"z",3,null,true,false]}}`, `{"payload":{"a":["z",3,false,null,true,{"prefix":"a"}]}}`},
		{`{"payload":{"a":[1e2,100,1.5e0,-0,0.000001,1e-7,1e21,123456789012345678]}}`,
			`{"payload":{"a":[0,0.000001,1.5,100,123456789012345680,1e+21,1e-7]}}`},
		{`{"payload":{"n":[{"numeric":["<=",100,">",0]}]}}`, `{"payload":{"n":[{"numeric":["\u003e",0,"\u003c=",100]}]}}`},
		{`{"payload":{"n":[{"numeric":[">=",5,"<=",5]}]}}`, `{"payload":{"n":[{"numeric":["=",5]}]}}`},
		{`{"payload":{"n":[{"numeric":["=",1e2]},{"numeric":["<",-0]},{"numeric":[">=",0.5]}]}}`,
			`{"payload":{"n":[{"numeric":["=",100]},{"numeric":["\u003c",0]},{"numeric":["\u003e=",0.5]}]}}`},
		{`{"payload":{"ip":[{"cidr":"10.1.2.3/8"},{"cidr":"192.168.1.1"},{"cidr":"2001:DB8::1/32"}]}}`,
			`{"payload":{"ip":[{"cidr":"10.0.0.0/8"},{"cidr":"192.168.1.1/32"},{"cidr":"2001:db8::/32"}]}}`},
		{`{"payload":{"c":[{"anything-but":"red"}]}}`, `{"payload":{"c":[{"anything-but":["red"]}]}}`},
		{`{"payload":{"c":[{"anything-but":["red",0,"blue","red",null]}]}}`, `{"payload":{"c":[{"anything-but":["blue","red",0,null]}]}}`},
		{`{"payload":{"c":[{"anything-but":{"prefix":"t"}}]}}`, `{"payload":{"c":[{"anything-but":{"prefix":"t"}}]}}`},
		{`{"payload":{"c":[{"anything-but":{"wildcard":"a**b"}},{"wildcard":"**"}]}}`, `{"payload":{"c":[{"anything-but":{"wildcard":"a*b"}},{"wildcard":"*"}]}}`},
		{`{"payload":{"s":["a\"b\\c\n\r\t\u0001\u001f é<>&\u2028/"]}}`, `{"payload":{"s":["a\"b\\c\n\r\t\u0001\u001f é\u003c\u003e\u0026\u2028/"]}}`},
		{`{"payload":{"c":[3],"$or":[{"b":[2]},{"a":[1]},{"a":[1.0]}]}}`, `{"payload":{"$or":[{"a":[1]},{"b":[2]}],"c":[3]}}`},
		{`{"payload":{"x":{"z":[{"exists":false}],"y":[{"exists":true}]}}}`, `{"payload":{"x":{"y":[{"exists":true}],"z":[{"exists":false}]}}}`},
		{`{"payload":{"e":[{"equals-ignore-case":"EUR"},{"suffix":""}]}}`, `{"payload":{"e":[{"equals-ignore-case":"EUR"},{"suffix":""}]}}`},
		{`{"payload":{"s":["\u2029x\u2027"]}}`, `{"payload":{"s":["\u2029x` + "\u2027" + `"]}}`},
	}
	for _, c := range cases {
		f := mustParse(t, c.in)
		if got := f.String(); got != c.want {
			t.Errorf("Parse(%s).String()\n got %s\nwant %s", c.in, got, c.want)
		}
		again := mustParse(t, f.String())
		if again.String() != f.String() {
			t.Errorf("canonical form is not stable: %s then %s", f, again)
		}
		j, err := json.Marshal(f)
		if err != nil || string(j) != f.String() {
			t.Errorf("json.Marshal = %s, %v; want %s", j, err, f)
		}
	}
	var nilFilter *Filter
	if nilFilter.String() != "{}" {
		t.Errorf("nil filter String = %q", nilFilter.String())
	}
}

func TestJSONRoundTrip(t *testing.T) {
	type sub struct {
		Filter *Filter `json:"filter"`
	}
	var s sub
	if err := json.Unmarshal([]byte(`{"filter":{"types":["b","a"],"payload":{"n":[{"numeric":["<",5]}]}}}`), &s); err != nil {
		t.Fatal(err)
	}
	if got := s.Filter.String(); got != `{"types":["a","b"],"payload":{"n":[{"numeric":["\u003c",5]}]}}` {
		t.Fatalf("decoded %s", got)
	}
	if !s.Filter.Match("a", "", []byte(`{"n":4}`)) || s.Filter.Match("a", "", []byte(`{"n":5}`)) {
		t.Fatal("the decoded filter does not match as written")
	}
	out, _ := json.Marshal(s)
	if string(out) != `{"filter":{"types":["a","b"],"payload":{"n":[{"numeric":["\u003c",5]}]}}}` {
		t.Fatalf("encoded %s", out)
	}
	err := json.Unmarshal([]byte(`{"filter":{"types":[]}}`), &s)
	if !herald.IsCode(err, herald.CodeInvalid) {
		t.Fatalf("decoding a bad filter: %v, want CodeInvalid", err)
	}
	if s.Filter.Types() == nil || !s.Filter.HasPayloadPolicy() {
		t.Fatal("accessors")
	}
}

func TestGlob(t *testing.T) {
	cases := []struct {
		p, s string
		want bool
	}{
		{"", "", true},
		{"", "a", false},
		{"*", "", true},
		{"*", "abc", true},
		{"a", "a", true},
		{"a", "b", false},
		{"a*", "a", true},
		{"a*", "ba", false},
		{"*a", "ba", true},
		{"*a", "ab", false},
		{"a*a", "a", false},
		{"a*a", "aa", true},
		{"a*a", "aba", true},
		{"*a*b*", "xxaxxbxx", true},
		{"*a*b*", "xxbxxaxx", false},
		{"a*b*c", "abcabc", true},
		{"*.*.*", "a.b", false},
		{"*.*.*", "a.b.c", true},
		{strings.Repeat("*a", 20) + "b", strings.Repeat("a", 40), false},
	}
	for _, c := range cases {
		if got := glob(c.p, c.s); got != c.want {
			t.Errorf("glob(%q, %q) = %v, want %v", c.p, c.s, got, c.want)
		}
		if got := referenceGlob(c.p, c.s); got != c.want {
			t.Errorf("referenceGlob(%q, %q) = %v: the reference is wrong", c.p, c.s, got)
		}
	}
}
