package archive

import (
	"fmt"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/channel"
)

// benchWrite writes b.N events in batches of 10,000 (20 orgs, one hour)
// and reports events/s and bytes on disk per event.
func benchWrite(b *testing.B, config string) {
	dir := b.TempDir()
	ch := New(ChannelConfig{Dir: dir}, nil, nil)
	c, err := ch.Validate(b.Context(), channel.ValidateParams{Config: []byte(config), Internal: true})
	if err != nil {
		b.Fatal(err)
	}
	snk, err := ch.Open(b.Context(), &herald.Subscription{ID: "sub_bench", Config: c})
	if err != nil {
		b.Fatal(err)
	}
	s := snk.(*sink)
	const batchSize = 10_000
	batch := make([]channel.Delivery, 0, batchSize)
	b.ResetTimer()
	for i := range b.N {
		payload := fmt.Appendf(nil, `{"environment":"prod","organization":{"id":"org-%02d"},"log_type":"access","status":200,"path":"/api/v1/items/%d","latency_ms":%d}`, i%20, i, i%997)
		batch = append(batch, channel.Delivery{Event: &herald.Event{ID: fmt.Sprintf("01J%020d", i), Topic: "logs.app", Seq: int64(i + 1),
			Time: t0.Add(time.Duration(i) * time.Millisecond % time.Hour), ContentType: "application/json", Payload: payload}, Attempt: 1})
		if len(batch) == batchSize || i == b.N-1 {
			for _, r := range s.DeliverBatch(b.Context(), batch) {
				if r.Outcome != herald.Delivered {
					b.Fatal(r)
				}
			}
			batch = batch[:0]
		}
	}
	b.StopTimer()
	var total int
	dirs, _ := keyDirs(b.Context(), s.cfg, s.objs, nil, 0, "")
	for _, d := range dirs {
		mf, _ := readManifest(b.Context(), s.objs, d.prefix+"year=2026/month=12/day=07/hour=15/")
		for _, f := range mf.Files {
			total += f.Bytes
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(total)/float64(b.N), "bytes/event")
}

const benchPartition = `"partition":[{"key":"env","field":"environment"},{"key":"org","field":"organization.id"},{"key":"type","field":"log_type"}],"destination":{"type":"local"}`

func BenchmarkWriteParquet(b *testing.B) { benchWrite(b, `{"format":"parquet",`+benchPartition+`}`) }
func BenchmarkWriteJSONLZstd(b *testing.B) {
	benchWrite(b, `{"format":"jsonl","compression":"zstd",`+benchPartition+`}`)
}
func BenchmarkWriteJSONLGzip(b *testing.B) {
	benchWrite(b, `{"format":"jsonl","compression":"gzip",`+benchPartition+`}`)
}
