package herald

import "time"

// DeliveryOutcome classifies one delivery attempt.
type DeliveryOutcome int

// The outcomes a channel reports.
const (
	Delivered DeliveryOutcome = iota + 1 // accepted (any 2xx for webhooks)
	Failed                               // not accepted: retry later
	Gone                                 // the endpoint asked never to be called again (410): disable
	// Sent is a verification outcome only: a request to confirm went out
	// (an email with a link, an SMS with a code) and the confirmation
	// arrives out of band.
	Sent
)

// DeliveryResult is the outcome of one attempt to hand an event (or a
// verification challenge) to a subscription's endpoint.
type DeliveryResult struct {
	Outcome    DeliveryOutcome
	StatusCode int           // 0 when there was no response
	Latency    time.Duration // from send to the end of the response
	Err        string        // what went wrong, for people; "" when delivered
	Response   []byte        // at most MaxResponseExcerpt bytes of the answer
	RetryAfter time.Duration // the endpoint asked to wait this long (429, 503)
}

// MaxResponseExcerpt bounds the response bytes kept in the attempt log.
const MaxResponseExcerpt = 1024

// The system topic where Herald reports changes to subscriptions it made on
// its own, and the event types it publishes there.
const (
	SubscriptionsTopic         = "herald.subscriptions"
	EventSubscriptionDisabled  = "herald.subscription.disabled"
	EventSubscriptionExpired   = "herald.subscription.expired"
	EventSubscriptionFailed    = "herald.subscription.failed"
	EventSubscriptionActivated = "herald.subscription.activated"
)
