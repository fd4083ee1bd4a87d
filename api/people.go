package api

import (
	"cmp"
	"context"
	"encoding/json"
	"html/template"
	"net/http"
	"strings"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/channel"
	"github.com/heraldhq/herald/engine"
)

// People confirm and leave subscriptions through links in the messages
// they receive, without an account: GET /v1/confirm/{token} confirms a
// pending subscription, GET /v1/unsubscribe/{token} shows a button that
// POSTs to the same URL, and that POST (also sent by mail clients as RFC
// 8058 one-click unsubscribe) unsubscribes. Tokens are signed (package
// channel, links.go). A browser gets an HTML page, a client asking for
// JSON gets JSON, and failures are problems either way (HTML pages for
// browsers).

// The system event announcing that a person unsubscribed.
const EventSubscriptionUnsubscribed = "herald.subscription.unsubscribed"

// unsubscribedReason is the state reason of an unsubscribed subscription.
const unsubscribedReason = "unsubscribed by the recipient"

// maxLinkToken bounds a link token in a path.
const maxLinkToken = 256

// personJSON is what a JSON client is told of a confirmation or an
// unsubscription: no config (the link is a bearer credential, not a key).
type personJSON struct {
	SubscriptionID string                   `json:"subscription_id"`
	Topic          string                   `json:"topic"`
	Channel        string                   `json:"channel"`
	State          herald.SubscriptionState `json:"state"`
	Message        string                   `json:"message"`
}

// linkSubscription returns the subscription a link token names, or
// CodeNotFound for a token of no subscription.
func (s *Server) linkSubscription(r *http.Request) (herald.Subscription, string, error) {
	token := r.PathValue("token")
	id := channel.LinkTokenID(token)
	if len(token) > maxLinkToken || id == "" || s.subs == nil {
		return herald.Subscription{}, "", herald.Errorf(herald.CodeNotFound, "this link is not valid: check that it was copied whole")
	}
	sub, err := s.subs.GetSubscription(r.Context(), id)
	if herald.IsCode(err, herald.CodeNotFound) {
		return sub, "", herald.Errorf(herald.CodeNotFound, "this link is not valid: the subscription does not exist (any more)")
	}
	return sub, token, err
}

func (s *Server) confirmLink(w http.ResponseWriter, r *http.Request) error {
	sub, token, err := s.linkSubscription(r)
	if err != nil {
		return s.personError(w, r, err)
	}
	now := s.now().UTC()
	check := func(sub *herald.Subscription) error {
		if sub.State != herald.StatePending || sub.Challenge == "" ||
			!channel.CheckLinkToken(token, channel.PurposeConfirm, sub.ID, []byte(sub.Challenge)) {
			return herald.Errorf(herald.CodeGone, "this confirmation link was already used, or a newer one was sent: use the newest link, or ask for a new one")
		}
		if !now.Before(sub.VerifyDeadline) {
			return herald.Errorf(herald.CodeGone, "this confirmation link expired at %s: ask for a new one", sub.VerifyDeadline.Format(time.RFC3339))
		}
		return nil
	}
	if err := check(&sub); err != nil {
		if sub.State == herald.StateActive {
			return s.personDone(w, r, sub, "Already confirmed", "This subscription is already confirmed: notifications of "+sub.Topic+" are on their way.")
		}
		return s.personError(w, r, err)
	}
	sub, err = s.save(r.Context(), sub, func(sub *herald.Subscription) error {
		if err := check(sub); err != nil {
			return err
		}
		sub.State, sub.StateReason, sub.Challenge = herald.StateActive, "", ""
		sub.NextChallengeAt, sub.FailingSince = time.Time{}, time.Time{}
		sub.UpdatedAt, sub.LastActivityAt = now, now
		return nil
	})
	if err != nil {
		return s.personError(w, r, err)
	}
	s.changed(sub.ID)
	s.announce(r.Context(), herald.EventSubscriptionActivated, sub, "confirmed by the recipient")
	return s.personDone(w, r, sub, "Subscription confirmed", "You will receive notifications of "+sub.Topic+". Every message has a link to unsubscribe.")
}

// unsubscribeKey returns the subscription's link key, if its channel
// sends to people.
func (s *Server) unsubscribeKey(sub herald.Subscription) []byte {
	ch, err := s.channels.Get(cmp.Or(sub.Channel, herald.ChannelWebhook))
	if err != nil {
		return nil
	}
	lk, ok := ch.(channel.LinkKeyer)
	if !ok {
		return nil
	}
	return lk.LinkKey(sub.Config)
}

func (s *Server) checkUnsubscribe(r *http.Request) (herald.Subscription, error) {
	sub, token, err := s.linkSubscription(r)
	if err != nil {
		return sub, err
	}
	if !channel.CheckLinkToken(token, channel.PurposeUnsubscribe, sub.ID, s.unsubscribeKey(sub)) {
		return sub, herald.Errorf(herald.CodeNotFound, "this link is not valid: check that it was copied whole")
	}
	return sub, nil
}

