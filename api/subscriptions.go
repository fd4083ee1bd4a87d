package api

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/archive"
	"github.com/heraldhq/herald/channel"
	"github.com/heraldhq/herald/filter"
)

// Notices is told of the changes the API made that other parts of the
// node act on at once (engine.Feed implements it): a subscription
// created, changed or deleted (the dispatcher starts, restarts or stops
// its worker rather than wait for its next poll), a topic deleted (its open
// streams end and caches forget it), a key deleted (its open streams end).
// Its methods must not block.
type Notices interface {
	SubscriptionChanged(id string)
	TopicDeleted(topic string)
	KeyRevoked(keyID string)
}

// Subscription limits of the API.
const (
	// subscriptionIDPrefix starts every subscription id.
	subscriptionIDPrefix = "sub_"
	// maxSubscriptionIDLen bounds an id taken from a path or a cursor.
	maxSubscriptionIDLen = 128
	// maxSubscriptionScans bounds the store pages one list request reads
	// while skipping subscriptions the caller may not see.
	maxSubscriptionScans = 10
	// minExpiresAfterIdle and maxExpiresAfterIdle bound expires_after_idle.
	minExpiresAfterIdle = time.Hour
	maxExpiresAfterIdle = herald.MaxRetention
	// minTimeout is the shortest delivery timeout.
	minTimeout = time.Second
	// activityResolution is how often API calls on one subscription write
	// its LastActivityAt: at most once a minute.
	activityResolution = time.Minute
)

// retryJSON is a retry policy on the wire.
type retryJSON struct {
	MaxAttempts int    `json:"max_attempts"`
	Initial     string `json:"initial"`
	Max         string `json:"max"`
}

// subscriptionJSON is a subscription on the wire. Secret is set only in the
// create response, Stats only by GET of one subscription.
type subscriptionJSON struct {
	ID      string          `json:"id"`
	Topic   string          `json:"topic"`
	Channel string          `json:"channel"`
	Config  json.RawMessage `json:"config"` // the channel's Public form: no secrets
	// URL and Headers repeat a webhook's config at the top level, where
	// they were before there were other channels.
	URL              string             `json:"url,omitempty"`
	Description      string             `json:"description"`
	Filter           json.RawMessage    `json:"filter,omitempty"`
	Headers          *map[string]string `json:"headers,omitempty"`
	Retry            retryJSON          `json:"retry"`
	Timeout          string             `json:"timeout"`
	MaxInFlight      int                `json:"max_in_flight"`
	RateLimit        float64            `json:"rate_limit"`
	Ordered          bool               `json:"ordered"`
	ExpiresAfterIdle string             `json:"expires_after_idle,omitempty"`
	State            string             `json:"state"`
	StateReason      string             `json:"state_reason,omitempty"`
	// StateReasonDetail is the raw cause behind StateReason, for admins.
	StateReasonDetail string     `json:"state_reason_detail,omitempty"`
	VerifyDeadline    string     `json:"verify_deadline,omitempty"`
	CreatedAt         string     `json:"created_at"`
	UpdatedAt         string     `json:"updated_at"`
	LastSuccessAt     string     `json:"last_success_at,omitempty"`
	FailingSince      string     `json:"failing_since,omitempty"`
	LastActivityAt    string     `json:"last_activity_at,omitempty"`
	Tenant            string     `json:"tenant,omitempty"`
	Secret            string     `json:"secret,omitempty"`
	Stats             *statsJSON `json:"stats,omitempty"`
}

// statsJSON is the delivery state GET of one subscription adds.
type statsJSON struct {
	Lag         int64 `json:"lag"`
	Retries     int64 `json:"retries"`
	DeadLetters int64 `json:"dead_letters"`
	// Delivered and Failed count successful deliveries and failed
	// attempts since the subscription was created; LatencyMS is the
	// latency of the successful ones. They are written about once a
	// second by the node delivering (ADR 0009).
	Delivered int64       `json:"delivered"`
	Failed    int64       `json:"failed"`
	LatencyMS latencyJSON `json:"latency_ms"`
}

// formatOptTime writes a time that is omitted when zero.
func formatOptTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return formatTime(t)
}

