package bench

import (
	"sync"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// maxLatency is the largest latency a histogram tells apart; longer ones
// are recorded as maxLatency (and show as such in Max).
const maxLatency = 10 * time.Minute

// histogram records latencies with three significant digits from 1 µs to
// maxLatency (HdrHistogram: fixed memory, exact percentiles within its
// precision). It is safe for concurrent use.
type histogram struct {
	mu sync.Mutex
	h  *hdrhistogram.Histogram
}

func newHistogram() *histogram {
	return &histogram{h: hdrhistogram.New(1, int64(maxLatency/time.Microsecond), 3)}
}

func (h *histogram) record(d time.Duration) {
	us := min(max(int64(d/time.Microsecond), 1), int64(maxLatency/time.Microsecond))
	h.mu.Lock()
	_ = h.h.RecordValue(us) // within the range by construction
	h.mu.Unlock()
}

// Latency summarises a latency distribution in milliseconds.
type Latency struct {
	Count int64   `json:"count"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p999_ms"`
	Max   float64 `json:"max_ms"`
}

func (h *histogram) summary() Latency {
	h.mu.Lock()
	defer h.mu.Unlock()
	ms := func(us int64) float64 { return float64(us) / 1000 }
	return Latency{
		Count: h.h.TotalCount(),
		P50:   ms(h.h.ValueAtPercentile(50)),
		P90:   ms(h.h.ValueAtPercentile(90)),
		P99:   ms(h.h.ValueAtPercentile(99)),
		P999:  ms(h.h.ValueAtPercentile(99.9)),
		Max:   ms(h.h.Max()),
	}
}
