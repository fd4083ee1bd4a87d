package stream

import (
	"context"
	"encoding/json"
	"time"

	"github.com/heraldhq/herald"
)

// PresenceTopic is the system topic where the hub announces, when asked
// (Deps.Presence), that a user's first connection on a node opened or its
// last one there closed.
const PresenceTopic = herald.SystemTopicPrefix + "presence"

// Types of the presence events.
const (
	PresenceJoined = "herald.user.joined"
	PresenceLeft   = "herald.user.left"
)

// presenceQueue bounds the presence changes waiting to be published. When
// it is full a change is dropped and counted
// (herald_stream_presence_dropped_total): presence events are advice,
// GET /v1/users/{user}/connections is the record.
const presenceQueue = 4096

// presenceNote is one change of a user's connections on this node.
type presenceNote struct {
	user  string
	conns int // on this node, after the change: 1 joined, 0 left
	at    time.Time
}

// presencePayload is the JSON body of a presence event.
type presencePayload struct {
	User        string `json:"user"`
	Node        string `json:"node"`
	Connections int    `json:"connections"`
	Time        string `json:"time"`
}

// notePresence queues a change of user's connections here, if presence
// events are on. It never blocks; call it without holding h.mu.
func (h *Hub) notePresence(user string, conns int) {
	if h.presence == nil || user == "" {
		return
	}
	select {
	case h.presenceCh <- presenceNote{user: user, conns: conns, at: h.now().UTC()}:
	default:
		h.metrics.presenceDropped.Inc()
	}
}

// publishPresence publishes the queued changes in order, a batch at a
// time, until the hub stops; then it publishes what is still queued (the
// leaves of the connections Stop closed) within a second.
func (h *Hub) publishPresence(ctx context.Context) {
	batch := make([]*herald.Event, 0, 64)
	flush := func(ctx context.Context) {
		if len(batch) == 0 {
			return
		}
		if err := h.presence(ctx, batch); err != nil && ctx.Err() == nil {
			h.log.Warn("publishing presence events failed; they are dropped", "events", len(batch), "err", err)
			h.metrics.presenceDropped.Add(float64(len(batch)))
		}
		batch = batch[:0]
	}
	take := func(n presenceNote) {
		typ := PresenceLeft
		if n.conns > 0 {
			typ = PresenceJoined
		}
		b, _ := json.Marshal(presencePayload{User: n.user, Node: h.cfg.NodeID, Connections: n.conns, Time: n.at.Format(time.RFC3339Nano)})
		batch = append(batch, &herald.Event{ID: herald.NewID(n.at), Topic: PresenceTopic, Type: typ, Key: n.user,
			ContentType: "application/json", Payload: b, Time: n.at})
	}
	for {
		select {
		case n := <-h.presenceCh:
			take(n)
		drain:
			for len(batch) < cap(batch) {
				select {
				case n := <-h.presenceCh:
					take(n)
				default:
					break drain
				}
			}
			flush(ctx)
		case <-ctx.Done():
			final, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			defer cancel()
			for {
				select {
				case n := <-h.presenceCh:
					if take(n); len(batch) == cap(batch) {
						flush(final)
					}
				default:
					flush(final)
					return
				}
			}
		}
	}
}
