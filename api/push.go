package api

import (
	"context"
	"net/http"
	"strings"

	"github.com/heraldhq/herald"
)

// Push subscriptions a device makes itself. A page or app that holds a
// connection token (POST /v1/tokens, with a subscribe: scope covering the
// topic) registers its own push endpoint or device token with
// POST /v1/push/subscriptions: the device proves it agreed by making the
// request, so the subscription is active at once. The page learns the
// Web Push application server key from GET /v1/push/vapid-public-key.

// deviceCreatedKey marks a request whose subscription a device makes
// with its connection token.
type deviceCreatedKey struct{}

func deviceCreated(ctx context.Context) bool {
	v, _ := ctx.Value(deviceCreatedKey{}).(bool)
	return v
}

// vapidKeyer is the push channel's capability of naming its Web Push key.
type vapidKeyer interface{ VAPIDPublicKey() string }

func (s *Server) pushVAPIDKey(w http.ResponseWriter, _ *http.Request) error {
	ch, err := s.channels.Get("push")
	if err != nil {
		return herald.Errorf(herald.CodeNotFound, "this server has no push channel")
	}
	vk, ok := ch.(vapidKeyer)
	if !ok || vk.VAPIDPublicKey() == "" {
		return herald.Errorf(herald.CodeNotFound, "this server does not send Web Push (push.vapid-private-key is not set)")
	}
	w.Header().Set("Cache-Control", "public, max-age=300")
	return writeJSON(w, http.StatusOK, map[string]string{"public_key": vk.VAPIDPublicKey()})
}

// createPushSubscription authenticates the connection token (Bearer or
// ?token=) and creates the subscription as the key behind it, with that
// token's scopes, active at once.
func (s *Server) createPushSubscription(w http.ResponseWriter, r *http.Request) error {
	if s.tokens == nil {
		return herald.Errorf(herald.CodeUnauthorized, "connection tokens are not enabled on this server")
	}
	tok := r.URL.Query().Get("token")
	if auth := r.Header.Get("Authorization"); tok == "" && auth != "" {
		scheme, rest, _ := strings.Cut(auth, " ")
		if !strings.EqualFold(scheme, "Bearer") {
			return herald.Errorf(herald.CodeUnauthorized, "the Authorization header must use the Bearer scheme")
		}
		tok = strings.TrimSpace(rest)
	}
	if tok == "" {
		return herald.Errorf(herald.CodeUnauthorized, "a connection token is required: Authorization: Bearer <token from POST /v1/tokens>")
	}
	rec := auditRecordFrom(r.Context())
	who, err := s.tokens.Verify(tok)
	if err != nil {
		if p, kerr := s.credentials(r); kerr == nil && rec != nil {
			rec.p = p // a known key's refused call is recorded, as authenticate does
		}
		return herald.Errorf(herald.CodeUnauthorized, "this is not a valid connection token (an API key goes to POST /v1/subscriptions)")
	}
	p := &principal{scopes: who.Scopes}
	if who.Subject != adminSubject {
		k, err := s.keys.byID(r.Context(), who.Subject)
		if herald.IsCode(err, herald.CodeNotFound) || err == nil && k.Expired(s.now()) {
			return errKeyRevoked
		}
		if err != nil {
			return err
		}
		p.keyID, p.tenant = k.ID, k.Tenant
	}
	connAuthenticated(r.Context())
	if rec != nil {
		rec.p = p
	}
	ctx := context.WithValue(context.WithValue(r.Context(), principalKey, p), deviceCreatedKey{}, true)
	return s.createSubscription(w, r.WithContext(ctx))
}
