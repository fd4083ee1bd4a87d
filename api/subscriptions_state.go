package api

import (
	"cmp"
	"crypto/subtle"
	"net/http"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/channel"
)

// maxRotationGrace bounds the grace of a secret rotation.
const maxRotationGrace = 7 * 24 * time.Hour

// pausedReason is the state reason of a subscription paused through the API.
const pausedReason = "paused through the API"

// saveState applies a state change to sub and writes it (applying it again
// to a fresh copy when another writer got there first; see save), then
// reports the change. change checks the state it starts from.
func (s *Server) saveState(w http.ResponseWriter, r *http.Request, sub herald.Subscription, change func(*herald.Subscription) error) error {
	sub, err := s.save(r.Context(), sub, func(sub *herald.Subscription) error {
		if err := change(sub); err != nil {
			return err
		}
		now := s.now().UTC()
		sub.UpdatedAt = now
		sub.LastActivityAt = now
		return nil
	})
	if err != nil {
		return err
	}
	s.changed(sub.ID)
	return writeJSON(w, http.StatusOK, s.toSubscriptionJSON(sub, showsDetail(r)))
}

func (s *Server) pauseSubscription(w http.ResponseWriter, r *http.Request) error {
	sub, err := s.loadSubscription(r)
	if err != nil {
		return err
	}
	return s.saveState(w, r, sub, func(sub *herald.Subscription) error {
		switch sub.State {
		case herald.StateActive, herald.StatePending:
		default:
			return herald.Errorf(herald.CodeConflict, "subscription %s is %s; only active or pending subscriptions can be paused", sub.ID, sub.State)
		}
		// A pending subscription keeps its Challenge, which marks it as not
		// verified: resuming it asks the endpoint again.
		sub.State, sub.StateReason = herald.StatePaused, pausedReason
		sub.NextChallengeAt = time.Time{}
		return nil
	})
}

func (s *Server) resumeSubscription(w http.ResponseWriter, r *http.Request) error {
	sub, err := s.loadSubscription(r)
	if err != nil {
		return err
	}
	return s.saveState(w, r, sub, func(sub *herald.Subscription) error {
		now := s.now().UTC()
		switch sub.State {
		case herald.StatePaused, herald.StateDisabled:
			if sub.Challenge != "" { // never verified
				requireVerification(sub, now)
				break
			}
			sub.State, sub.StateReason = herald.StateActive, ""
			sub.FailingSince = time.Time{}
		case herald.StateFailed:
			requireVerification(sub, now)
		case herald.StateActive:
			return herald.Errorf(herald.CodeConflict, "subscription %s is already active", sub.ID)
		default:
			return herald.Errorf(herald.CodeConflict, "subscription %s is %s, waiting for its endpoint to answer the verification challenge; there is nothing to resume", sub.ID, sub.State)
		}
		return nil
	})
}

type verifyRequest struct {
	Challenge string `json:"challenge"`
	// Code is the code a person received (SMS), instead of the challenge.
	Code string `json:"code"`
}

// maxCodeTries is how many requests to confirm a code round may take, the
// sending of the code included: after that the subscription fails, and
// resuming it sends a new code. It keeps a six-digit code from being
// guessed.
const maxCodeTries = 6

func (s *Server) verifySubscription(w http.ResponseWriter, r *http.Request) error {
	sub, err := s.loadSubscription(r)
	if err != nil {
		return err
	}
	var req verifyRequest
	if err := decodeJSON(w, r, maxJSONBody, false, &req); err != nil {
		return err
	}
	if req.Code != "" {
		return s.verifyCode(w, r, sub, req.Code)
	}
	return s.saveState(w, r, sub, func(sub *herald.Subscription) error {
		if sub.State != herald.StatePending {
			return herald.Errorf(herald.CodeConflict, "subscription %s is %s, not pending verification", sub.ID, sub.State)
		}
		if req.Challenge == "" || subtle.ConstantTimeCompare([]byte(req.Challenge), []byte(sub.Challenge)) != 1 {
			return herald.FieldErrorf("challenge", "the challenge does not match the one sent to the endpoint")
		}
		sub.State, sub.StateReason = herald.StateActive, ""
		sub.Challenge = ""
		sub.NextChallengeAt = time.Time{}
		sub.FailingSince = time.Time{}
		return nil
	})
}

// secretJSON is the answer of the secret endpoints.
type secretJSON struct {
	Secret            string `json:"secret"`
	PreviousSecret    string `json:"previous_secret,omitempty"`
	PreviousExpiresAt string `json:"previous_expires_at,omitempty"`
}

func (s *Server) getSecret(w http.ResponseWriter, r *http.Request) error {
	sub, err := s.loadSubscription(r)
	if err != nil {
		return err
	}
	rot, err := s.rotator(sub)
	if err != nil {
		return err
	}
	if err := s.touch(r.Context(), &sub); err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	return writeJSON(w, http.StatusOK, toSecretJSON(rot.Secrets(sub.Config, s.now())))
}