// toSubscriptionJSON renders a subscription for a caller: its config as
// its channel shows it, without secrets; detail says whether the caller
// sees failure details (see showsDetail).
func (srv *Server) toSubscriptionJSON(s herald.Subscription, detail bool) subscriptionJSON {
	reason, reasonDetail := splitReason(s.StateReason, detail)
	out := subscriptionJSON{
		ID:          s.ID,
		Topic:       s.Topic,
		Channel:     cmp.Or(s.Channel, herald.ChannelWebhook),
		Config:      json.RawMessage(`{}`),
		Description: s.Description,
		Retry: retryJSON{
			MaxAttempts: s.Retry.MaxAttempts,
			Initial:     herald.FormatDuration(s.Retry.Initial),
			Max:         herald.FormatDuration(s.Retry.Max),
		},
		Timeout:           herald.FormatDuration(s.Timeout),
		MaxInFlight:       s.MaxInFlight,
		RateLimit:         s.RateLimit,
		Ordered:           s.Ordered,
		State:             string(s.State),
		StateReason:       reason,
		StateReasonDetail: reasonDetail,
		CreatedAt:         formatTime(s.CreatedAt),
		UpdatedAt:         formatTime(s.UpdatedAt),
		LastSuccessAt:     formatOptTime(s.LastSuccessAt),
		FailingSince:      formatOptTime(s.FailingSince),
		LastActivityAt:    formatOptTime(s.LastActivityAt),
		Tenant:            s.Tenant,
	}
	if len(s.Filter) > 0 {
		out.Filter = s.Filter
	}
	if ch, err := srv.channels.Get(out.Channel); err == nil {
		out.Config = ch.Public(s.Config)
	}
	if out.Channel == herald.ChannelWebhook {
		var public struct {
			URL     string            `json:"url"`
			Headers map[string]string `json:"headers"`
		}
		_ = json.Unmarshal(out.Config, &public) // the webhook channel's Public form
		if public.Headers == nil {
			public.Headers = map[string]string{}
		}
		out.URL, out.Headers = public.URL, &public.Headers
	}
	if s.ExpiresAfterIdle > 0 {
		out.ExpiresAfterIdle = herald.FormatDuration(s.ExpiresAfterIdle)
	}
	if s.State == herald.StatePending {
		out.VerifyDeadline = formatOptTime(s.VerifyDeadline)
	}
	return out
}

// retrySpec is a retry policy as a caller writes it: omitted members take
// the defaults.
type retrySpec struct {
	MaxAttempts *int   `json:"max_attempts"`
	Initial     string `json:"initial"`
	Max         string `json:"max"`
}

// subscriptionSpec is the writable part of a subscription: the body of
// POST /v1/subscriptions, and the document a PATCH is merged into.
// Omitted members take the defaults.
type subscriptionSpec struct {
	Topic   string          `json:"topic"`
	Channel string          `json:"channel"`
	Config  json.RawMessage `json:"config"`
	// URL, Headers and Secret are members of a webhook's config, accepted
	// at the top level too, where they were before there were other
	// channels; Secret applies to creation.
	URL              string            `json:"url"`
	Headers          map[string]string `json:"headers"`
	Secret           *string           `json:"secret"`
	Description      string            `json:"description"`
	Filter           json.RawMessage   `json:"filter"`
	Retry            *retrySpec        `json:"retry"`
	Timeout          string            `json:"timeout"`
	MaxInFlight      *int              `json:"max_in_flight"`
	RateLimit        float64           `json:"rate_limit"`
	Ordered          bool              `json:"ordered"`
	ExpiresAfterIdle string            `json:"expires_after_idle"`
	// Verification and Start apply to creation ("verification" to a
	// PATCH that moves the subscription to a new endpoint too).
	Verification string          `json:"verification"`
	Start        json.RawMessage `json:"start"`
	// Tenant names the tenant the subscription belongs to (creation
	// only): an admin's choice; a tenant key's subscriptions are its
	// tenant's.
	Tenant string `json:"tenant"`
}

// channelConfig returns the spec's channel and the config as the caller
// wrote it, and whether it came as a webhook's top-level members.
func (s *Server) channelConfig(spec subscriptionSpec) (channel.Channel, json.RawMessage, bool, error) {
	name := cmp.Or(spec.Channel, herald.ChannelWebhook)
	ch, err := s.channels.Get(name)
	if err != nil {
		return nil, nil, false, err
	}
	noConfig := len(bytes.TrimSpace(spec.Config)) == 0 || isNull(spec.Config)
	topLevel := spec.URL != "" || spec.Headers != nil || spec.Secret != nil || name == herald.ChannelWebhook && noConfig
	if !topLevel {
		return ch, spec.Config, false, nil
	}
	switch {
	case name != herald.ChannelWebhook:
		return nil, nil, false, herald.FieldErrorf("url", "url, headers and secret are settings of webhooks; a %s subscription takes its settings in config", name)
	case !noConfig:
		return nil, nil, false, herald.FieldErrorf("config", "give a webhook's url, headers and secret either at the top level or in config, not both")
	}
	config, err := json.Marshal(struct {
		URL     string            `json:"url,omitempty"`
		Headers map[string]string `json:"headers,omitempty"`
		Secret  *string           `json:"secret,omitempty"`
	}{spec.URL, spec.Headers, spec.Secret})
	if err != nil {
		return nil, nil, false, fmt.Errorf("encode webhook config: %w", err)
	}
	return ch, config, true, nil
}

