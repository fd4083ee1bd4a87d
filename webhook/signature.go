// Package webhook holds the self-contained parts of webhook delivery:
// Standard Webhooks signing and verification, the SSRF guard, the shared
// HTTP sender with its outcome classification, and the retry backoff.
// It touches no store; the dispatcher in package engine assembles these.
package webhook

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"hash"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/heraldhq/herald"
)

// The Standard Webhooks request headers (https://www.standardwebhooks.com).
// Header names are case-insensitive; net/http sends them canonicalised
// ("Webhook-Id").
const (
	HeaderID        = "webhook-id"        // the event id, the same on every retry
	HeaderTimestamp = "webhook-timestamp" // the attempt's time, Unix seconds
	HeaderSignature = "webhook-signature" // space-separated "v1,<base64>" items
)

// Signing secrets and verification defaults.
const (
	// SecretPrefix starts the text form of every signing secret.
	SecretPrefix = "whsec_"
	// SecretBytes is the size of the keys NewSecret makes (192 bits, the
	// minimum the specification allows).
	SecretBytes = 24
	// MinSecretBytes and MaxSecretBytes bound the keys ParseSecret accepts:
	// the specification asks for 24 to 64 random bytes.
	MinSecretBytes = 24
	MaxSecretBytes = 64
	// DefaultTolerance is how far a webhook-timestamp may be from the
	// verifier's clock, in either direction, when Verify is given none.
	DefaultTolerance = 5 * time.Minute
)

// Verification failures. Verify returns one of these, possibly wrapped with
// detail; test with errors.Is. Each is a *herald.Error with CodeUnauthorized,
// so a receiver built on Herald answers 401.
var (
	ErrMissingHeaders      = &herald.Error{Code: herald.CodeUnauthorized, Message: "missing webhook-id, webhook-timestamp or webhook-signature header"}
	ErrInvalidTimestamp    = &herald.Error{Code: herald.CodeUnauthorized, Message: "webhook-timestamp is not an integer number of Unix seconds"}
	ErrTimestampTooOld     = &herald.Error{Code: herald.CodeUnauthorized, Message: "webhook-timestamp is too old"}
	ErrTimestampTooNew     = &herald.Error{Code: herald.CodeUnauthorized, Message: "webhook-timestamp is too far in the future"}
	ErrNoMatchingSignature = &herald.Error{Code: herald.CodeUnauthorized, Message: "no webhook-signature matches"}
)

// NewSecret returns a fresh signing secret: SecretBytes random bytes in the
// text form "whsec_<base64>". It is safe for concurrent use.
func NewSecret() string {
	var b [SecretBytes]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return SecretPrefix + base64.StdEncoding.EncodeToString(b[:])
}

// ParseSecret returns the key bytes of a secret in text form. The "whsec_"
// prefix is optional, as in the reference libraries; the rest must be
// standard (padded) base64 of MinSecretBytes to MaxSecretBytes bytes.
// Errors are *herald.Error with CodeInvalid and Field "secret"; they never
// include the secret.
func ParseSecret(s string) ([]byte, error) {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(s, SecretPrefix))
	if err != nil {
		return nil, herald.FieldErrorf("secret", "the secret must be %q followed by standard base64", SecretPrefix)
	}
	if len(key) < MinSecretBytes || len(key) > MaxSecretBytes {
		return nil, herald.FieldErrorf("secret", "the secret decodes to %d bytes; want %d to %d", len(key), MinSecretBytes, MaxSecretBytes)
	}
	return key, nil
}

// Sign returns one webhook-signature item, "v1," followed by the standard
// base64 of HMAC-SHA256(secret, id + "." + unix(ts) + "." + body). The id
// should not contain '.', so that the signed content is unambiguous.
func Sign(secret []byte, id string, ts time.Time, body []byte) string {
	return string(appendSign(nil, secret, id, ts.Unix(), body))
}

// appendSign appends Sign's item to b.
func appendSign(b, secret []byte, id string, unix int64, body []byte) []byte {
	var mac [sha256.Size]byte
	b = append(b, "v1,"...)
	return base64.StdEncoding.AppendEncode(b, sign(mac[:0], secret, id, unix, body))
}

// sign appends HMAC-SHA256(key, id + "." + unix + "." + body) to mac.
func sign(mac, key []byte, id string, unix int64, body []byte) []byte {
	return signWith(hmac.New(sha256.New, key), mac, id, unix, body)
}

// signWith is sign with h, a fresh or Reset HMAC-SHA256 of the key.
func signWith(h hash.Hash, mac []byte, id string, unix int64, body []byte) []byte {
	var num [24]byte
	_, _ = io.WriteString(h, id)
	b := append(num[:0], '.')
	b = strconv.AppendInt(b, unix, 10)
	h.Write(append(b, '.'))
	h.Write(body)
	return h.Sum(mac)
}

