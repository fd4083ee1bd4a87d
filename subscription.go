package herald

import (
	"context"
	"encoding/json"
	"slices"
	"time"
)

// SubscriptionState is where a subscription is in its life.
type SubscriptionState string

// The states. Only active subscriptions are dispatched; events published in
// any other state are kept for the subscription (its cursors stay put) until
// retention removes them.
const (
	StatePending  SubscriptionState = "pending"  // waiting for the endpoint to answer the verification challenge
	StateActive   SubscriptionState = "active"   // delivering
	StatePaused   SubscriptionState = "paused"   // stopped by its owner; resume continues where it stopped
	StateDisabled SubscriptionState = "disabled" // stopped by Herald: 410 Gone or failing too long; resume re-enables
	StateFailed   SubscriptionState = "failed"   // verification was not answered before its deadline
)

// Verification modes for a new webhook subscription.
const (
	VerifyChallenge = "challenge" // the default: the endpoint must echo a signed challenge
	VerifyNone      = "none"      // admin only: trusted internal endpoints
)

// Subscription limits and defaults.
const (
	MaxURLLen              = 2048
	MaxDescriptionLen      = 1024
	MaxSubscriptionHeaders = 20
	DefaultTimeout         = 15 * time.Second
	MaxTimeout             = 60 * time.Second
	DefaultMaxInFlight     = 16
	MaxMaxInFlight         = 1024
	MaxRateLimit           = 100000
	DefaultVerifyDeadline  = 24 * time.Hour
	DefaultDisableAfter    = 5 * 24 * time.Hour
	DefaultRotationGrace   = 24 * time.Hour
)

// RetryPolicy is a subscription's retry schedule: exponential backoff
// (factor 3) from Initial up to Max between attempts, MaxAttempts tries in
// all (the first delivery counts as attempt 1). After the last, the event is
// a dead letter for the subscription.
//
// The default (14 attempts, 5s initial, 4h max) waits 5s, 15s, 45s, 2m15s,
// 6m45s, 20m15s, 1h0m45s, 3h2m15s, then 4h five times: the last try comes
// about 24.5 hours after the first. Jitter takes 0-20% off each wait at
// random, which spreads retries that failed together while keeping every
// wait within 20% of the schedule and Max a hard ceiling.
type RetryPolicy struct {
	MaxAttempts int
	Initial     time.Duration
	Max         time.Duration
}

// DefaultRetryPolicy is the schedule of a subscription that sets none.
var DefaultRetryPolicy = RetryPolicy{MaxAttempts: 14, Initial: 5 * time.Second, Max: 4 * time.Hour}

// Retry policy bounds.
const (
	MaxRetryAttempts = 100
	MinRetryInitial  = 10 * time.Millisecond
	MaxRetryMax      = 7 * 24 * time.Hour
)

// WithDefaults fills zero fields from DefaultRetryPolicy.
func (p RetryPolicy) WithDefaults() RetryPolicy {
	if p.MaxAttempts == 0 {
		p.MaxAttempts = DefaultRetryPolicy.MaxAttempts
	}
	if p.Initial == 0 {
		p.Initial = DefaultRetryPolicy.Initial
	}
	if p.Max == 0 {
		p.Max = max(DefaultRetryPolicy.Max, p.Initial)
	}
	return p
}

// Validate checks the bounds; errors name the field.
func (p RetryPolicy) Validate() error {
	switch {
	case p.MaxAttempts < 1 || p.MaxAttempts > MaxRetryAttempts:
		return FieldErrorf("retry.max_attempts", "retry.max_attempts must be between 1 and %d, got %d", MaxRetryAttempts, p.MaxAttempts)
	case p.Initial < MinRetryInitial || p.Initial > MaxRetryMax:
		return FieldErrorf("retry.initial", "retry.initial must be between %s and %s, got %s", MinRetryInitial, FormatDuration(MaxRetryMax), p.Initial)
	case p.Max < p.Initial || p.Max > MaxRetryMax:
		return FieldErrorf("retry.max", "retry.max must be between retry.initial and %s, got %s", FormatDuration(MaxRetryMax), p.Max)
	}
	return nil
}