// configure validates the spec's settings and writes them into sub: every
// writable field but the topic and the channel. previous is the stored
// config when sub exists (nil when it is being created). Errors name the
// field at fault: a channel's own as "config.<member>", or for a webhook
// given at the top level, the member.
func (s *Server) configure(ctx context.Context, spec subscriptionSpec, sub *herald.Subscription, previous json.RawMessage, admin bool) error {
	ch, config, topLevel, err := s.channelConfig(spec)
	if err != nil {
		return err
	}
	if p := principalFrom(ctx); p != nil && p.portal && ch.Name() != herald.ChannelWebhook {
		// A tenant portal manages the tenant's webhook endpoints; other
		// channels reach the platform's own brokers and stores.
		return &herald.Error{Code: herald.CodeForbidden, Field: "channel", Message: "a portal link may create webhook subscriptions only, not " + ch.Name()}
	}
	if previous != nil && ch.Name() != cmp.Or(sub.Channel, herald.ChannelWebhook) {
		return herald.FieldErrorf("channel", "the channel of a subscription cannot change; create a new subscription")
	}
	canon, err := ch.Validate(ctx, channel.ValidateParams{Config: config, Previous: previous, Admin: admin, Tenant: sub.Tenant})
	if err != nil {
		if e, ok := errors.AsType[*herald.Error](err); ok && !topLevel {
			e.Field = strings.TrimSuffix("config."+e.Field, ".")
		}
		return err
	}
	sub.Channel, sub.Config = ch.Name(), canon

	if len(spec.Description) > herald.MaxDescriptionLen {
		return herald.FieldErrorf("description", "description is %d bytes; the limit is %d", len(spec.Description), herald.MaxDescriptionLen)
	}
	if !utf8.ValidString(spec.Description) || strings.ContainsRune(spec.Description, 0) {
		return herald.FieldErrorf("description", "description must be valid UTF-8 without NUL bytes")
	}
	sub.Description = spec.Description

	f, err := filter.Parse(spec.Filter)
	if err != nil {
		return err
	}
	sub.Filter = nil
	if canon := f.String(); f != nil && canon != "{}" {
		sub.Filter = json.RawMessage(canon)
	}

	var retry herald.RetryPolicy
	var attempts *int
	if spec.Retry != nil {
		attempts = spec.Retry.MaxAttempts
		if retry.Initial, err = parsePositive("retry.initial", spec.Retry.Initial); err != nil {
			return err
		}
		if retry.Max, err = parsePositive("retry.max", spec.Retry.Max); err != nil {
			return err
		}
	}
	retry = retry.WithDefaults()
	if attempts != nil {
		retry.MaxAttempts = *attempts // an explicit 0 is out of range, not "the default"
	}
	if err := retry.Validate(); err != nil {
		return err
	}
	sub.Retry = retry

	if sub.Timeout, err = parsePositive("timeout", spec.Timeout); err != nil {
		return err
	}
	if sub.Timeout == 0 {
		sub.Timeout = herald.DefaultTimeout
	}
	if sub.Timeout < minTimeout || sub.Timeout > herald.MaxTimeout {
		return herald.FieldErrorf("timeout", "timeout must be between %s and %s, got %s", minTimeout, herald.MaxTimeout, herald.FormatDuration(sub.Timeout))
	}

	sub.MaxInFlight = herald.DefaultMaxInFlight
	if spec.MaxInFlight != nil {
		sub.MaxInFlight = *spec.MaxInFlight
	}
	if sub.MaxInFlight < 1 || sub.MaxInFlight > herald.MaxMaxInFlight {
		return herald.FieldErrorf("max_in_flight", "max_in_flight must be between 1 and %d, got %d", herald.MaxMaxInFlight, sub.MaxInFlight)
	}

	if spec.RateLimit < 0 || spec.RateLimit > herald.MaxRateLimit || math.IsNaN(spec.RateLimit) {
		return herald.FieldErrorf("rate_limit", "rate_limit must be between 0 (unlimited) and %d requests per second, got %v", herald.MaxRateLimit, spec.RateLimit)
	}
	sub.RateLimit = spec.RateLimit
	sub.Ordered = spec.Ordered

	if sub.ExpiresAfterIdle, err = parsePositive("expires_after_idle", spec.ExpiresAfterIdle); err != nil {
		return err
	}
	if spec.ExpiresAfterIdle != "" && (sub.ExpiresAfterIdle < minExpiresAfterIdle || sub.ExpiresAfterIdle > maxExpiresAfterIdle) {
		return herald.FieldErrorf("expires_after_idle", "expires_after_idle must be between %s and %s (omit it, or send null, to never expire), got %s",
			herald.FormatDuration(minExpiresAfterIdle), herald.FormatDuration(maxExpiresAfterIdle), spec.ExpiresAfterIdle)
	}
	return nil
}

// parsePositive parses an optional duration setting; "" gives 0, and a
// given value must be above zero.
func parsePositive(field, v string) (time.Duration, error) {
	d, err := parseSetting(field, v)
	if err != nil {
		return 0, err
	}
	if v != "" && d <= 0 {
		return 0, herald.FieldErrorf(field, "%s must be a positive duration, got %q", field, v)
	}
	return d, nil
}

// parseStart reads the "start" member of a create request.
func parseStart(raw json.RawMessage, topic string) (herald.StartPosition, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return herald.StartPosition{}, nil
	}
	bad := func() error {
		return herald.FieldErrorf("start", `start must be "now", "earliest", a seq (a whole number, for a single topic) or an RFC 3339 time, got %s`, truncate(string(raw), 64))
	}
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return herald.StartPosition{}, bad()
		}
		switch s {
		case "now", "":
			return herald.StartPosition{}, nil
		case "earliest":
			return herald.StartPosition{Earliest: true}, nil
		}
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return herald.StartPosition{}, bad()
		}
		return herald.StartPosition{Time: t.UTC()}, nil
	}
	seq, err := strconv.ParseInt(string(raw), 10, 64)
	if err != nil || seq < 0 {
		return herald.StartPosition{}, bad()
	}
	if herald.IsPattern(topic) {
		return herald.StartPosition{}, herald.FieldErrorf("start", "start may be a seq only for a single topic; %q is a pattern: use \"earliest\", \"now\" or a time", topic)
	}
	if seq == 0 {
		// After seq 0 is from the first event.
		return herald.StartPosition{Earliest: true}, nil
	}
	return herald.StartPosition{Seq: seq}, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// needsAdmin reports whether a subscription's pattern starts with a
