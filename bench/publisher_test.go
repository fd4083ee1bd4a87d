package bench

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/heraldhq/herald/client"
)

// recordingTarget records the payloads it is sent and stalls each request
// for a fixed time (on synctest's fake clock).
type recordingTarget struct {
	stall func(call int) time.Duration
	fail  func(call int) bool

	mu    sync.Mutex
	calls int
	got   []payload
	sizes []int
}

func (r *recordingTarget) publish(ctx context.Context, payloads [][]byte) error {
	r.mu.Lock()
	call := r.calls
	r.calls++
	r.sizes = append(r.sizes, len(payloads))
	for _, b := range payloads {
		p, ok := parsePayload(b)
		if !ok {
			r.mu.Unlock()
			return errors.New("unparseable payload")
		}
		r.got = append(r.got, p)
	}
	r.mu.Unlock()
	if r.stall != nil {
		time.Sleep(r.stall(call))
	}
	if r.fail != nil && r.fail(call) {
		return errors.New("refused")
	}
	return nil
}

func near(got, want float64) bool { return math.Abs(got-want) <= want*0.01 }

func TestOpenLoopMeasuresFromIntendedTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// 100 events/s is one request every 10ms, but each takes 50ms and
		// only one worker sends: request j is meant for j*10ms, starts at
		// j*50ms and ends at (j+1)*50ms, so its latency is 50+40j ms. A
		// closed-loop tool would report 50ms for every one.
		tgt := &recordingTarget{stall: func(int) time.Duration { return 50 * time.Millisecond }}
		p := publisher{target: tgt, epoch: time.Now(), events: 10, batch: 1, size: 100, rate: 100,
			workers: 1, duration: time.Minute, acked: newBitset(10)}
		st := p.run(t.Context())

		if st.Acked != 10 || st.Requests != 10 || st.Failed != 0 {
			t.Fatalf("stats %+v: want 10 requests, 10 acked", st)
		}
		l := st.Latencies
		if l.Count != 10 || !near(l.Max, 410) || !near(l.P50, 210) {
			t.Fatalf("latency %+v: want max 410ms and p50 210ms (50+40j ms for j=0..9)", l)
		}
		// Each payload carries its intended time, not when it was sent, so
		// end-to-end latency at the sink includes the stall too.
		for _, g := range tgt.got {
			if want := time.Duration(g.N) * 10 * time.Millisecond; time.Duration(g.T) != want {
				t.Errorf("event %d stamped %s, want its intended time %s", g.N, time.Duration(g.T), want)
			}
		}
		if st.End != 500*time.Millisecond {
			t.Errorf("publishing ended at %s, want 500ms", st.End)
		}
	})
}

func TestOpenLoopKeepsItsRateWhenTheTargetIsFast(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tgt := &recordingTarget{stall: func(int) time.Duration { return time.Millisecond }}
		p := publisher{target: tgt, epoch: time.Now(), events: 40, batch: 4, size: 100, rate: 200,
			workers: 8, duration: time.Minute, acked: newBitset(40)}
		st := p.run(t.Context())
		// 40 events at 200/s, 4 per request: a request every 20ms, the
		// last (j=9) at 180ms, ending 1ms later.
		if st.Acked != 40 || st.Requests != 10 || st.End != 181*time.Millisecond {
			t.Fatalf("stats %+v: want 40 acked in 10 requests ending at 181ms", st)
		}
		if l := st.Latencies; !near(l.Max, 1) || !near(l.P50, 1) {
			t.Fatalf("latency %+v: want 1ms throughout", l)
		}
	})
}

func TestPublisherStopsAfterDuration(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tgt := &recordingTarget{}
		p := publisher{target: tgt, epoch: time.Now(), events: 1000, batch: 1, size: 100, rate: 100,
			workers: 4, duration: 100 * time.Millisecond, acked: newBitset(1000)}
		st := p.run(t.Context())
		// Sends are due at 0, 10ms, ... 100ms, then the duration is up.
		if st.Acked != 11 {
			t.Fatalf("acked %d events, want the 11 due within 100ms", st.Acked)
		}

		// Flat out, each worker checks the clock before each send.
		tgt = &recordingTarget{stall: func(int) time.Duration { return 30 * time.Millisecond }}
		p = publisher{target: tgt, epoch: time.Now(), events: 1000, batch: 1, size: 100,
			workers: 2, duration: 100 * time.Millisecond, acked: newBitset(1000)}
		st = p.run(t.Context())
		if st.Acked >= 1000 || st.Acked < 8 {
			t.Fatalf("flat out for 100ms at 30ms per request on 2 workers acked %d", st.Acked)
		}
	})
}

