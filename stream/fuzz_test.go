package stream

import (
	"encoding/json"
	"testing"

	"github.com/heraldhq/herald"
)

// The Last-Event-ID of a pattern stream is outside input: it must parse
// to valid positions or fail with CodeInvalid, and what the server writes
// must read back the same.
func FuzzLastEventID(f *testing.F) {
	for _, seed := range []string{"", "0", "42", "@1718000000000", "@1718000000000,orders.eu=3,orders.us=9",
		"orders.eu=1", "@x", "orders.eu=", "=1", "orders.eu=1,orders.eu=2", "payments.eu=1", "@-1,a=1",
		"orders.eu=99999999999999999999", "@1,orders.eu=1,,"} {
		f.Add(seed, "orders.*")
		f.Add(seed, "orders.eu")
	}
	f.Fuzz(func(t *testing.T, id, pattern string) {
		if herald.ValidatePattern(pattern) != nil {
			return
		}
		st, err := parseLastEventID(id, pattern)
		if err != nil {
			if !herald.IsCode(err, herald.CodeInvalid) {
				t.Fatalf("error %v is not CodeInvalid", err)
			}
			return
		}
		if st.kind == startTime {
			t.Fatalf("a Last-Event-ID gave a time start: %+v", st)
		}
		for topic, seq := range st.positions {
			if seq < 0 || !herald.MatchTopic(pattern, topic) {
				t.Fatalf("position %s=%d for %s", topic, seq, pattern)
			}
		}
		if !herald.IsPattern(pattern) || len(st.positions) == 0 {
			return
		}
		var p positions
		for topic, seq := range st.positions {
			p.set(topic, seq)
		}
		again, err := parseLastEventID(string(formatPositionID(nil, st.mark, &p)), pattern)
		if err != nil {
			t.Fatalf("the written id does not parse: %v", err)
		}
		if len(again.positions) != len(st.positions) || !again.mark.Equal(st.mark) {
			t.Fatalf("round trip: %+v became %+v", st, again)
		}
		for topic, seq := range st.positions {
			if again.positions[topic] != seq {
				t.Fatalf("round trip of %s: %d became %d", topic, seq, again.positions[topic])
			}
		}
	})
}

// since comes from URLs and WebSocket messages.
func FuzzSince(f *testing.F) {
	for _, seed := range []string{"", "0", "17", "2025-01-02T03:04:05Z", "2025-01-02T03:04:05.123+02:00", "-1",
		"yesterday", `"17"`, `"2025-01-02T03:04:05Z"`, "null", "1.5", "1e3", "[]", "{}", `"x"`} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, parse := range []func() (startSpec, error){
			func() (startSpec, error) { return parseSince(s, "since") },
			func() (startSpec, error) { return parseSinceJSON(json.RawMessage(s)) },
		} {
			st, err := parse()
			if err != nil {
				if !herald.IsCode(err, herald.CodeInvalid) {
					t.Fatalf("%q: error %v is not CodeInvalid", s, err)
				}
				continue
			}
			if st.kind == startSeq && st.seq < 0 {
				t.Fatalf("%q: negative seq %d", s, st.seq)
			}
			if st.kind == startLive && st.replays() {
				t.Fatalf("%q: a live start that replays", s)
			}
		}
	})
}
