package kafka

import (
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/channel"
)

// BenchmarkRecords measures building the records of a batch of 500: the
// channel's own cost per event, apart from franz-go and the broker.
func BenchmarkRecords(b *testing.B) {
	s := &sink{subID: "sub_01JEXAMPLE0000000000000000", subIDBytes: []byte("sub_01JEXAMPLE0000000000000000"), topic: DefaultTopic}
	batch := make([]channel.Delivery, 500)
	for i := range batch {
		batch[i] = channel.Delivery{Attempt: 1, Event: &herald.Event{ID: herald.NewID(time.Now()), Topic: "payments.card", Seq: int64(1000 + i),
			Key: "card-" + string(rune('a'+i%26)), Type: "card.declined", ContentType: "application/json",
			Time: time.Now(), Payload: make([]byte, 256), Headers: map[string]string{"traceparent": "00-abc-def-01"}}}
	}
	b.ReportAllocs()
	for b.Loop() {
		_ = s.records(batch)
	}
}