// Delay returns the wait after the given failed attempt (1-based). rnd is a
// uniform random number in [0, 1) for the jitter, which spreads the retries
// of many events that failed together.
func (p RetryPolicy) Delay(attempt int, rnd float64) time.Duration {
	d := float64(p.Initial)
	for i := 1; i < attempt && d < float64(p.Max); i++ {
		d *= 3
	}
	d = min(d, float64(p.Max))
	return time.Duration(d * (1 - 0.2*rnd))
}

// Subscription routes the events of a topic, or of every topic matching a
// pattern, to a destination: a webhook endpoint, a broker, a person. Channel
// names the kind of destination and Config is that channel's settings
// (package channel); everything else is the engine's and the same for every
// channel.
type Subscription struct {
	ID      string // "sub_..."
	Topic   string // a topic name or a pattern ("orders.*", "orders.>")
	Channel string // "webhook", "kafka", ...: see package channel
	// Config is the channel's settings in the canonical JSON its Validate
	// returned. It holds secrets (a signing secret, a password): only the
	// channel reads it, and callers see Channel.Public's form of it.
	Config      json.RawMessage
	Description string
	Filter      json.RawMessage // canonical filter JSON (package filter); nil = everything
	Retry       RetryPolicy
	Timeout     time.Duration
	MaxInFlight int
	RateLimit   float64 // deliveries per second; 0 = unlimited
	Ordered     bool    // per-key FIFO
	// ExpiresAfterIdle removes the subscription after this long with no
	// matching event and no API activity; 0 = never.
	ExpiresAfterIdle time.Duration

	State       SubscriptionState
	StateReason string // why it is disabled, failed or paused, for people

	// Verification, for channels whose endpoints must prove they agreed
	// to receive (channel.Verifier): the token sent to the endpoint (a
	// webhook challenge, the nonce of an email link, an SMS code), the
	// time it must be answered by, and when the next request is due.
	Challenge       string
	VerifyDeadline  time.Time
	NextChallengeAt time.Time
	ChallengeTries  int

	OwnerKeyID     string // the API key that created it ("" when auth is off)
	Tenant         string // the tenant it belongs to; "" for none. Never changes.
	CreatedAt      time.Time
	UpdatedAt      time.Time
	LastActivityAt time.Time // API activity or a matching event
	LastSuccessAt  time.Time
	FailingSince   time.Time // first failure after the last success; zero when healthy

	// Version is the stored subscription's version: it increases with every
	// change UpdateSubscription makes and every FailingSince a Settle sets
	// or clears. UpdateSubscription refuses a copy whose Version is not the
	// stored one, so a writer cannot put back what it read over a change
	// made since. Stores set it; callers only carry it from a read to the
	// update.
	Version int64
}

// ChannelWebhook is the channel of a subscription that names none.
const ChannelWebhook = "webhook"

// Cursor is a subscription's position in one topic's log: every event with
// seq <= Seq is settled (delivered, filtered out, in the retry set or dead).
type Cursor struct {
	Topic string
	Seq   int64
}

// Retry is an event waiting in a subscription's durable retry set.
type Retry struct {
	SubscriptionID string
	Topic          string
	Seq            int64
	EventID        string
	Key            string    // the event key, for ordered subscriptions
	Attempt        int       // attempts made so far
	DueAt          time.Time // zero: blocked behind an earlier event with the same key (ordered)
	LastError      string
}

// DeadLetter is an event that used up its retries for one subscription.
type DeadLetter struct {
	SubscriptionID string
	Topic          string
	Seq            int64
	EventID        string
	Key            string
	Attempts       int
	LastError      string
	DeadAt         time.Time
}

// Outcome of one delivery attempt.
type Outcome string

// Attempt outcomes.
const (
	OutcomeSuccess Outcome = "success"
	OutcomeFailure Outcome = "failure"
)

