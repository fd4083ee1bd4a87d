package stream

import (
	"context"
	"encoding/json"
	"maps"
	"strconv"
	"strings"
	"time"

	"github.com/heraldhq/herald"
)

// UserStore is the part of herald.UserStore the hub reads and writes.
type UserStore interface {
	ListUserSubscriptions(ctx context.Context, user string) ([]herald.UserSubscription, error)
	SetPresence(ctx context.Context, node string, counts map[string]int, now time.Time) error
	CountPresence(ctx context.Context, since time.Time) (map[string]int, error)
}

// userSubPrefix starts the subscription id of a server-side subscription
// on the socket: "user:" and the topic.
const userSubPrefix = "user:"

// maxUserPositions bounds the ?positions= of a user connection.
const maxUserPositions = 1000

// parseUserPositions reads ?positions=: a JSON object of topic -> the seq
// last received, from which the user's server-side subscriptions resume.
func parseUserPositions(s string) (map[string]int64, error) {
	if s == "" {
		return nil, nil
	}
	var pos map[string]int64
	if err := json.Unmarshal([]byte(s), &pos); err != nil || len(pos) > maxUserPositions {
		return nil, herald.FieldErrorf("positions", "positions must be a JSON object of at most %d topics to the seq last received, such as {\"accounts.u42\":17}", maxUserPositions)
	}
	for t, seq := range pos {
		if herald.ValidateTopicName(t) != nil || seq < 0 {
			return nil, herald.FieldErrorf("positions", "positions: %q is not a topic with a seq of 0 or more", t)
		}
	}
	return pos, nil
}

// UserChanged makes the hub reread the server-side subscriptions of the
// users connected here now (the API changed one). It never blocks.
func (h *Hub) UserChanged(string) {
	select {
	case h.userWake <- struct{}{}:
	default:
	}
}

// UserConns returns how many stream connections the user has on this node.
func (h *Hub) UserConns(user string) int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return len(h.byUser[user])
}

// syncUsers rereads the server-side subscriptions of every user connected
// here, every UserSyncInterval or when woken, and records presence: then,
// and at once when a user's first connection here opened or its last one
// closed. When the hub stops it records none, so the cluster sees this
// node's users leave without waiting for the record to age.
func (h *Hub) syncUsers(context.Context) {
	t := time.NewTicker(h.cfg.UserSyncInterval)
	defer t.Stop()
	var lastRecord time.Time
	for {
		subs := true
		select {
		case <-h.ctx.Done():
			if h.cfg.NodeID != "" {
				ctx, cancel := context.WithTimeout(context.WithoutCancel(h.ctx), time.Second)
				_ = h.users.SetPresence(ctx, h.cfg.NodeID, nil, h.now())
				cancel()
			}
			return
		case <-t.C:
		case <-h.userWake:
		case <-h.presenceWake:
			subs = false // only presence changed
			// At most four records a second: each rewrites all of this
			// node's rows, and joins and leaves can come by the thousand.
			select {
			case <-time.After(time.Until(lastRecord.Add(presenceRecordGap))):
			case <-h.ctx.Done():
				continue
			}
		}
		lastRecord = time.Now()
		h.mu.RLock()
		conns := make(map[string][]*conn, len(h.byUser))
		counts := make(map[string]int, len(h.byUser))
		for u, cs := range h.byUser {
			if subs {
				conns[u] = slicesOf(cs)
			}
			counts[u] = len(cs)
		}
		h.mu.RUnlock()
		for u, cs := range conns {
			h.syncUser(h.ctx, u, cs)
		}
		if h.cfg.NodeID != "" {
			ctx, cancel := context.WithTimeout(h.ctx, 10*time.Second)
			if err := h.users.SetPresence(ctx, h.cfg.NodeID, counts, h.now()); err != nil && h.ctx.Err() == nil {
				h.log.Warn("recording users' presence failed", "err", err)
			} else if !subs {
				select {
				case h.announceWake <- struct{}{}:
				default:
				}
			}
			cancel()
		}
	}
}

// presenceRecordGap is the least time between two records of this node's
// presence made because a user joined or left it.
const presenceRecordGap = 250 * time.Millisecond

func slicesOf(m map[*conn]struct{}) []*conn {
	out := make([]*conn, 0, len(m))
	for c := range maps.Keys(m) {
		out = append(out, c)
	}
	return out
}

// syncConnUser starts the server-side subscriptions of a new connection,
// and reports whether it could read them.
func (h *Hub) syncConnUser(ctx context.Context, c *conn) bool {
	if h.users == nil {
		return false
	}
	return h.syncUser(ctx, c.user, []*conn{c})
}

// syncUser makes the user's connections hold exactly the user's
// server-side subscriptions: starts the new ones (from the connection's
// position when it gave one, else live) and ends those removed.
func (h *Hub) syncUser(ctx context.Context, user string, conns []*conn) bool {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	subs, err := h.users.ListUserSubscriptions(ctx, user)
	cancel()
	if err != nil {
		if h.ctx.Err() == nil {
			h.log.Warn("reading a user's subscriptions failed", "err", err)
		}
		return false
	}
	want := make(map[string]bool, len(subs))
	for _, us := range subs {
		want[us.Topic] = true
	}
	for _, c := range conns {
		var start []string
		var end []string
		h.mu.Lock()
		if c.userSeen == nil {
			c.userSeen = map[string]bool{}
		}
		for t := range want {
			if !c.userSeen[t] {
				c.userSeen[t] = true
				start = append(start, t)
			}
		}
		for t := range c.userSeen {
			if !want[t] {
				delete(c.userSeen, t)
				end = append(end, t)
			}
		}
		pos := c.userPos
		h.mu.Unlock()
		for _, t := range end {
			h.removeSub(c, userSubPrefix+t, nil, marshalFrame(unsubscribedFrame{Op: "unsubscribed", ID: userSubPrefix + t}))
		}
		for _, t := range start {
			op := clientOp{Topic: t}
			if seq, ok := pos[t]; ok {
				op.Since = json.RawMessage(strconv.FormatInt(seq, 10))
			}
			if err := h.subscribeAs(c, userSubPrefix+t, op, false); err != nil {
				c.sendError(userSubPrefix+t, err)
			}
		}
	}
	return true
}

// isUserSub reports whether a subscription id names a server-side one.
func isUserSub(id string) bool { return strings.HasPrefix(id, userSubPrefix) }
