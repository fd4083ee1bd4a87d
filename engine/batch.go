package engine

import (
	"context"
	"fmt"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/channel"
)

// A worker whose sink is a channel.Batcher gathers the events it would send
// one by one into batches: a batch goes out when it is full (MaxEvents or
// MaxBytes), when its Linger has passed since its first event, or at once
// when Linger is zero and the worker has nothing more to hand it now (no
// store read under way). A
// batch is one call and takes one send slot; the subscription's
// max_in_flight bounds the calls in flight, and so max_in_flight times
// MaxEvents bounds its events in flight. Everything after the call is as
// for single deliveries: each event's result is handled on its own
// (settled, retried, dead-lettered), so a batch may partly succeed.
//
// Events gathered but not yet sent when the worker stops are dropped: they
// are not settled, so whoever dispatches the subscription next sends them.

// batcher is the worker's batching state; zero when its sink takes events
// one at a time.
type batcher struct {
	sink   channel.Batcher
	limits channel.BatchLimits
	// gathered are events handed to the batch, not sent yet, with their
	// attempt numbers and (in at) when each was gathered; bytes is their
	// payload size.
	gathered []sendResult
	bytes    int
	calls    int // batches in flight
	done     chan []sendResult
}

// useBatches makes the worker gather events for its sink if it takes
// batches.
func (w *worker) useBatches() {
	b, ok := w.sink.(channel.Batcher)
	if !ok {
		return
	}
	limits := b.BatchLimits()
	limits.MaxEvents = max(limits.MaxEvents, 1)
	w.batch = batcher{sink: b, limits: limits, done: make(chan []sendResult, max(w.sub.MaxInFlight, 1))}
}

// batching reports whether the worker gathers batches.
func (w *worker) batching() bool { return w.batch.sink != nil }

// capacity is how many events the subscription may have in flight.
func (w *worker) capacity() int {
	if w.batching() {
		return w.sub.MaxInFlight * w.batch.limits.MaxEvents
	}
	return w.sub.MaxInFlight
}

// gather adds one event to the batch being built and sends what is ready.
func (w *worker) gather(ctx context.Context, r sendResult) {
	b := &w.batch
	r.at = w.d.cfg.Now()
	b.gathered = append(b.gathered, r)
	b.bytes += len(r.ev.Payload)
	if b.full() {
		w.sendBatches(ctx)
	}
}

// full reports whether the gathered events fill a batch.
func (b *batcher) full() bool {
	return len(b.gathered) >= b.limits.MaxEvents || b.limits.MaxBytes > 0 && b.bytes >= b.limits.MaxBytes
}

// batchDue is when the gathered events must go out even if they fill no
// batch: at once without a Linger, else once it has passed since the
// first was gathered. Zero when nothing is gathered.
func (w *worker) batchDue() time.Time {
	b := &w.batch
	if len(b.gathered) == 0 || w.awaitingRead() {
		return time.Time{}
	}
	return b.gathered[0].at.Add(b.limits.Linger)
}

// awaitingRead reports whether a partial batch without a Linger waits for
// a store read under way (see readAhead): the worker has more to hand it
// then, and sending it partial would only make more, smaller calls. The
// read's return wakes the worker, which then fills the batch or, with
// nothing more to read, sends it as it is.
func (w *worker) awaitingRead() bool { return w.batch.limits.Linger == 0 && w.reading != nil }

// sendBatches sends batches while there are full ones, or a partial one
// whose time has come, and fewer than max_in_flight calls are out.
func (w *worker) sendBatches(ctx context.Context) {
	b := &w.batch
	for len(b.gathered) > 0 && b.calls < w.sub.MaxInFlight {
		if !b.full() && (w.awaitingRead() || w.d.cfg.Now().Before(w.batchDue())) {
			return
		}
		w.sendBatch(ctx)
	}
}