// wildcard, so it can match Herald's own topics ("herald.*") as well as
// the caller's: the dispatcher delivers every topic a pattern matches,
// whoever owns it, so only admins may create or manage those. A
// subscription naming a system topic ("herald.>") needs admin or a
// subscribe scope naming it, which only an admin can grant (see
// herald.Scope.Allows).
func needsAdmin(topic string) bool {
	first, _, _ := strings.Cut(topic, ".")
	return first == "*" || first == ">"
}

// mayManage reports whether the caller may see and manage a subscription
// on the topic: admin, or a subscribe scope that covers it.
func mayManage(p *principal, topic string) bool {
	if p == nil {
		return false
	}
	if p.scopes.IsAdmin() {
		return true
	}
	return !needsAdmin(topic) && p.scopes.Allows(herald.ActionSubscribe, topic)
}

func errNoSubscribeScope(topic string) error {
	switch {
	case needsAdmin(topic):
		return herald.Errorf(herald.CodeForbidden, "subscriptions to %q need the admin scope: the pattern can match Herald's own %q topics", topic, herald.SystemTopicPrefix+"*")
	case herald.IsSystemTopic(topic):
		return herald.Errorf(herald.CodeForbidden, "subscriptions to Herald's own topic %q need the admin scope or a subscribe scope that names it (subscribe:%s>)", topic, herald.SystemTopicPrefix)
	}
	return herald.Errorf(herald.CodeForbidden, "the API key has no subscribe scope for topic %q", topic)
}

// subscriptionStore returns the store, or an error when the server was
// built without one.
func (s *Server) subscriptionStore() (herald.SubscriptionStore, error) {
	if s.subs == nil {
		return nil, herald.Errorf(herald.CodeUnavailable, "this server does not manage subscriptions")
	}
	return s.subs, nil
}

// loadSubscription returns the subscription named by the {id} path value
// if the caller may manage it.
func (s *Server) loadSubscription(r *http.Request) (herald.Subscription, error) {
	st, err := s.subscriptionStore()
	if err != nil {
		return herald.Subscription{}, err
	}
	id := r.PathValue("id")
	if id == "" || len(id) > maxSubscriptionIDLen {
		return herald.Subscription{}, herald.Errorf(herald.CodeNotFound, "subscription %q not found", truncate(id, maxSubscriptionIDLen))
	}
	sub, err := st.GetSubscription(r.Context(), id)
	if err != nil {
		return herald.Subscription{}, err
	}
	if p := principalFrom(r.Context()); p != nil && p.tenant != "" && p.tenant != sub.Tenant {
		// Another tenant's, or the platform's: as if it did not exist.
		return herald.Subscription{}, &herald.Error{Code: herald.CodeNotFound, Field: "id", Message: "subscription " + id + " does not exist"}
	}
	if !mayManage(principalFrom(r.Context()), sub.Topic) {
		return herald.Subscription{}, errNoSubscribeScope(sub.Topic)
	}
	return sub, nil
}

// touch records API activity on the subscription, at most once per
// activityResolution, and leaves *sub as stored. It does not change
// UpdatedAt, which marks changes of configuration and state.
func (s *Server) touch(ctx context.Context, sub *herald.Subscription) error {
	now := s.now().UTC()
	if now.Sub(sub.LastActivityAt) < activityResolution {
		return nil
	}
	saved, err := s.save(ctx, *sub, func(sub *herald.Subscription) error {
		sub.LastActivityAt = now
		return nil
	})
	switch {
	case herald.IsCode(err, herald.CodeConflict):
		// Others kept writing it; a read does not fail for that, and
		// activity is recorded at most once per activityResolution anyway.
		return nil
	case err != nil:
		return err
	}
	*sub = saved
	return nil
}

// maxSaveTries bounds how often save applies a change again to a freshly
// read subscription because another writer changed it first.
const maxSaveTries = 10

// save applies change to a copy of sub and writes it. UpdateSubscription
// refuses the copy (CodeConflict) when another writer changed the
// subscription since sub was read: a dispatcher disabling it, verifying
// it or recording a failure run, or another request. save then reads it
// again and applies change to the new copy, so no one's change is lost.
// change must therefore derive everything from the subscription it is
// given and check there the state it depends on; an error from change
// ends save as it is. After maxSaveTries refusals in a row the conflict is
// returned. save returns the subscription as stored. Reading it again
// needs no new permission check: the topic, which decides it, never
// changes.
func (s *Server) save(ctx context.Context, sub herald.Subscription, change func(*herald.Subscription) error) (herald.Subscription, error) {
	for try := 1; ; try++ {
		next := sub
		if err := change(&next); err != nil {
			return herald.Subscription{}, err
		}
		err := s.subs.UpdateSubscription(ctx, next)
		if err == nil {
			next.Version++ // as the store did
			return next, nil
		}
		if !herald.IsCode(err, herald.CodeConflict) || try == maxSaveTries {
			return herald.Subscription{}, err
		}
		if sub, err = s.subs.GetSubscription(ctx, sub.ID); err != nil {
			return herald.Subscription{}, err
		}
	}
}