// Attempt records one try to deliver one event to one subscription.
type Attempt struct {
	ID             int64 // assigned by the store, increasing
	SubscriptionID string
	Topic          string
	Seq            int64
	EventID        string
	Attempt        int
	Time           time.Time
	Outcome        Outcome
	StatusCode     int // 0 when no response
	Latency        time.Duration
	Error          string
	Response       string // at most 1 KiB of the response body
}

// AttemptFilter selects attempts to list.
type AttemptFilter struct {
	EventID  string
	Outcome  Outcome // "" = any
	BeforeID int64   // page: attempts with ID < BeforeID; 0 = newest
	Limit    int
}

// SubscriptionFilter selects subscriptions to list.
type SubscriptionFilter struct {
	After  string            // page: IDs after this one; "" = first page
	Limit  int               //
	State  SubscriptionState // "" = any
	Owner  string            // "" = any owner
	Tenant string            // "" = any tenant (and none)
}

// Settlement is what a dispatcher records after delivering a set of events:
// new cursor positions, retry-set changes and dead letters, written in one
// transaction under the subscription's lease epoch.
type Settlement struct {
	Cursors []Cursor // advance only: a Seq at or below the stored one is ignored
	// AddRetries inserts retries. A row with the same (topic, seq) is
	// replaced by a due one (the next attempt of a retry) and kept when the
	// new one is blocked (an event read again after a restart).
	AddRetries  []Retry
	DoneRetries []Cursor     // (topic, seq) pairs delivered from the retry set: remove them
	DeadLetters []DeadLetter // insert (replacing), and remove the same (topic, seq) from the retry set
	// UnblockKeys heals ordered chains, applied after the changes above:
	// for each (topic, key) that has retries but none due, the lowest-seq
	// blocked one becomes due at UnblockAt. So a key with retries always
	// has exactly one due.
	UnblockKeys []RetryKey
	UnblockAt   time.Time

	Attempts []Attempt // append to the attempt log
	// Stats, if not nil, adds to the subscription's DeliveryStats.
	Stats *StatsDelta

	LastSuccess  time.Time // if not zero: set LastSuccessAt and clear FailingSince
	FailingSince time.Time // if not zero and no failure run is recorded: start one
	Activity     time.Time // if not zero: set LastActivityAt
}

// WithoutTopics returns the settlement without its rows in the given
// topics: cursors, retries added or done, dead letters and unblocked keys.
// Attempts (the log of what was sent) and the subscription's times stay.
// The receiver's slices are not changed.
func (s Settlement) WithoutTopics(topics map[string]bool) Settlement {
	s.Cursors = slices.DeleteFunc(slices.Clone(s.Cursors), func(c Cursor) bool { return topics[c.Topic] })
	s.AddRetries = slices.DeleteFunc(slices.Clone(s.AddRetries), func(r Retry) bool { return topics[r.Topic] })
	s.DoneRetries = slices.DeleteFunc(slices.Clone(s.DoneRetries), func(c Cursor) bool { return topics[c.Topic] })
	s.DeadLetters = slices.DeleteFunc(slices.Clone(s.DeadLetters), func(d DeadLetter) bool { return topics[d.Topic] })
	s.UnblockKeys = slices.DeleteFunc(slices.Clone(s.UnblockKeys), func(k RetryKey) bool { return topics[k.Topic] })
	return s
}

// Empty reports whether the settlement changes nothing.
func (s *Settlement) Empty() bool {
	return len(s.Cursors) == 0 && len(s.AddRetries) == 0 && len(s.DoneRetries) == 0 &&
		len(s.UnblockKeys) == 0 && len(s.DeadLetters) == 0 && len(s.Attempts) == 0 && s.Stats == nil &&
		s.LastSuccess.IsZero() && s.FailingSince.IsZero() && s.Activity.IsZero()
}

// RetryKey names an ordered chain: the retries of one key in one topic.
type RetryKey struct {
	Topic string
	Key   string
}

