package herald

import (
	"context"
	"time"
)

// UserSubscription is a server-side subscription of one end user (the
// backend's user id, the user claim of a connection token) to one topic:
// every WebSocket connection of that user, on any node, receives the
// topic's events without subscribing on the socket.
type UserSubscription struct {
	User      string
	Topic     string
	CreatedAt time.Time
}

// Presence is how many stream connections one user has open on one node.
type Presence struct {
	Node      string
	Conns     int
	UpdatedAt time.Time
}

// UserStore keeps users' server-side subscriptions and their presence.
// Both stores implement it and pass storetest.RunUsers. All methods are
// safe for concurrent use.
type UserStore interface {
	// PutUserSubscription subscribes the user to the topic (a name, not a
	// pattern) and reports whether it is new; an existing one is kept.
	PutUserSubscription(ctx context.Context, user, topic string, now time.Time) (UserSubscription, bool, error)
	// DeleteUserSubscription removes it, or returns CodeNotFound.
	DeleteUserSubscription(ctx context.Context, user, topic string) error
	// ListUserSubscriptions returns the user's subscriptions in topic order.
	ListUserSubscriptions(ctx context.Context, user string) ([]UserSubscription, error)
	// SetPresence records the connection counts of node's users at now,
	// replacing what node recorded before (users not in counts have none
	// on node any more).
	SetPresence(ctx context.Context, node string, counts map[string]int, now time.Time) error
	// ListPresence returns the user's counts recorded after since, by node.
	ListPresence(ctx context.Context, user string, since time.Time) ([]Presence, error)
	// CountPresence returns every user with connections recorded after
	// since, and their count summed over the nodes.
	CountPresence(ctx context.Context, since time.Time) (map[string]int, error)
}