// changed reports a change of the subscription.
func (s *Server) changed(id string) {
	if s.notices != nil {
		s.notices.SubscriptionChanged(id)
	}
}

// newSubscriptionID returns "sub_" and 16 random bytes in lowercase base32.
func newSubscriptionID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return subscriptionIDPrefix + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))
}

// newChallenge returns a verification token: 32 random bytes, base64url.
func newChallenge() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// requireVerification makes sub wait for its endpoint to answer a new
// challenge, from now until the default deadline.
func requireVerification(sub *herald.Subscription, now time.Time) {
	sub.State = herald.StatePending
	sub.StateReason = ""
	sub.Challenge = newChallenge()
	sub.VerifyDeadline = now.Add(herald.DefaultVerifyDeadline)
	sub.NextChallengeAt = now
	sub.ChallengeTries = 0
}

// verificationMode checks the "verification" member: "challenge" (or
// empty) or "none", which needs admin. It reports whether the endpoint must
// be verified.
func verificationMode(r *http.Request, v string) (bool, error) {
	switch v {
	case "", herald.VerifyChallenge:
		return true, nil
	case herald.VerifyNone:
		if p := principalFrom(r.Context()); p == nil || !p.scopes.IsAdmin() {
			return false, herald.Errorf(herald.CodeForbidden, `"verification": "none" needs the admin scope`)
		}
		return false, nil
	}
	return false, herald.FieldErrorf("verification", `verification must be "challenge" or "none", got %q`, v)
}

func (s *Server) createSubscription(w http.ResponseWriter, r *http.Request) error {
	st, err := s.subscriptionStore()
	if err != nil {
		return err
	}
	var spec subscriptionSpec
	if err := decodeJSON(w, r, maxJSONBody, false, &spec); err != nil {
		return err
	}
	if err := herald.ValidatePattern(spec.Topic); err != nil {
		return err
	}
	if !mayManage(principalFrom(r.Context()), spec.Topic) {
		return errNoSubscribeScope(spec.Topic)
	}
	verify, err := verificationMode(r, spec.Verification)
	if err != nil {
		return err
	}
	start, err := parseStart(spec.Start, spec.Topic)
	if err != nil {
		return err
	}
	tenant, err := s.tenantFor(r, spec.Tenant)
	if err != nil {
		return err
	}
	if err := checkTenantTopic(tenant, spec.Topic); err != nil {
		return err
	}
	p := principalFrom(r.Context())
	now := s.now().UTC()
	sub := herald.Subscription{
		ID:             newSubscriptionID(),
		Topic:          spec.Topic,
		State:          herald.StateActive,
		OwnerKeyID:     p.keyID,
		Tenant:         tenantIDOf(tenant), // the channel resolves its templates for it
		CreatedAt:      now,
		UpdatedAt:      now,
		LastActivityAt: now,
	}
	if err := s.configure(r.Context(), spec, &sub, nil, p.scopes.IsAdmin()); err != nil {
		return err
	}
	ch, _ := s.channels.Get(sub.Channel) // configure found it
	if deviceCreated(r.Context()) {
		// The device made the request with its connection token: that
		// is its consent, and the only channel it may create.
		if sub.Channel != "push" {
			return herald.FieldErrorf("channel", "a connection token creates push subscriptions only; other channels need an API key")
		}
		verify = false
	}
	if _, verifies := ch.(channel.Verifier); verify && verifies {
		requireVerification(&sub, now)
	} else if !verifies && spec.Verification == herald.VerifyChallenge {
		return herald.FieldErrorf("verification", "%s subscriptions have no verification: they are active at once", sub.Channel)
	}
	if tenant != nil {
		sub.Tenant = tenant.ID
		s.tenantMu.Lock()
		err := s.checkTenantQuota(r, tenant)
		if err == nil {
			err = st.CreateSubscription(r.Context(), sub, start)
		}
		s.tenantMu.Unlock()
		if err != nil {
			return err
		}
	} else if err := st.CreateSubscription(r.Context(), sub, start); err != nil {
		return err
	}
	s.changed(sub.ID)
	out := s.toSubscriptionJSON(sub, showsDetail(r))
	if rot, ok := ch.(channel.Rotator); ok {
		out.Secret = rot.Secrets(sub.Config, now).Secret // shown this once
	}
	w.Header().Set("Location", "/v1/subscriptions/"+url.PathEscape(sub.ID))
	w.Header().Set("Cache-Control", "no-store")
	return writeJSON(w, http.StatusCreated, out)
}

func (s *Server) getSubscription(w http.ResponseWriter, r *http.Request) error {
	sub, err := s.loadSubscription(r)
	if err != nil {
		return err
	}
	if err := s.touch(r.Context(), &sub); err != nil {
		return err
	}
	stats, err := s.subscriptionStats(r.Context(), sub.ID)
	if err != nil {
		return err
	}
	out := s.toSubscriptionJSON(sub, showsDetail(r))
	out.Stats = &stats
	return writeJSON(w, http.StatusOK, out)
}