// rotator returns the subscription's channel if it has signing secrets.
func (s *Server) rotator(sub herald.Subscription) (channel.Rotator, error) {
	ch, err := s.channels.Get(cmp.Or(sub.Channel, herald.ChannelWebhook))
	if err != nil {
		return nil, err
	}
	rot, ok := ch.(channel.Rotator)
	if !ok {
		return nil, herald.Errorf(herald.CodeNotFound, "%s subscriptions have no signing secret", ch.Name())
	}
	return rot, nil
}

func toSecretJSON(sec channel.Secrets) secretJSON {
	out := secretJSON{Secret: sec.Secret, PreviousSecret: sec.PreviousSecret}
	if !sec.PreviousExpiresAt.IsZero() {
		out.PreviousExpiresAt = formatTime(sec.PreviousExpiresAt)
	}
	return out
}

type rotateRequest struct {
	Grace *string `json:"grace"`
	// Secret is the new secret, chosen by the caller (checked as at
	// creation); nil has Herald make one.
	Secret *string `json:"secret"`
}

func (s *Server) rotateSecret(w http.ResponseWriter, r *http.Request) error {
	sub, err := s.loadSubscription(r)
	if err != nil {
		return err
	}
	rot, err := s.rotator(sub)
	if err != nil {
		return err
	}
	var req rotateRequest
	if err := decodeJSON(w, r, maxJSONBody, true, &req); err != nil {
		return err
	}
	grace := herald.DefaultRotationGrace
	if req.Grace != nil {
		d, err := herald.ParseDuration(*req.Grace)
		if err != nil || d < 0 || d > maxRotationGrace {
			return &herald.Error{Code: herald.CodeInvalid, Field: "grace", Err: err,
				Message: `grace must be a duration from 0s to 7d, like "24h", got "` + truncate(*req.Grace, 64) + `"`}
		}
		grace = d
	}
	var secret string
	if req.Secret != nil {
		if secret = *req.Secret; secret == "" {
			return herald.FieldErrorf("secret", "the secret is empty; omit it to have Herald make one")
		}
	}
	// Applied to the stored subscription as written: two rotations at once
	// leave the first one's new secret as the previous one (see save).
	now := s.now().UTC()
	var sec channel.Secrets
	sub, err = s.save(r.Context(), sub, func(sub *herald.Subscription) error {
		config, secrets, err := rot.Rotate(sub.Config, secret, now, grace)
		if err != nil {
			return err
		}
		sub.Config, sec = config, secrets
		sub.UpdatedAt = now
		sub.LastActivityAt = now
		return nil
	})
	if err != nil {
		return err
	}
	s.changed(sub.ID)
	w.Header().Set("Cache-Control", "no-store")
	return writeJSON(w, http.StatusOK, toSecretJSON(sec))
}

// verifyCode confirms a pending subscription with the code sent to the
// person (channel.ConfirmCode). A wrong code counts as a try, and the
// round fails after maxCodeTries.
func (s *Server) verifyCode(w http.ResponseWriter, r *http.Request, sub herald.Subscription, code string) error {
	wrong := false
	sub, err := s.save(r.Context(), sub, func(sub *herald.Subscription) error {
		if sub.State != herald.StatePending || sub.Challenge == "" {
			return herald.Errorf(herald.CodeConflict, "subscription %s is %s, not pending verification", sub.ID, sub.State)
		}
		now := s.now().UTC()
		sub.UpdatedAt, sub.LastActivityAt = now, now
		if subtle.ConstantTimeCompare([]byte(code), []byte(channel.ConfirmCode(sub))) != 1 {
			wrong = true
			sub.ChallengeTries++
			if sub.ChallengeTries >= maxCodeTries {
				sub.State = herald.StateFailed
				sub.StateReason = "too many wrong confirmation codes; resume the subscription to send a new one"
				sub.NextChallengeAt = time.Time{}
			}
			return nil
		}
		sub.State, sub.StateReason, sub.Challenge = herald.StateActive, "", ""
		sub.NextChallengeAt, sub.FailingSince = time.Time{}, time.Time{}
		return nil
	})
	if err != nil {
		return err
	}
	s.changed(sub.ID)
	if wrong {
		if sub.State == herald.StateFailed {
			return herald.FieldErrorf("code", "the code is wrong, and that was the last try: resume the subscription to send a new code")
		}
		return herald.FieldErrorf("code", "the code is wrong; %d tries left", maxCodeTries-sub.ChallengeTries)
	}
	s.announce(r.Context(), herald.EventSubscriptionActivated, sub, "confirmed by the recipient")
	return writeJSON(w, http.StatusOK, s.toSubscriptionJSON(sub, showsDetail(r)))
}
