package engine

import (
	"context"
	"sync"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/lifecycle"
)

// group is a group commit loop: callers submit requests from many
// goroutines; one goroutine takes whatever is waiting when the previous
// commit finishes and commits it with one call, so one transaction (one
// sync) serves many callers without adding a fixed delay. It is the core of
// the publish committer and of the settlement writer.
type group[Req, Res any] struct {
	// commit writes the requests and returns one result per request, or an
	// error that fails them all.
	commit func(ctx context.Context, reqs []Req) ([]Res, error)
	// weight is a request's share of maxBatch (events in a publish).
	weight   func(Req) int
	maxBatch int

	queue chan *groupCall[Req, Res]

	life     lifecycle.Runner
	quitOnce sync.Once
	quit     chan struct{} // closed by stop
	exited   chan struct{} // closed when the loop returns
}

type groupCall[Req, Res any] struct {
	req  Req
	res  Res
	err  error
	done chan struct{}
}

func newGroup[Req, Res any](queueSize, maxBatch int, weight func(Req) int, commit func(context.Context, []Req) ([]Res, error)) *group[Req, Res] {
	return &group[Req, Res]{
		commit:   commit,
		weight:   weight,
		maxBatch: maxBatch,
		queue:    make(chan *groupCall[Req, Res], queueSize),
		quit:     make(chan struct{}),
		exited:   make(chan struct{}),
	}
}

// start runs the loop; it may be called once. name names the group in
// errors.
func (g *group[Req, Res]) start(ctx context.Context, name string) error {
	// The loop ends on quit, after committing what is queued: its commits
	// must not see Stop's cancellation.
	return g.life.Start(ctx, name, func(ctx context.Context) { g.loop(context.WithoutCancel(ctx)) })
}

// stop makes new submissions fail with CodeUnavailable, commits what is
// queued, and waits for the loop to exit or ctx to end. Idempotent, safe
// before start.
func (g *group[Req, Res]) stop(ctx context.Context) error {
	g.quitOnce.Do(func() { close(g.quit) })
	_, err := g.life.Stop(ctx)
	return err
}

var errStopped = &herald.Error{Code: herald.CodeUnavailable, Message: "Herald is shutting down; retry against another node or after restart"}

// submit queues req (blocking while the queue is full: back-pressure) and
// waits for its commit. If ctx ends first, it returns ctx's error and the
// request may or may not be committed.
func (g *group[Req, Res]) submit(ctx context.Context, req Req) (Res, error) {
	var zero Res
	c := &groupCall[Req, Res]{req: req, done: make(chan struct{})}
	select {
	case <-g.quit:
		return zero, errStopped
	default:
	}
	select {
	case g.queue <- c:
	case <-g.quit:
		return zero, errStopped
	case <-ctx.Done():
		return zero, ctx.Err()
	}
	select {
	case <-c.done:
		return c.res, c.err
	case <-g.exited:
		// The loop drains the queue before it exits, so a call it did not
		// see was queued after the final drain and never committed.
		select {
		case <-c.done:
			return c.res, c.err
		default:
			return zero, errStopped
		}
	case <-ctx.Done():
		return zero, ctx.Err()
	}
}

func (g *group[Req, Res]) loop(ctx context.Context) {
	defer close(g.exited)
	var batch []*groupCall[Req, Res]
	for {
		batch = batch[:0]
		select {
		case c := <-g.queue:
			batch = append(batch, c)
		case <-g.quit:
			g.drain(ctx)
			return
		}
		n := g.weight(batch[0].req)
	gather:
		for n < g.maxBatch {
			select {
			case c := <-g.queue:
				batch = append(batch, c)
				n += g.weight(c.req)
			default:
				break gather
			}
		}
		g.run(ctx, batch)
	}
}

// drain commits everything still queued after stop.
func (g *group[Req, Res]) drain(ctx context.Context) {
	var batch []*groupCall[Req, Res]
	n := 0
	for {
		select {
		case c := <-g.queue:
			batch = append(batch, c)
			if n += g.weight(c.req); n >= g.maxBatch {
				g.run(ctx, batch)
				batch, n = nil, 0
			}
		default:
			if len(batch) > 0 {
				g.run(ctx, batch)
			}
			return
		}
	}
}

func (g *group[Req, Res]) run(ctx context.Context, batch []*groupCall[Req, Res]) {
	reqs := make([]Req, len(batch))
	for i, c := range batch {
		reqs[i] = c.req
	}
	res, err := g.commit(ctx, reqs)
	for i, c := range batch {
		if err != nil {
			c.err = err
		} else {
			c.res = res[i]
		}
		close(c.done)
	}
}