// subscriptionStats sums the lag over the subscription's cursors and counts
// its retries and dead letters.
func (s *Server) subscriptionStats(ctx context.Context, id string) (statsJSON, error) {
	var out statsJSON
	cursors, err := s.subs.Cursors(ctx, id)
	if err != nil {
		return out, err
	}
	for _, c := range cursors {
		t, err := s.store.GetTopic(ctx, c.Topic)
		if herald.IsCode(err, herald.CodeNotFound) {
			continue // deleted meanwhile
		}
		if err != nil {
			return out, err
		}
		out.Lag += max(t.HeadSeq-c.Seq, 0)
	}
	if out.Retries, err = s.subs.CountRetries(ctx, id); err != nil {
		return out, err
	}
	if out.DeadLetters, err = s.subs.CountDeadLetters(ctx, id); err != nil {
		return out, err
	}
	return out, s.addDeliveryStats(ctx, id, &out)
}

type subscriptionListJSON struct {
	Subscriptions []subscriptionJSON `json:"subscriptions"`
	NextCursor    string             `json:"next_cursor,omitempty"`
}

func (s *Server) listSubscriptions(w http.ResponseWriter, r *http.Request) error {
	st, err := s.subscriptionStore()
	if err != nil {
		return err
	}
	q := r.URL.Query()
	limit, err := queryInt(q.Get("limit"), "limit", defaultListLimit, 1, maxListLimit)
	if err != nil {
		return err
	}
	after, err := decodeIDCursor(q.Get("cursor"))
	if err != nil {
		return err
	}
	state := herald.SubscriptionState(q.Get("state"))
	switch state {
	case "", herald.StatePending, herald.StateActive, herald.StatePaused, herald.StateDisabled, herald.StateFailed:
	default:
		return herald.FieldErrorf("state", "state must be pending, active, paused, disabled or failed, got %q", state)
	}
	topic := q.Get("topic")
	if topic != "" {
		if err := herald.ValidatePattern(topic); err != nil {
			return err
		}
	}
	chName := q.Get("channel")
	if chName != "" {
		if _, err := s.channels.Get(chName); err != nil {
			return err
		}
	}
	p := principalFrom(r.Context())
	tenant := q.Get("tenant")
	if p.tenant != "" {
		if tenant != "" && tenant != p.tenant {
			return writeJSON(w, http.StatusOK, subscriptionListJSON{Subscriptions: []subscriptionJSON{}})
		}
		tenant = p.tenant
	}
	visible := func(sub herald.Subscription) bool {
		return (topic == "" || sub.Topic == topic) && (chName == "" || sub.Channel == chName) && mayManage(p, sub.Topic)
	}

	out := subscriptionListJSON{Subscriptions: []subscriptionJSON{}}
	for range maxSubscriptionScans {
		page, err := st.ListSubscriptions(r.Context(), herald.SubscriptionFilter{After: after, Limit: int(limit) + 1, State: state, Tenant: tenant})
		if err != nil {
			return err
		}
		for _, sub := range page {
			after = sub.ID
			if !visible(sub) {
				continue
			}
			if len(out.Subscriptions) == int(limit) { // one more exists: this page is full
				out.NextCursor = encodeCursor(out.Subscriptions[limit-1].ID)
				return writeJSON(w, http.StatusOK, out)
			}
			out.Subscriptions = append(out.Subscriptions, s.toSubscriptionJSON(sub, showsDetail(r)))
		}
		if len(page) <= int(limit) { // the store has no more
			return writeJSON(w, http.StatusOK, out)
		}
	}
	out.NextCursor = encodeCursor(after)
	return writeJSON(w, http.StatusOK, out)
}

