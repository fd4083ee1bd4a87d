package herald

import (
	"encoding/json"
	"slices"
	"strings"
	"time"
)

// Successful deliveries are not written to the attempt log one row each
// (ADR 0009). In their place a subscription keeps DeliveryStats: counters,
// a latency histogram of its successes and a bounded sample, the last few
// successful attempts. Failures are logged in full as before and counted
// here too.

// DefaultSuccessSample is how many successful attempts a subscription keeps
// in its sample unless the operator sets another number.
const DefaultSuccessSample = 100

// MaxSuccessSample bounds the sample an operator may ask for.
const MaxSuccessSample = 1000

// LatencyBounds are the upper bounds of the latency histogram's buckets;
// a last bucket, without bound, takes the slower deliveries.
var LatencyBounds = [...]time.Duration{
	time.Millisecond, 2 * time.Millisecond, 5 * time.Millisecond, 10 * time.Millisecond,
	25 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond, 250 * time.Millisecond,
	500 * time.Millisecond, time.Second, 2500 * time.Millisecond, 5 * time.Second,
	10 * time.Second, 30 * time.Second,
}

// LatencyHistogram counts successful deliveries by latency: bucket i holds
// those at or below LatencyBounds[i] and above the bound before it; the last
// bucket holds those above every bound.
type LatencyHistogram [len(LatencyBounds) + 1]int64

// Observe counts one latency.
func (h *LatencyHistogram) Observe(d time.Duration) {
	i, _ := slices.BinarySearch(LatencyBounds[:], d)
	h[i]++
}

// Add adds another histogram's counts.
func (h *LatencyHistogram) Add(o *LatencyHistogram) {
	for i := range h {
		h[i] += o[i]
	}
}

// Count is the number of latencies counted.
func (h *LatencyHistogram) Count() int64 {
	var n int64
	for _, c := range h {
		n += c
	}
	return n
}

// Quantile estimates the q-quantile (0 < q <= 1), interpolating within the
// bucket it falls in; zero when nothing was counted. A quantile in the last,
// unbounded bucket is reported as the last bound.
func (h *LatencyHistogram) Quantile(q float64) time.Duration {
	n := h.Count()
	if n == 0 {
		return 0
	}
	rank := q * float64(n)
	var seen float64
	for i, c := range h {
		if c == 0 {
			continue
		}
		if seen+float64(c) >= rank {
			if i == len(LatencyBounds) {
				return LatencyBounds[len(LatencyBounds)-1]
			}
			var lo time.Duration
			if i > 0 {
				lo = LatencyBounds[i-1]
			}
			frac := (rank - seen) / float64(c)
			return lo + time.Duration(frac*float64(LatencyBounds[i]-lo))
		}
		seen += float64(c)
	}
	return LatencyBounds[len(LatencyBounds)-1]
}

// StatsDelta is what a settlement adds to a subscription's DeliveryStats.
type StatsDelta struct {
	Delivered int64 // successful deliveries
	Failed    int64 // failed attempts (each is also in the attempt log)
	Latency   LatencyHistogram
	// Sample holds successful attempts, oldest first; the store keeps the
	// newest SampleLimit of the stored sample and these.
	Sample      []Attempt
	SampleLimit int
	At          time.Time // when the delta was taken: the stats' UpdatedAt
}

// Success counts one successful attempt and keeps it in the sample, which
// holds at most limit attempts (none when limit is 0).
func (d *StatsDelta) Success(a Attempt, limit int) {
	d.Delivered++
	d.Latency.Observe(a.Latency)
	d.SampleLimit = limit
	if limit <= 0 {
		return
	}
	if len(d.Sample) >= 2*limit {
		// Trimmed in halves, so a busy subscription copies each
		// attempt at most once more; the store keeps the newest limit.
		d.Sample = KeepNewest(d.Sample, limit)
	}
	d.Sample = append(d.Sample, a)
}

// Merge adds a later delta to d.
func (d *StatsDelta) Merge(later *StatsDelta) {
	d.Delivered += later.Delivered
	d.Failed += later.Failed
	d.Latency.Add(&later.Latency)
	d.SampleLimit, d.At = later.SampleLimit, later.At
	d.Sample = KeepNewest(append(d.Sample, later.Sample...), d.SampleLimit)
}

// KeepNewest returns the last n attempts of s (all of them if there are
// fewer), reusing s.
func KeepNewest(s []Attempt, n int) []Attempt {
	if n <= 0 {
		return s[:0]
	}
	if len(s) <= n {
		return s
	}
	return s[:copy(s, s[len(s)-n:])]
}

// DeliveryStats is what a subscription keeps of its deliveries besides the
// attempt log: totals since it was created, the latency of its successful
// deliveries and a sample of the newest ones.
type DeliveryStats struct {
	Delivered int64
	Failed    int64
	Latency   LatencyHistogram
	Sample    []Attempt // oldest first
	UpdatedAt time.Time // zero: nothing recorded yet
}

// Apply adds a delta, as a store does when it settles.
func (s *DeliveryStats) Apply(d *StatsDelta) {
	s.Delivered += d.Delivered
	s.Failed += d.Failed
	s.Latency.Add(&d.Latency)
	s.Sample = KeepNewest(append(s.Sample, d.Sample...), d.SampleLimit)
	s.UpdatedAt = d.At
}

// sampledAttempt is the stored form of an attempt of a sample: the
// stores keep samples as JSON, so its names are fixed here, apart from
// the Go field names.
type sampledAttempt struct {
	Topic      string `json:"topic"`
	Seq        int64  `json:"seq"`
	EventID    string `json:"event_id"`
	Attempt    int    `json:"attempt"`
	Time       int64  `json:"time"` // Unix nanoseconds
	StatusCode int    `json:"status_code,omitempty"`
	Latency    int64  `json:"latency"` // nanoseconds
	Response   string `json:"response,omitempty"`
}

// MarshalSample encodes a sample for a store.
func MarshalSample(s []Attempt) ([]byte, error) {
	out := make([]sampledAttempt, len(s))
	for i, a := range s {
		out[i] = sampledAttempt{Topic: a.Topic, Seq: a.Seq, EventID: a.EventID, Attempt: a.Attempt, Time: a.Time.UnixNano(),
			StatusCode: a.StatusCode, Latency: int64(a.Latency), Response: strings.ReplaceAll(a.Response, "\x00", "")}
	}
	// NUL bytes go (PostgreSQL's jsonb holds none); invalid UTF-8 becomes
	// U+FFFD, as json.Marshal does.
	return json.Marshal(out)
}

// UnmarshalSample decodes a sample MarshalSample encoded, for the
// subscription with the given id.
func UnmarshalSample(b []byte, subscriptionID string) ([]Attempt, error) {
	var in []sampledAttempt
	if err := json.Unmarshal(b, &in); err != nil {
		return nil, err
	}
	out := make([]Attempt, len(in))
	for i, a := range in {
		out[i] = Attempt{SubscriptionID: subscriptionID, Topic: a.Topic, Seq: a.Seq, EventID: a.EventID, Attempt: a.Attempt,
			Time: time.Unix(0, a.Time).UTC(), Outcome: OutcomeSuccess, StatusCode: a.StatusCode, Latency: time.Duration(a.Latency),
			Response: a.Response}
	}
	return out, nil
}
