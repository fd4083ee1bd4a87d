package channel

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/heraldhq/herald"
)

// People confirm and unsubscribe through links that work without an
// account: the token in the link names the subscription and carries an
// HMAC-SHA256 that only Herald can make.
//
//   - A confirmation token is keyed by the subscription's Challenge, a
//     random value stored with it for one round of verification: it stops
//     working once the subscription is confirmed (the Challenge is
//     cleared), when a new round starts, and at the verification deadline.
//     So it is single use and expires, and the Challenge itself never
//     appears in a link.
//   - An unsubscribe token is keyed by the subscription's link key, a
//     random secret its channel keeps in the config (LinkKeyer): it works
//     for the subscription's whole life.
//
// Tokens are "<subscription id>.<base64url MAC>"; subscription ids hold no
// dot.

// Purposes of link tokens: a token made for one never passes for another.
const (
	PurposeConfirm     = "confirm"
	PurposeUnsubscribe = "unsubscribe"
)

// LinkKeyer is a Channel whose subscribers are people: every message it
// sends carries an unsubscribe link signed with the subscription's link
// key, which the channel keeps (write-only) in the config.
type LinkKeyer interface {
	// LinkKey returns the config's link key; nil when it has none.
	LinkKey(config json.RawMessage) []byte
}

// NewLinkKey returns a fresh link key in its config form: 32 random
// bytes, base64url.
func NewLinkKey() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// DecodeLinkKey reads a link key in its config form; nil when it is not
// one.
func DecodeLinkKey(s string) []byte {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) < 16 {
		return nil
	}
	return b
}

// LinkToken returns the token for purpose on the subscription, signed with
// key.
func LinkToken(purpose, subID string, key []byte) string {
	return subID + "." + base64.RawURLEncoding.EncodeToString(linkMAC(purpose, subID, key))
}

// ConfirmToken returns the token of the subscription's confirmation link,
// valid while its Challenge is the current one.
func ConfirmToken(sub *herald.Subscription) string {
	return LinkToken(PurposeConfirm, sub.ID, []byte(sub.Challenge))
}

// LinkTokenID returns the subscription a token names, or "" when the
// token is not of the form.
func LinkTokenID(token string) string {
	id, mac, ok := strings.Cut(token, ".")
	if !ok || id == "" || mac == "" || len(token) > 256 {
		return ""
	}
	return id
}

// CheckLinkToken reports whether token was made by LinkToken for purpose
// and the subscription with key. An empty key never checks.
func CheckLinkToken(token, purpose, subID string, key []byte) bool {
	id, mac, ok := strings.Cut(token, ".")
	if !ok || id != subID || len(key) == 0 {
		return false
	}
	got, err := base64.RawURLEncoding.DecodeString(mac)
	if err != nil {
		return false
	}
	return hmac.Equal(got, linkMAC(purpose, subID, key))
}

func linkMAC(purpose, subID string, key []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("herald-link\x00" + purpose + "\x00" + subID))
	return m.Sum(nil)
}

// ConfirmCode returns the code a person types to confirm the
// subscription's current round of verification (an SMS code): six digits
// from an HMAC keyed by its Challenge, so it changes with every round and
// is never stored apart from it.
func ConfirmCode(sub *herald.Subscription) string {
	mac := linkMAC("code", sub.ID, []byte(sub.Challenge))
	n := (uint32(mac[0])<<24 | uint32(mac[1])<<16 | uint32(mac[2])<<8 | uint32(mac[3])) % 1_000_000
	return fmt.Sprintf("%06d", n)
}