// SettleItem is one subscription's settlement under its lease epoch.
type SettleItem struct {
	SubscriptionID string
	Epoch          int64
	Settlement
}

// StartPosition is where a new subscription starts in the topics it matches.
type StartPosition struct {
	Earliest bool      // from the first retained event
	Seq      int64     // if > 0: after this seq (single-topic subscriptions only)
	Time     time.Time // if not zero: from the first event at or after this time
}

// SubscriptionStore keeps subscriptions and their delivery state: cursors,
// the durable retry set, dead letters, the attempt log and dispatch leases.
//
// Writes a dispatcher makes (Settle) carry the epoch of its lease on the
// subscription; a write with a stale epoch fails with CodeConflict and
// changes nothing, so a node that lost a subscription cannot move its
// cursors. Errors that callers act on carry CodeNotFound or CodeConflict.
type SubscriptionStore interface {
	// CreateSubscription stores a new subscription and sets its cursors in
	// every existing topic it matches: at the topic's head seq by default,
	// before the first retained event with start.Earliest, after start.Seq,
	// or before the first event at or after start.Time. Topics created later
	// have no cursor and start from their first event. The stored Version
	// starts at 0, whatever s.Version is. Channel and Config are stored
	// as given (an empty Channel as ChannelWebhook); the store never reads
	// the config. CodeConflict if the ID exists.
	CreateSubscription(ctx context.Context, s Subscription, start StartPosition) error

	// GetSubscription returns the subscription, or CodeNotFound.
	GetSubscription(ctx context.Context, id string) (Subscription, error)

	// ListSubscriptions returns subscriptions in ID order.
	ListSubscriptions(ctx context.Context, f SubscriptionFilter) ([]Subscription, error)

	// UpdateSubscription replaces the stored subscription's fields except
	// ID, Topic, Channel, CreatedAt, OwnerKeyID and Version, if s.Version is the
	// stored version, and increments the stored version by one.
	// LastSuccessAt and LastActivityAt never move backwards: a settlement
	// may have advanced them since the caller read the subscription without
	// changing the version. CodeNotFound if missing; CodeConflict, changing
	// nothing, if s.Version is not the stored version: another writer
	// changed the subscription since s was read, and the caller reads it
	// again, applies its change to the new copy and retries, so neither
	// change is lost.
	UpdateSubscription(ctx context.Context, s Subscription) error

	// DeleteSubscription removes the subscription with its cursors,
	// retries, dead letters, attempts and lease. CodeNotFound if missing.
	DeleteSubscription(ctx context.Context, id string) error

	// Cursors returns the subscription's cursors.
	Cursors(ctx context.Context, id string) ([]Cursor, error)

	// DeleteTopic (Store) also removes every subscription's cursor, retries
	// and dead letters in that topic: a topic created again starts clean.
	// And it fences the topic for every subscription that matches it and
	// holds a lease (live or lapsed, not released), at the lease's current
	// epoch: a Settle under that epoch writes nothing of the topic (see
	// Settle), so a dispatcher that read the topic before the deletion
	// cannot put its cursor, retries or dead letters back. Topics are named
	// by name, and a stale cursor of 5 would make the topic created again
	// skip its seqs 1 to 5.

	// AcquireLease gives node the right to dispatch the subscription and
	// returns the subscription's lease epoch. A subscription lease rests
	// on its node's lease (see RenewNodeLease): it is live while the node
	// lease it was taken under is, so that a node keeps every lease it
	// holds with one write, whatever their number (ADR 0011). AcquireLease
	// takes or extends node's own lease to now+ttl first (a new node
	// epoch if it had lapsed or was released). If node already holds the
	// subscription under its live node lease, the epoch stays, unless a
	// topic was deleted under that epoch (a fence, see DeleteTopic): then,
	// as when another node's lease had lapsed or the lease was released
	// or taken under an older node lease, the epoch increases by one, so a
	// dispatcher that has not heard of the deletion sees a new epoch and
	// restarts. Taking a subscription from a node whose lease lapsed also
	// ends that node lease for good (its epoch moves on), so a renewal of
	// it that was sent before it lapsed and arrives after cannot make it
	// live again: its node learns that it lost its subscriptions. If
	// another node's lease is live, CodeConflict. A new epoch ends the old
	// one's fences. CodeNotFound if the subscription does not exist.
	AcquireLease(ctx context.Context, id, node string, now time.Time, ttl time.Duration) (int64, error)

	// RenewNodeLease extends node's lease to now+ttl, which keeps every
	// subscription lease node holds under it, in one write. Its Epoch
	// stays while the lease is live; a lapsed or released lease (or one
	// another node ended as it took one of its subscriptions, see
	// AcquireLease) is taken again with a higher epoch, and the
	// subscription leases held under the old one are ended: the
	// dispatcher restarts those subscriptions. It also returns the
	// subscription leases node holds under it whose epoch a topic
	// deletion fenced (see DeleteTopic), found through the fences alone:
	// those must be acquired again under a new epoch. CodeInvalid for an
	// empty node.
	RenewNodeLease(ctx context.Context, node string, now time.Time, ttl time.Duration) (NodeLease, error)

	// AcquireLeases is AcquireLease for many subscriptions in one step (a
	// node starting, a full sync): it returns the leases it took or
	// extended, with the node epoch they rest on, and leaves out the
	// subscriptions that do not exist or whose live lease another node
	// holds. On an error it may have taken some: it returns those too.
	AcquireLeases(ctx context.Context, ids []string, node string, now time.Time, ttl time.Duration) ([]Lease, error)

	// DispatchStates returns, for each of the subscriptions, its cursors
	// and whether its retry set has rows: what a dispatcher starting many
	// subscriptions needs to tell which have nothing to do. One with
	// neither, or that does not exist, is left out.
	DispatchStates(ctx context.Context, ids []string) (map[string]DispatchState, error)

	// ReleaseLease ends node's lease if it still holds it with this epoch.
	ReleaseLease(ctx context.Context, id, node string, epoch int64) error

	// ReleaseNodeLeases ends node's lease, and with it every subscription
	// lease node holds, live or lapsed, and returns how many subscription
	// leases it ended; with node "" it ends every node's lease. A node
	// calls it as it starts: a lease under its own name is its previous
	// process's, which is gone (a node name is never used by two running
	// processes), so its subscriptions need not wait for the lease to run
	// out; and a process that knows no other one dispatches from the store
	// (SQLite under its lock) ends them all. The epochs stay, and the next
	// AcquireLease of each increases it, so nothing the previous holder
	// still settles applies.
	ReleaseNodeLeases(ctx context.Context, node string) (int64, error)

	// Settle applies the settlements of many subscriptions in one
	// transaction, items in order, and within an item in this order:
	// Cursors, AddRetries, DoneRetries, DeadLetters, UnblockKeys, Attempts,
	// then LastSuccess (sets LastSuccessAt, clears FailingSince), then
	// FailingSince (sets it when it is zero), then Activity. It never
	// changes UpdatedAt, which marks changes of configuration and state.
	// It increments the subscription's Version when it changes
	// FailingSince, and only then: a copy read before cannot write the old
	// failure run back, while the frequent success and activity times do
	// not make every API update conflict.
	// It returns one error per item: nil when applied,
	// CodeConflict when the item's epoch is not the subscription's current
	// lease epoch, CodeNotFound when the subscription is gone; such an item
	// changes nothing while the others apply. A non-nil second result means
	// nothing was applied.
	//
	// An item applies without its rows in the topics deleted under its
	// epoch (fenced by DeleteTopic): no Cursors, AddRetries, DoneRetries,
	// DeadLetters or UnblockKeys of such a topic are written, whatever
	// their seqs, while its Attempts and the rest apply and the item's
	// error is nil. A Settle and a DeleteTopic are serialised: a settlement
	// either commits before the deletion (which then removes its rows) or
	// sees the fence. The fence is by lease epoch, not by seq, because a
	// settlement made before the deletion cannot be told apart by its seqs
	// from one about the topic created again: the new topic reuses them.
	// A dispatcher that hears of the deletion restarts under a new epoch
	// (AcquireLease), reading the delivery state the deletion left.
	Settle(ctx context.Context, items []SettleItem) ([]error, error)

	// DueRetries returns up to limit retries of the subscription with
	// DueAt <= now (blocked ones excluded), earliest due first, and the
	// DueAt of the earliest due retry not returned (zero if none).
	DueRetries(ctx context.Context, id string, now time.Time, limit int) ([]Retry, time.Time, error)

	// RetryKeys returns every retry of the subscription that has a key, in
	// (topic, seq) order, so an ordered dispatcher can rebuild its per-key
	// chains after it starts.
	RetryKeys(ctx context.Context, id string) ([]Retry, error)

	// CountRetries returns the size of the subscription's retry set.
	CountRetries(ctx context.Context, id string) (int64, error)

	// GetRetry returns the subscription's retry of the topic's event seq,
	// or CodeNotFound when the event is not in its retry set.
	GetRetry(ctx context.Context, id, topic string, seq int64) (Retry, error)

	// ScheduleReplay puts every retained event of the topic with
	// fromSeq <= seq <= toSeq in the subscription's retry set, due at now
	// with Attempt 0 (an event already there is left as it is). It returns
	// how many it added; at most limit.
	ScheduleReplay(ctx context.Context, id, topic string, fromSeq, toSeq int64, now time.Time, limit int) (int64, error)

	// ListDeadLetters returns the subscription's dead letters in
	// (topic, seq) order after the given position ("" topic: from the start).
	ListDeadLetters(ctx context.Context, id string, after Cursor, limit int) ([]DeadLetter, error)

	// RedriveDeadLetters moves dead letters back into the retry set, due at
	// now with Attempt 0: those with the given event ids, or all when ids is
	// nil. It returns how many moved.
	RedriveDeadLetters(ctx context.Context, id string, eventIDs []string, now time.Time) (int64, error)

	// DeleteDeadLetters removes dead letters with the given event ids, or
	// all when ids is nil, and returns how many.
	DeleteDeadLetters(ctx context.Context, id string, eventIDs []string) (int64, error)

	// CountDeadLetters returns how many dead letters the subscription has.
	CountDeadLetters(ctx context.Context, id string) (int64, error)

	// CountBacklog returns the sizes of the retry sets and the dead letters
	// of every subscription whose lease node holds (of every subscription
	// when node is ""), in one query each: the dispatcher's gauges.
	CountBacklog(ctx context.Context, node string) (retries, deadLetters int64, err error)

	// ListAttempts returns the subscription's attempts, newest first.
	ListAttempts(ctx context.Context, id string, f AttemptFilter) ([]Attempt, error)

	// PruneAttempts deletes up to limit attempts older than before and
	// returns how many.
	PruneAttempts(ctx context.Context, before time.Time, limit int) (int64, error)

	// DeliveryStats returns what the subscription's settlements recorded
	// of its deliveries (see Settlement.Stats); a zero DeliveryStats when
	// none did yet.
	DeliveryStats(ctx context.Context, id string) (DeliveryStats, error)
}

// DispatchState is what SubscriptionStore.DispatchStates returns of one
// subscription.
type DispatchState struct {
	Cursors []Cursor
	Retries bool // the retry set has rows (due or not, blocked or not)
}

// Lease is a dispatch lease a node holds: the subscription, its epoch
// and the epoch of the node lease it rests on (see RenewNodeLease).
type Lease struct {
	SubscriptionID string
	Epoch          int64
	NodeEpoch      int64
}

// NodeLease is what RenewNodeLease returns: the node lease's epoch, and
// the subscription leases under it that topic deletions fenced.
type NodeLease struct {
	Epoch  int64
	Fenced []Lease
}
