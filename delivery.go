package herald

import (
	"strings"
	"time"
)

// DeliveryOutcome classifies one delivery attempt.
type DeliveryOutcome int

// The outcomes a channel reports.
const (
	Delivered DeliveryOutcome = iota + 1 // accepted (any 2xx for webhooks)
	Failed                               // not accepted: retry later
	Gone                                 // the endpoint asked never to be called again (410): disable
	// Rejected means the destination refused this event for good (an
	// SMTP 5xx reply, a push service's 400 for a malformed message): it
	// becomes a dead letter at once, without retries. A run of them in a
	// row (DispatcherConfig.DisableAfterRejects) disables the
	// subscription, as repeated bounces should.
	Rejected
	// Sent is a verification outcome only: a request to confirm went out
	// (an email with a link, an SMS with a code) and the confirmation
	// arrives out of band.
	Sent
	// Deferred means the channel keeps the event back on purpose until
	// RetryAfter has passed (a person's quiet hours): it waits in the
	// retry set, due then, and the hold counts as no attempt and no
	// failure.
	Deferred
)

// DeliveryResult is the outcome of one attempt to hand an event (or a
// verification challenge) to a subscription's endpoint.
type DeliveryResult struct {
	Outcome    DeliveryOutcome
	StatusCode int           // 0 when there was no response
	Latency    time.Duration // from send to the end of the response
	// Err is why the attempt failed, as a reason from a small documented
	// set ("dns-failure", "timeout", "http-503"; see package webhook):
	// safe to show anyone who may see the subscription. "" when delivered.
	Err string
	// Detail is the raw cause behind Err (the resolver's or the dialer's
	// error, with host names and addresses), for the server log and admin
	// keys only; often "".
	Detail     string
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

// A stored failure reason (Attempt.Error, Retry.LastError,
// DeadLetter.LastError, Subscription.StateReason) is its public text, then,
// when there is one, a newline and its detail: the raw cause, which can
// name internal hosts and addresses, shown to admin keys only. JoinReason
// and SplitReason are the only code that knows this form.

// JoinReason returns the stored form of a public reason and its detail.
// The reason must be one line.
func JoinReason(reason, detail string) string {
	if detail == "" {
		return reason
	}
	return reason + "\n" + detail
}

// SplitReason splits a stored reason into its public text and its detail
// ("" when it has none).
func SplitReason(stored string) (reason, detail string) {
	reason, detail, _ = strings.Cut(stored, "\n")
	return reason, detail
}