// signer signs with one secret and reuses its HMAC states: hmac.New
// allocates a hash and two SHA-256 states and hashes the padded secret
// twice, on every delivery; a reused state only restores that hash on
// Reset (issue 20: fewer allocations per delivery). It is safe for
// concurrent use.
type signer struct {
	pool sync.Pool // of hash.Hash, HMAC-SHA256 keyed with the secret
}

func newSigner(secret []byte) *signer {
	s := &signer{}
	s.pool.New = func() any { return hmac.New(sha256.New, secret) }
	return s
}

// appendSign appends the signature item of Sign to b.
func (s *signer) appendSign(b []byte, id string, unix int64, body []byte) []byte {
	h := s.pool.Get().(hash.Hash)
	h.Reset()
	var mac [sha256.Size]byte
	b = append(b, "v1,"...)
	b = base64.StdEncoding.AppendEncode(b, signWith(h, mac[:0], id, unix, body))
	s.pool.Put(h)
	return b
}

// signatureHeader is SignatureHeader with signers.
func signatureHeader(signers []*signer, id string, ts time.Time, body []byte) string {
	b := make([]byte, 0, len(signers)*48)
	for i, s := range signers {
		if i > 0 {
			b = append(b, ' ')
		}
		b = s.appendSign(b, id, ts.Unix(), body)
	}
	return string(b)
}

// SignatureHeader returns the webhook-signature value for a request signed
// with every secret in turn, space-separated, so receivers can roll from an
// old secret to a new one without downtime. Pass the current secret first.
func SignatureHeader(secrets [][]byte, id string, ts time.Time, body []byte) string {
	b := make([]byte, 0, len(secrets)*48)
	for i, s := range secrets {
		if i > 0 {
			b = append(b, ' ')
		}
		b = appendSign(b, s, id, ts.Unix(), body)
	}
	return string(b)
}

// Verify checks a received webhook against the secret in text form (see
// ParseSecret): the three headers are present, the timestamp is within
// tolerance of now in either direction (DefaultTolerance if tolerance <= 0),
// and at least one "v1" item of webhook-signature is the signature of the
// body, compared in constant time. Items of other versions are ignored.
//
// It returns nil, a CodeInvalid error for a malformed secret, or an error
// that wraps one of ErrMissingHeaders, ErrInvalidTimestamp,
// ErrTimestampTooOld, ErrTimestampTooNew and ErrNoMatchingSignature. The
// body must be the raw bytes received, before any JSON decoding.
func Verify(secret string, header http.Header, body []byte, now time.Time, tolerance time.Duration) error {
	key, err := ParseSecret(secret)
	if err != nil {
		return err
	}
	return VerifyKeys([][]byte{key}, header, body, now, tolerance)
}

// VerifyKeys is Verify for a receiver that holds several keys at once, for
// example while it rolls to a new secret: the webhook is accepted when any
// listed signature matches any key.
func VerifyKeys(keys [][]byte, header http.Header, body []byte, now time.Time, tolerance time.Duration) error {
	id, tsText, sigs := header.Get(HeaderID), header.Get(HeaderTimestamp), header.Get(HeaderSignature)
	if id == "" || tsText == "" || sigs == "" {
		return ErrMissingHeaders
	}
	unix, err := strconv.ParseInt(tsText, 10, 64)
	if err != nil || strings.HasPrefix(tsText, "+") {
		return ErrInvalidTimestamp
	}
	if tolerance <= 0 {
		tolerance = DefaultTolerance
	}
	// Compare in whole seconds, the header's resolution, without building a
	// time.Time or a difference that could overflow for absurd values.
	nowUnix, tol := now.Unix(), int64(tolerance/time.Second)
	switch {
	case unix < nowUnix-tol:
		return fmt.Errorf("%w: %d is more than %s before the verifier's clock (%d)", ErrTimestampTooOld, unix, tolerance, nowUnix)
	case unix > nowUnix+tol:
		return fmt.Errorf("%w: %d is more than %s after the verifier's clock (%d)", ErrTimestampTooNew, unix, tolerance, nowUnix)
	}
	want := make([][]byte, len(keys))
	for i, k := range keys {
		want[i] = sign(nil, k, id, unix, body)
	}
	var got [sha256.Size + 3]byte // room to notice an over-long signature
	for item := range strings.FieldsSeq(sigs) {
		version, b64, ok := strings.Cut(item, ",")
		if !ok || version != "v1" || base64.StdEncoding.DecodedLen(len(b64)) > len(got) {
			continue
		}
		n, err := base64.StdEncoding.Decode(got[:], []byte(b64))
		if err != nil {
			continue
		}
		for _, w := range want {
			if hmac.Equal(got[:n], w) {
				return nil
			}
		}
	}
	return ErrNoMatchingSignature
}