// unsubscribePage shows what the link would do and a button that does
// it: a GET never unsubscribes, since mail scanners follow links.
func (s *Server) unsubscribePage(w http.ResponseWriter, r *http.Request) error {
	sub, err := s.checkUnsubscribe(r)
	if err != nil {
		return s.personError(w, r, err)
	}
	if sub.State == herald.StateDisabled && sub.StateReason == unsubscribedReason {
		return s.personDone(w, r, sub, "Unsubscribed", "You are unsubscribed from "+sub.Topic+": nothing more will be sent.")
	}
	if wantsJSON(r) {
		return writeJSON(w, http.StatusOK, personJSON{sub.ID, sub.Topic, sub.Channel, sub.State, "POST to this URL to unsubscribe"})
	}
	return writePage(w, http.StatusOK, page{Title: "Unsubscribe", Text: "Stop notifications of " + sub.Topic + "?", Form: true})
}

func (s *Server) unsubscribe(w http.ResponseWriter, r *http.Request) error {
	sub, err := s.checkUnsubscribe(r)
	if err != nil {
		return s.personError(w, r, err)
	}
	stopReadingBody(w, r) // the one-click body says nothing more
	if sub.State == herald.StateDisabled && sub.StateReason == unsubscribedReason {
		return s.personDone(w, r, sub, "Unsubscribed", "You are unsubscribed from "+sub.Topic+": nothing more will be sent.")
	}
	now := s.now().UTC()
	sub, err = s.save(r.Context(), sub, func(sub *herald.Subscription) error {
		sub.State, sub.StateReason = herald.StateDisabled, unsubscribedReason
		// A new challenge marks the address as not agreeing any more:
		// resuming the subscription asks the person to confirm again.
		sub.Challenge, sub.NextChallengeAt = newChallenge(), time.Time{}
		sub.UpdatedAt, sub.LastActivityAt = now, now
		return nil
	})
	if err != nil {
		return s.personError(w, r, err)
	}
	s.changed(sub.ID)
	s.announce(r.Context(), EventSubscriptionUnsubscribed, sub, unsubscribedReason)
	s.log.Info("unsubscribed by the recipient", "subscription_id", sub.ID, "channel", sub.Channel)
	return s.personDone(w, r, sub, "Unsubscribed", "You are unsubscribed from "+sub.Topic+": nothing more will be sent.")
}

// announce publishes a change a person made on herald.subscriptions, as
// the dispatcher does for the changes it makes.
func (s *Server) announce(ctx context.Context, typ string, sub herald.Subscription, reason string) {
	if s.publisher == nil {
		return
	}
	now := s.now().UTC()
	endpoint := ""
	if ch, err := s.channels.Get(cmp.Or(sub.Channel, herald.ChannelWebhook)); err == nil {
		endpoint = ch.Destination(sub.Config)
	}
	body, _ := json.Marshal(map[string]any{
		"type": typ, "subscription_id": sub.ID, "topic": sub.Topic, "channel": sub.Channel, "endpoint": endpoint,
		"state": sub.State, "reason": reason, "time": now.Format(time.RFC3339Nano),
	})
	ev := &herald.Event{ID: herald.NewID(now), Topic: herald.SubscriptionsTopic, Type: typ, Key: sub.ID,
		ContentType: "application/json", Payload: body, Time: now}
	if _, err := s.publisher.Publish(context.WithoutCancel(ctx), engine.PublishParams{Events: []*herald.Event{ev}, System: true, Source: "herald"}); err != nil {
		s.log.Warn("publish system event", "type", typ, "subscription_id", sub.ID, "err", err)
	}
}

// wantsJSON reports whether the client asked for JSON rather than a page.
func wantsJSON(r *http.Request) bool {
	accept := r.Header.Get("Accept")
	return strings.Contains(accept, "json") && !strings.Contains(accept, "text/html")
}

func (s *Server) personDone(w http.ResponseWriter, r *http.Request, sub herald.Subscription, title, text string) error {
	w.Header().Set("Cache-Control", "no-store")
	if wantsJSON(r) {
		return writeJSON(w, http.StatusOK, personJSON{sub.ID, sub.Topic, sub.Channel, sub.State, text})
	}
	return writePage(w, http.StatusOK, page{Title: title, Text: text})
}

// personError answers a failure: a problem for API clients, a page for
// browsers.
func (s *Server) personError(w http.ResponseWriter, r *http.Request, err error) error {
	if wantsJSON(r) || !strings.Contains(r.Header.Get("Accept"), "text/html") {
		return err
	}
	p, code := problemFor(err)
	if code == herald.CodeInternal {
		return err // logged with the request id, as every internal error
	}
	return writePage(w, p.Status, page{Title: p.Title, Text: p.Detail})
}

type page struct {
	Title string
	Text  string
	Form  bool // a button that POSTs to the page's own URL
}

var pageTemplate = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<meta name="referrer" content="no-referrer"><title>{{.Title}}</title>
<style>body{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem;color:#222}button{font-size:1rem;padding:.5rem 1rem}</style>
</head><body><h1>{{.Title}}</h1><p>{{.Text}}</p>
{{if .Form}}<form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click"><button type="submit">Unsubscribe</button></form>{{end}}
</body></html>
`))

func writePage(w http.ResponseWriter, status int, p page) error {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	return pageTemplate.Execute(w, p)
}
