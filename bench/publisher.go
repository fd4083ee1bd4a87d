package bench

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// publishTarget is where the publisher sends events: Herald's API or the
// raw relay. publish returns nil only when every payload was accepted.
type publishTarget interface {
	publish(ctx context.Context, payloads [][]byte) error
}

// publisher sends events 0 to events-1, batch per request, from workers
// goroutines: on a fixed timeline of rate events/s (open loop), or as fast
// as the workers go when rate is 0 (flat out). It stops after duration even
// if events remain.
//
// In open loop each request has an intended send time, start + j*batch/rate,
// which does not move when the target is slow: a request that waits for a
// free worker still counts its latency, and stamps its payloads' "t", from
// the intended time, so a stall shows in the percentiles instead of
// thinning the load (coordinated omission). Flat out, the intended time is
// the moment a worker sends.
type publisher struct {
	target   publishTarget
	epoch    time.Time // payload "t" and all times here count from it
	events   int64
	batch    int
	size     int
	rate     float64 // events per second; 0: flat out
	workers  int
	duration time.Duration
	acked    *bitset // events the target accepted; sized events
}

// publishStats is what a publisher run did.
type publishStats struct {
	Requests  int64
	Acked     int64 // events accepted
	Failed    int64 // events of requests that failed
	FirstErr  error
	Start     time.Duration // the first intended send time, since epoch
	End       time.Duration // when the last request ended, since epoch
	Latencies Latency       // per accepted request, from its intended send time
}

type publishJob struct {
	j        int64         // request number
	intended time.Duration // since epoch; <0: when a worker takes it
}

// run publishes until every event was sent, duration passed or ctx ended,
// and returns once every request has ended.
func (p *publisher) run(ctx context.Context) publishStats {
	var (
		hist             = newHistogram()
		requests, failed atomic.Int64
		end              atomic.Int64
		errOnce          sync.Once
		firstErr         error
	)
	since := func() time.Duration { return time.Since(p.epoch) }
	nreq := (p.events + int64(p.batch) - 1) / int64(p.batch)
	start := since()
	deadline := start + p.duration

	jobs := make(chan publishJob, p.workers)
	var wg sync.WaitGroup
	for range p.workers {
		wg.Go(func() {
			buf := make([]byte, 0, p.size*p.batch+64*p.batch)
			payloads := make([][]byte, 0, p.batch)
			for jb := range jobs {
				if jb.intended < 0 {
					jb.intended = since()
				}
				first := jb.j * int64(p.batch)
				last := min(first+int64(p.batch), p.events)
				buf, payloads = buf[:0], payloads[:0]
				for n := first; n < last; n++ {
					from := len(buf)
					buf = appendPayload(buf, n, int64(jb.intended), p.size)
					payloads = append(payloads, buf[from:len(buf):len(buf)])
				}
				err := p.target.publish(ctx, payloads)
				done := since()
				requests.Add(1)
				casMax(&end, int64(done))
				if err != nil {
					failed.Add(last - first)
					errOnce.Do(func() { firstErr = err })
					continue
				}
				for n := first; n < last; n++ {
					p.acked.add(n)
				}
				hist.record(done - jb.intended)
			}
		})
	}

	var timer *time.Timer
	interval := time.Duration(0)
	if p.rate > 0 {
		interval = time.Duration(float64(time.Second) * float64(p.batch) / p.rate)
		timer = time.NewTimer(0)
		<-timer.C
	}
schedule:
	for j := int64(0); j < nreq; j++ {
		jb := publishJob{j: j, intended: -1}
		if p.rate > 0 {
			jb.intended = start + time.Duration(j)*interval
			if jb.intended > deadline {
				break
			}
			if wait := jb.intended - since(); wait > 0 {
				timer.Reset(wait)
				select {
				case <-timer.C:
				case <-ctx.Done():
					timer.Stop()
					break schedule
				}
			}
		} else if since() > deadline {
			break
		}
		select {
		case jobs <- jb:
		case <-ctx.Done():
			break schedule
		}
	}
	close(jobs)
	wg.Wait()

	st := publishStats{
		Requests:  requests.Load(),
		Failed:    failed.Load(),
		Acked:     p.acked.count(),
		FirstErr:  firstErr,
		Start:     start,
		End:       time.Duration(end.Load()),
		Latencies: hist.summary(),
	}
	return st
}