func TestFlatOutPublishesEveryEventOnceInBatches(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tgt := &recordingTarget{
			stall: func(call int) time.Duration { return time.Duration(call%3) * time.Millisecond },
			fail:  func(call int) bool { return call == 1 },
		}
		acked := newBitset(25)
		p := publisher{target: tgt, epoch: time.Now(), events: 25, batch: 10, size: 100,
			workers: 3, duration: time.Minute, acked: acked}
		st := p.run(t.Context())

		slices.Sort(tgt.sizes)
		if !slices.Equal(tgt.sizes, []int{5, 10, 10}) {
			t.Fatalf("request sizes %v, want 10, 10 and 5", tgt.sizes)
		}
		var ns []int64
		for _, g := range tgt.got {
			ns = append(ns, g.N)
		}
		slices.Sort(ns)
		for i, n := range ns {
			if n != int64(i) {
				t.Fatalf("events sent %v, want 0 to 24 once each", ns)
			}
		}
		// One request of the three failed: its events are not acked.
		if st.Failed == 0 || st.Acked+st.Failed != 25 || acked.count() != st.Acked || st.FirstErr == nil {
			t.Fatalf("stats %+v, acked set %d: want the failed request's events left out", st, acked.count())
		}
	})
}

// TestRoundRobinSpreadsRequestsOverServers publishes through one client
// per server and checks that each server got its equal share of the
// requests, single and batched, every event once.
func TestRoundRobinSpreadsRequestsOverServers(t *testing.T) {
	const nodes = 3
	var (
		mu     sync.Mutex
		reqs   [nodes]int
		events [nodes]int
	)
	var clients []*client.Client
	for i := range nodes {
		mux := http.NewServeMux()
		mux.HandleFunc("POST /v1/topics/{topic}/events", func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			reqs[i]++
			events[i]++
			mu.Unlock()
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusCreated)
			_, _ = io.WriteString(w, `{"id":"evt_1","seq":1}`)
		})
		mux.HandleFunc("POST /v1/topics/{topic}/events:batch", func(w http.ResponseWriter, r *http.Request) {
			var in struct{ Events []json.RawMessage }
			if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			mu.Lock()
			reqs[i]++
			events[i] += len(in.Events)
			mu.Unlock()
			out := make([]map[string]any, len(in.Events))
			for j := range out {
				out[j] = map[string]any{"id": "evt_1", "seq": j + 1}
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusCreated)
			_ = json.NewEncoder(w).Encode(map[string]any{"events": out})
		})
		srv := httptest.NewServer(mux)
		t.Cleanup(srv.Close)
		c := client.New(srv.URL, client.WithHTTPClient(publisherHTTPClient(4)))
		t.Cleanup(c.CloseIdleConnections)
		clients = append(clients, c)
	}
	for _, batch := range []int{1, 5} {
		reqs, events = [nodes]int{}, [nodes]int{}
		const n = 30 * 5
		rr := &roundRobin{}
		for _, c := range clients {
			rr.targets = append(rr.targets, heraldTarget{c: c, topic: "t"})
		}
		p := publisher{target: rr, epoch: time.Now(), events: n, batch: batch,
			size: MinSize, workers: 4, duration: time.Minute, acked: newBitset(n)}
		st := p.run(t.Context())
		if st.Acked != n || st.Failed != 0 {
			t.Fatalf("batch %d: acked %d, failed %d (%v)", batch, st.Acked, st.Failed, st.FirstErr)
		}
		mu.Lock()
		for i := range nodes {
			if reqs[i] != int(st.Requests)/nodes || events[i] != n/nodes {
				t.Errorf("batch %d: server %d got %d requests with %d events; want %d and %d", batch, i, reqs[i], events[i], st.Requests/nodes, n/nodes)
			}
		}
		mu.Unlock()
	}
}