// decodeIDCursor reads a list cursor holding the last subscription id seen.
func decodeIDCursor(c string) (string, error) {
	if c == "" {
		return "", nil
	}
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil || len(b) == 0 || len(b) > maxSubscriptionIDLen || !printableASCII(string(b)) {
		return "", herald.FieldErrorf("cursor", "cursor is not one this server issued")
	}
	return string(b), nil
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

// patchable are the members a PATCH may carry, besides "verification".
// "url" and "headers" are a webhook's config members at the top level.
var patchable = map[string]bool{
	"config": true, "url": true, "description": true, "filter": true, "headers": true, "retry": true, "timeout": true,
	"max_in_flight": true, "rate_limit": true, "ordered": true, "expires_after_idle": true,
}

// specOf renders the writable settings of sub in the wire form a PATCH is
// merged into; zero optional settings are left out. The config is its
// channel's public form: the channel keeps the stored secrets when it
// validates the merged config against the stored one.
func (s *Server) specOf(sub herald.Subscription) map[string]json.RawMessage {
	m := map[string]json.RawMessage{}
	put := func(k string, v any) {
		b, _ := json.Marshal(v) // strings, numbers, maps of strings: cannot fail
		m[k] = b
	}
	put("channel", cmp.Or(sub.Channel, herald.ChannelWebhook))
	m["config"] = json.RawMessage(`{}`)
	if ch, err := s.channels.Get(cmp.Or(sub.Channel, herald.ChannelWebhook)); err == nil {
		m["config"] = ch.Public(sub.Config)
	}
	put("description", sub.Description)
	if len(sub.Filter) > 0 {
		m["filter"] = sub.Filter
	}
	put("retry", retryJSON{
		MaxAttempts: sub.Retry.MaxAttempts,
		Initial:     herald.FormatDuration(sub.Retry.Initial),
		Max:         herald.FormatDuration(sub.Retry.Max),
	})
	put("timeout", herald.FormatDuration(sub.Timeout))
	put("max_in_flight", sub.MaxInFlight)
	put("rate_limit", sub.RateLimit)
	put("ordered", sub.Ordered)
	if sub.ExpiresAfterIdle > 0 {
		put("expires_after_idle", herald.FormatDuration(sub.ExpiresAfterIdle))
	}
	return m
}

// mergePatch applies a JSON merge patch (RFC 7396) of a subscription's
// settings to doc. "config" merges as RFC 7396 says, member by member at
// every depth; "retry" member by member; a webhook's top-level "url" and
// "headers" merge into its config, headers by case-insensitive name; every
// other member, "filter" included, is replaced as a whole; null removes a
// member, which then takes its default.
func mergePatch(doc, patch map[string]json.RawMessage) error {
	if url, ok := patch["url"]; ok {
		if err := mergeInto(doc, "config", map[string]json.RawMessage{"url": url}); err != nil {
			return err
		}
	}
	if headers, ok := patch["headers"]; ok {
		var hm map[string]json.RawMessage
		if json.Unmarshal(headers, &hm) != nil && !isNull(headers) {
			return herald.FieldErrorf("headers", "headers must be an object of header names and values")
		}
		var cfg map[string]json.RawMessage
		_ = json.Unmarshal(doc["config"], &cfg) // rendered by specOf: an object
		cur := map[string]json.RawMessage{}
		_ = json.Unmarshal(cfg["headers"], &cur)
		canon := map[string]json.RawMessage{}
		for k, v := range cur {
			canon[http.CanonicalHeaderKey(k)] = v
		}
		seen := map[string]bool{}
		for k, v := range hm {
			k = http.CanonicalHeaderKey(k)
			if seen[k] {
				return herald.FieldErrorf("headers", "header %q is given twice (names are case-insensitive)", k)
			}
			seen[k] = true
			if isNull(v) {
				delete(canon, k)
			} else {
				canon[k] = v
			}
		}
		if isNull(headers) {
			canon = map[string]json.RawMessage{}
		}
		if cfg == nil {
			cfg = map[string]json.RawMessage{}
		}
		cfg["headers"], _ = json.Marshal(canon) // raw JSON values: cannot fail
		doc["config"], _ = json.Marshal(cfg)
	}
	for k, v := range patch {
		if k == "url" || k == "headers" {
			continue
		}
		if isNull(v) {
			delete(doc, k)
			continue
		}
		if k == "config" {
			var pm map[string]json.RawMessage
			if json.Unmarshal(v, &pm) != nil || pm == nil {
				return herald.FieldErrorf("config", "config must be an object")
			}
			if err := mergeInto(doc, "config", pm); err != nil {
				return err
			}
			continue
		}
		if k != "retry" {
			doc[k] = v
			continue
		}
		var pm map[string]json.RawMessage
		if json.Unmarshal(v, &pm) != nil || pm == nil {
			doc[k] = v // not an object: replaced, and refused when decoded
			continue
		}
		var cur map[string]json.RawMessage
		if old, ok := doc[k]; ok {
			_ = json.Unmarshal(old, &cur) // rendered by specOf: always an object
		}
		if cur == nil {
			cur = map[string]json.RawMessage{}
		}
		for pk, pv := range pm {
			if isNull(pv) {
				delete(cur, pk)
			} else {
				cur[pk] = pv
			}
		}
		b, err := json.Marshal(cur)
		if err != nil {
			return fmt.Errorf("merge %s: %w", k, err)
		}
		doc[k] = b
	}
	return nil
}

// mergeInto merges patch into the object doc[key] as RFC 7396 says:
// objects member by member at every depth, null removing a member, any
// other value replacing.
func mergeInto(doc map[string]json.RawMessage, key string, patch map[string]json.RawMessage) error {
	var cur any
	if old, ok := doc[key]; ok {
		_ = json.Unmarshal(old, &cur)
	}
	var p any
	b, _ := json.Marshal(patch) // raw JSON values: cannot fail
	if err := json.Unmarshal(b, &p); err != nil {
		return herald.FieldErrorf(key, "%s must be a JSON object", key)
	}
	merged, err := json.Marshal(mergeValue(cur, p))
	if err != nil {
		return fmt.Errorf("merge %s: %w", key, err)
	}
	doc[key] = merged
	return nil
}

// mergeValue is RFC 7396's MergePatch(target, patch).
func mergeValue(target, patch any) any {
	pm, ok := patch.(map[string]any)
	if !ok {
		return patch
	}
	tm, ok := target.(map[string]any)
	if !ok {
		tm = map[string]any{}
	}
	for k, v := range pm {
		if v == nil {
			delete(tm, k)
		} else {
			tm[k] = mergeValue(tm[k], v)
		}
	}
	return tm
}

func isNull(v json.RawMessage) bool { return string(bytes.TrimSpace(v)) == "null" }

func (s *Server) updateSubscription(w http.ResponseWriter, r *http.Request) error {
	sub, err := s.loadSubscription(r)
	if err != nil {
		return err
	}
	body, err := readPatch(w, r)
	if err != nil {
		return err
	}
	var patch map[string]json.RawMessage
	if err := unmarshalStrict(body, &patch, ""); err != nil {
		return err
	}
	if patch == nil {
		return herald.Errorf(herald.CodeInvalid, "the body must be a JSON object of the settings to change")
	}
	var verification string
	for k, v := range patch {
		switch {
		case k == "verification":
			if err := json.Unmarshal(v, &verification); err != nil {
				return herald.FieldErrorf("verification", `verification must be "challenge" or "none"`)
			}
			delete(patch, k)
		case k == "topic":
			return herald.FieldErrorf("topic", "the topic of a subscription cannot change; create a new subscription")
		case k == "channel":
			return herald.FieldErrorf("channel", "the channel of a subscription cannot change; create a new subscription")
		case k == "tenant":
			return herald.FieldErrorf("tenant", "the tenant of a subscription cannot change; create a new subscription")
		case !patchable[k]:
			return herald.FieldErrorf(k, "unknown or read-only field %q", k)
		}
	}
	verify, err := verificationMode(r, verification)
	if err != nil {
		return err
	}
	// The patch applies to the subscription as stored when it is written,
	// so it merges with what a dispatcher changed meanwhile (see save).
	next, err := s.save(r.Context(), sub, func(next *herald.Subscription) error {
		return s.applyPatch(r.Context(), patch, verify, principalFrom(r.Context()).scopes.IsAdmin(), next)
	})
	if err != nil {
		return err
	}
	s.changed(next.ID)
	return writeJSON(w, http.StatusOK, s.toSubscriptionJSON(next, showsDetail(r)))
}

// applyPatch applies a merge patch of the settings to next; verify tells
// whether a new URL must answer a challenge first.
func (s *Server) applyPatch(ctx context.Context, patch map[string]json.RawMessage, verify, admin bool, next *herald.Subscription) error {
	sub := *next
	doc := s.specOf(sub)
	if err := mergePatch(doc, patch); err != nil {
		return err
	}
	merged, err := json.Marshal(doc)
	if err != nil {
		return fmt.Errorf("encode merged subscription: %w", err)
	}
	var spec subscriptionSpec
	if err := unmarshalStrict(merged, &spec, ""); err != nil {
		return err
	}
	if err := s.configure(ctx, spec, next, sub.Config, admin); err != nil {
		// A webhook's url and headers patched at the top level are named
		// there, as when they were given there at creation.
		if e, ok := errors.AsType[*herald.Error](err); ok {
			if member, ok := strings.CutPrefix(e.Field, "config."); ok && patch[member] != nil {
				e.Field = member
			}
		}
		return err
	}
	now := s.now().UTC()
	ch, _ := s.channels.Get(next.Channel) // configure found it
	if v, ok := ch.(channel.Verifier); ok && v.Reverify(sub.Config, next.Config) {
		next.FailingSince = time.Time{} // that run of failures was another endpoint's
		switch {
		case verify && sub.State == herald.StatePaused:
			// Stay paused; resuming will ask the new endpoint first.
			next.Challenge = newChallenge()
		case verify:
			requireVerification(next, now)
		default:
			// An admin vouched for the new endpoint, as at creation.
			next.Challenge, next.NextChallengeAt = "", time.Time{}
			if sub.State == herald.StatePending || sub.State == herald.StateFailed {
				next.State, next.StateReason = herald.StateActive, ""
			}
		}
	}
	next.UpdatedAt = now
	next.LastActivityAt = now
	return nil
}

// readPatch reads a PATCH body: JSON or JSON merge patch, at most
// maxJSONBody bytes, not empty.
func readPatch(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	if ct := r.Header.Get("Content-Type"); ct != "" && !isJSONMediaType(ct) {
		return nil, herald.Errorf(herald.CodeUnsupported, "the body must be application/merge-patch+json or application/json, not %q", ct)
	}
	body, err := readBody(w, r, maxJSONBody)
	if err != nil {
		return nil, err
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, herald.Errorf(herald.CodeInvalid, "the request body is empty; a JSON object of the settings to change is required")
	}
	return body, nil
}

func (s *Server) deleteSubscription(w http.ResponseWriter, r *http.Request) error {
	sub, err := s.loadSubscription(r)
	if err != nil {
		return err
	}
	if sub.Channel == archive.Name {
		// Deleting it would leave its archive without settings or state,
		// and its retention hold without an owner: the archive goes whole.
		name, err := s.archiveOf(r.Context(), sub.ID)
		if err != nil {
			return err
		}
		if name != "" {
			return &herald.Error{Code: herald.CodeConflict, Field: "id", Message: fmt.Sprintf(
				"subscription %s belongs to archive %s; delete the archive instead (DELETE /v1/archives/%s), which removes its subscription too", sub.ID, name, name)}
		}
	}
	if err := s.subs.DeleteSubscription(r.Context(), sub.ID); err != nil {
		return err
	}
	s.changed(sub.ID)
	w.WriteHeader(http.StatusNoContent)
	return nil
}
