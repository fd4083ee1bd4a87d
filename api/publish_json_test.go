package api

import (
	"bytes"
	"testing"
)

// The hand-written publish answer must be byte for byte what encoding/json
// (marshalJSON) writes, for any id and topic a producer or store can give.
func TestPublishResultJSONMatchesEncodingJSON(t *testing.T) {
	t.Parallel()
	strs := []string{"", "evt_1", "0193a5b2-7c1d-7e0f-8a9b-0c1d2e3f4a5b", "orders.eu", `quo"te`, `back\slash`,
		"tab\there", "nl\n", "\x00\x1f\x7f", "<html>&amp;", "ünïcödé", "line\u2028sep\u2029", "bad\xffutf8", "emoji 🎉"}
	for _, id := range strs {
		for _, topic := range strs[:4] {
			for _, at := range []string{"", "2026-12-07T21:00:00.000000001Z"} {
				for _, dup := range []bool{false, true} {
					out := publishResultJSON{ID: id, Topic: topic, Seq: 1<<62 + 7, Duplicate: dup, DeliverAt: at}
					want, err := marshalJSON(out)
					if err != nil {
						t.Fatal(err)
					}
					if got := out.appendJSON(nil); !bytes.Equal(got, want) {
						t.Errorf("%+v:\n got  %s\n want %s", out, got, want)
					}
				}
			}
		}
	}
	// and with the id as topic, so every string is tried in both places
	for _, s := range strs {
		out := publishResultJSON{ID: "x", Topic: s, Seq: -1}
		want, _ := marshalJSON(out)
		if got := out.appendJSON(nil); !bytes.Equal(got, want) {
			t.Errorf("%+v:\n got  %s\n want %s", out, got, want)
		}
	}
}