// sendBatch hands the first gathered events, up to the limits (at least
// one), to the sink in one call.
func (w *worker) sendBatch(ctx context.Context) {
	b := &w.batch
	n, size := 0, 0
	for n < len(b.gathered) && n < b.limits.MaxEvents {
		size += len(b.gathered[n].ev.Payload)
		n++
		if b.limits.MaxBytes > 0 && size >= b.limits.MaxBytes {
			break
		}
	}
	batch := b.gathered[:n:n]
	b.gathered = b.gathered[n:]
	if len(b.gathered) == 0 {
		b.gathered = nil // let the backing array go
	}
	b.bytes -= size
	b.calls++
	var progress *channel.Progress
	if _, ok := b.sink.(channel.ProgressBatcher); ok {
		progress = w.progressAfter(batch)
	}
	l := w.live // see send
	l.sends.Add(1)
	w.d.senders.Go(func() {
		defer l.sends.Done()
		b.done <- w.deliverBatch(ctx, batch, progress)
	})
}

// progressAfter is where the subscription's cursors stand once the batch
// is delivered: in each topic of its fresh events, past every event
// settled already or in the batch, up to the first that is neither (an
// event held behind its key, one in flight elsewhere).
func (w *worker) progressAfter(batch []sendResult) *channel.Progress {
	in := make(map[string]map[int64]bool, 1)
	for _, r := range batch {
		if r.fromRetry {
			continue // below the cursor already
		}
		seqs := in[r.ev.Topic]
		if seqs == nil {
			seqs = make(map[int64]bool, len(batch))
			in[r.ev.Topic] = seqs
		}
		seqs[r.ev.Seq] = true
	}
	p := &channel.Progress{SubscriptionID: w.sub.ID, Epoch: w.epoch}
	for topic, seqs := range in {
		tp := w.topics[topic]
		if tp == nil || w.deleted[topic] {
			continue
		}
		at := tp.settled
		for i, done := range tp.open {
			seq := tp.settled + 1 + int64(i)
			if !done && !seqs[seq] {
				break
			}
			at = seq
		}
		if at > tp.durable {
			p.Cursors = append(p.Cursors, herald.Cursor{Topic: topic, Seq: at})
		}
	}
	return p
}

// deliverBatch makes one attempt of every event of the batch, on a send
// goroutine, as deliver does for one event.
func (w *worker) deliverBatch(ctx context.Context, batch []sendResult, progress *channel.Progress) []sendResult {
	if w.d.slots.acquire(ctx, w.slot) != nil {
		return skipAll(batch, false)
	}
	defer w.d.slots.release(w.slot)
	if !w.leaseHeld() {
		return skipAll(batch, true)
	}
	deliveries := make([]channel.Delivery, len(batch))
	for i, r := range batch {
		deliveries[i] = channel.Delivery{Event: r.ev, Attempt: r.attempt}
	}
	sendCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.sub.Timeout+5*time.Second)
	defer cancel()
	var results []herald.DeliveryResult
	if progress != nil {
		results = w.batch.sink.(channel.ProgressBatcher).DeliverBatchAt(sendCtx, deliveries, *progress)
	} else {
		results = w.batch.sink.DeliverBatch(sendCtx, deliveries)
	}
	at := w.d.cfg.Now()
	for i := range batch {
		if len(results) == len(batch) {
			batch[i].res = results[i]
		} else {
			batch[i].res = herald.DeliveryResult{Outcome: herald.Failed,
				Err: fmt.Sprintf("the %s channel answered %d results for a batch of %d", w.channel.Name(), len(results), len(batch))}
		}
		batch[i].at = at
	}
	return batch
}

func skipAll(batch []sendResult, lapsed bool) []sendResult {
	for i := range batch {
		batch[i].skipped, batch[i].lapsed = true, lapsed
	}
	return batch
}

// batchReturned handles the results of one batch call.
func (w *worker) batchReturned(ctx context.Context, results []sendResult) {
	w.batch.calls--
	for _, r := range results {
		w.handle(r)
	}
	w.sendBatches(ctx) // a full batch may have waited for this call
}
