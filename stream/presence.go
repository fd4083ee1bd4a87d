package stream

import (
	"context"
	"encoding/json"
	"maps"
	"slices"
	"time"

	"github.com/heraldhq/herald"
)

// PresenceTopic is the system topic where the hub announces, when asked
// (Deps.Presence), that a user's first connection in the cluster opened or
// its last one closed.
const PresenceTopic = herald.SystemTopicPrefix + "presence"

// Types of the presence events.
const (
	PresenceJoined = "herald.user.joined"
	PresenceLeft   = "herald.user.left"
)

// PresenceLease names the lease of the node that announces presence.
const PresenceLease = "herald.presence"

// PresenceFresh is how old a node's presence record may be and still
// count: a node records its users at least every UserSyncInterval, so an
// older record is a node that stopped or crashed.
const PresenceFresh = 10 * time.Second

// Leases is the part of herald.TimeStore the presence announcer uses: one
// node at a time, the holder of PresenceLease, announces.
type Leases interface {
	AcquireNamedLease(ctx context.Context, name, node string, now time.Time, ttl time.Duration) (bool, error)
	ReleaseNamedLease(ctx context.Context, name, node string) error
}

// presenceLeaseTTL is how long the announcer's lease lasts unrenewed.
const presenceLeaseTTL = 5 * time.Second

// presencePayload is the JSON body of a presence event.
type presencePayload struct {
	User string `json:"user"`
	// Connections is the user's count over the cluster after the change:
	// 0 for a leave.
	Connections int    `json:"connections"`
	Time        string `json:"time"`
}

// notePresence is told that user's first connection on this node opened
// or its last one here closed: the node records its presence at once
// rather than at the next sync, so the announcer sees it soon. It never
// blocks; call it without holding h.mu.
func (h *Hub) notePresence(user string) {
	if user == "" || h.users == nil || h.cfg.NodeID == "" {
		return
	}
	select {
	case h.presenceWake <- struct{}{}:
	default:
	}
}

// announcePresence runs on every node while presence events are on. The
// holder of PresenceLease compares, every PresenceInterval or when this
// node's own record changed, the users connected anywhere in the cluster
// (the nodes' fresh presence records) with what it saw before, and
// publishes herald.user.joined for each user whose count rose from 0 and
// herald.user.left for each whose count fell to 0: one event per change
// for the whole cluster. A node that becomes the holder first takes what
// it sees as the starting point, without events, so a change during a
// hand-over (at most the lease's 5 s) may go unannounced; a user who
// connects and leaves between two looks is not announced at all.
//
// Start takes the first look before the hub accepts streams, so a node
// that starts alone announces its first user.
func (h *Hub) announcePresence(seen map[string]int) {
	t := time.NewTicker(h.cfg.PresenceInterval)
	defer t.Stop()
	for {
		select {
		case <-h.ctx.Done():
			if seen != nil {
				ctx, cancel := context.WithTimeout(context.WithoutCancel(h.ctx), time.Second)
				_ = h.leases.ReleaseNamedLease(ctx, PresenceLease, h.cfg.NodeID)
				cancel()
			}
			return
		case <-t.C:
		case <-h.announceWake:
		}
		ctx, cancel := context.WithTimeout(h.ctx, 10*time.Second)
		seen = h.announceStep(ctx, seen)
		cancel()
	}
}

// announceStep is one look of announcePresence; it returns what it saw
// (nil when this node does not hold the lease). seen is what the last
// look saw, nil when this node did not hold the lease then.
func (h *Hub) announceStep(ctx context.Context, seen map[string]int) map[string]int {
	now := h.now()
	held, err := h.leases.AcquireNamedLease(ctx, PresenceLease, h.cfg.NodeID, now, presenceLeaseTTL)
	if err != nil || !held {
		if err != nil && h.ctx.Err() == nil {
			h.log.Warn("presence: taking the announcer's lease failed", "err", err)
		}
		return nil
	}
	cur, err := h.users.CountPresence(ctx, now.Add(-PresenceFresh))
	if err != nil {
		if h.ctx.Err() == nil {
			h.log.Warn("presence: reading the cluster's presence failed", "err", err)
		}
		return seen
	}
	if seen == nil {
		return cur // the starting point
	}
	at := now.UTC()
	var events []*herald.Event
	add := func(user, typ string, conns int) {
		b, _ := json.Marshal(presencePayload{User: user, Connections: conns, Time: at.Format(time.RFC3339Nano)})
		events = append(events, &herald.Event{ID: herald.NewID(at), Topic: PresenceTopic, Type: typ, Key: user,
			ContentType: "application/json", Payload: b, Time: at})
	}
	for _, u := range slices.Sorted(maps.Keys(cur)) {
		if seen[u] == 0 {
			add(u, PresenceJoined, cur[u])
		}
	}
	for _, u := range slices.Sorted(maps.Keys(seen)) {
		if cur[u] == 0 {
			add(u, PresenceLeft, 0)
		}
	}
	for start := 0; start < len(events); start += 1000 {
		batch := events[start:min(len(events), start+1000)]
		if err := h.presence(ctx, batch); err != nil {
			if h.ctx.Err() == nil {
				h.log.Warn("publishing presence events failed; they are dropped", "events", len(batch), "err", err)
			}
			h.metrics.presenceDropped.Add(float64(len(batch)))
		}
	}
	return cur
}
