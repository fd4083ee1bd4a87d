// Package inbound is the source kind "webhook": third parties' webhooks
// received at POST /v1/inbound/{source}, verified by the sender's scheme
// (Standard Webhooks, GitHub's X-Hub-Signature-256, Stripe's
// Stripe-Signature, a generic HMAC header, or none), and published with
// their raw body byte for byte. The sender's delivery id is the event's
// idempotency key, so a delivery the sender retries is one event.
package inbound

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"hash"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/source"
	"github.com/heraldhq/herald/webhook"
)

// Name is the kind's name.
const Name = "webhook"

// Verification schemes.
const (
	VerifyStandard = "standard-webhooks"
	VerifyGitHub   = "github"
	VerifyStripe   = "stripe"
	VerifyHMAC     = "hmac"
	VerifyNone     = "none"
)

// Config is the kind's config. Secret is write-only.
type Config struct {
	// Verify is the scheme: standard-webhooks (the default), github,
	// stripe, hmac or none.
	Verify string `json:"verify"`
	// Secret is the shared signing secret: "whsec_..." for Standard
	// Webhooks and Stripe, any text for github and hmac.
	Secret string `json:"secret,omitempty"`
	// Tolerance is how far a signed timestamp may be from Herald's clock
	// (standard-webhooks and stripe; default 5m).
	Tolerance string `json:"tolerance,omitempty"`
	// Header, Algorithm, Encoding and Prefix describe a generic HMAC:
	// the header carrying the signature of the raw body, sha256 (default),
	// sha1 or sha512, hex (default) or base64, and a prefix before the
	// digest ("sha256=").
	Header    string `json:"header,omitempty"`
	Algorithm string `json:"algorithm,omitempty"`
	Encoding  string `json:"encoding,omitempty"`
	Prefix    string `json:"prefix,omitempty"`
	// IDHeader names the header with the sender's delivery id, for
	// deduplication (the scheme's own by default: webhook-id,
	// X-GitHub-Delivery, the Stripe event's id). Without one, a digest of
	// the body is used.
	IDHeader string `json:"id_header,omitempty"`
	// TypeHeader names a header carrying the event type (the scheme's own
	// by default: X-GitHub-Event, the Stripe event's type).
	TypeHeader string `json:"type_header,omitempty"`
}

// Kind is the inbound webhook kind.
type Kind struct{}

var _ source.Receiver = Kind{}

// Name returns "webhook".
func (Kind) Name() string { return Name }

func parse(raw json.RawMessage) (Config, error) {
	var c Config
	if len(bytes.TrimSpace(raw)) == 0 || string(bytes.TrimSpace(raw)) == "null" {
		return c, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return c, herald.FieldErrorf("", "config must be an object with verify, secret, tolerance, header, algorithm, encoding, prefix, id_header and type_header: %v", err)
	}
	return c, nil
}

// Validate checks the config; a secret left out on an update is kept.
func (Kind) Validate(raw, previous json.RawMessage) (json.RawMessage, error) {
	c, err := parse(raw)
	if err != nil {
		return nil, err
	}
	if c.Secret == "" && previous != nil {
		if p, err := parse(previous); err == nil {
			c.Secret = p.Secret
		}
	}
	if c.Verify == "" {
		c.Verify = VerifyStandard
	}
	switch c.Verify {
	case VerifyStandard, VerifyStripe:
		if _, err := webhook.ParseSecret(c.Secret); err != nil && c.Verify == VerifyStandard {
			return nil, herald.FieldErrorf("secret", "secret must be a Standard Webhooks secret, \"whsec_\" and the base64 of 24 to 64 bytes")
		}
		if c.Secret == "" {
			return nil, herald.FieldErrorf("secret", "secret is required for %s", c.Verify)
		}
		if c.Tolerance == "" {
			c.Tolerance = "5m"
		}
		if d, err := herald.ParseDuration(c.Tolerance); err != nil || d <= 0 || d > 24*time.Hour {
			return nil, herald.FieldErrorf("tolerance", "tolerance must be a duration from 1s to 24h, like \"5m\"")
		}
	case VerifyGitHub:
		if c.Secret == "" {
			return nil, herald.FieldErrorf("secret", "secret is required for github")
		}
	case VerifyHMAC:
		if c.Secret == "" {
			return nil, herald.FieldErrorf("secret", "secret is required for hmac")
		}
		if c.Header == "" || !herald.ValidHeaderName(c.Header) {
			return nil, herald.FieldErrorf("header", "header must name the HTTP header carrying the signature")
		}
		if c.Algorithm == "" {
			c.Algorithm = "sha256"
		}
		if c.Algorithm != "sha256" && c.Algorithm != "sha1" && c.Algorithm != "sha512" {
			return nil, herald.FieldErrorf("algorithm", "algorithm must be sha256, sha1 or sha512")
		}
		if c.Encoding == "" {
			c.Encoding = "hex"
		}
		if c.Encoding != "hex" && c.Encoding != "base64" {
			return nil, herald.FieldErrorf("encoding", "encoding must be hex or base64")
		}
	case VerifyNone:
		c.Secret = ""
	default:
		return nil, herald.FieldErrorf("verify", "verify must be standard-webhooks, github, stripe, hmac or none, got %q", c.Verify)
	}
	for field, h := range map[string]string{"id_header": c.IDHeader, "type_header": c.TypeHeader} {
		if h != "" && !herald.ValidHeaderName(h) {
			return nil, herald.FieldErrorf(field, "%s must be an HTTP header name", field)
		}
	}
	if c.Verify != VerifyHMAC {
		c.Header, c.Algorithm, c.Encoding, c.Prefix = "", "", "", ""
	}
	out, _ := json.Marshal(c)
	return out, nil
}

// Public returns the config without its secret.
func (Kind) Public(raw json.RawMessage) json.RawMessage {
	c, _ := parse(raw)
	c.Secret = ""
	out, _ := json.Marshal(c)
	return out
}

func unauthorized(msg string) error {
	return &herald.Error{Code: herald.CodeUnauthorized, Message: msg}
}

// Receive verifies the request and returns its message: the raw body as
// the payload, the delivery id as the idempotency key, the request's
// headers for templates ({header.NAME}).
func (Kind) Receive(raw json.RawMessage, header http.Header, body []byte, now time.Time) (source.Message, error) {
	c, err := parse(raw)
	if err != nil {
		return source.Message{}, err
	}
	msg := source.Message{Payload: body, ContentType: header.Get("Content-Type"), Meta: map[string]string{}}
	for name, vs := range header {
		if len(vs) > 0 {
			msg.Meta[strings.ToLower(name)] = vs[0]
		}
	}
	tolerance, _ := herald.ParseDuration(c.Tolerance)
	var id, typ string
	switch c.Verify {
	case VerifyStandard:
		if err := webhook.Verify(c.Secret, header, body, now, tolerance); err != nil {
			return source.Message{}, err
		}
		id = header.Get(webhook.HeaderID)
	case VerifyGitHub:
		sig, ok := strings.CutPrefix(header.Get("X-Hub-Signature-256"), "sha256=")
		got, err := hex.DecodeString(sig)
		if !ok || err != nil || !hmac.Equal(got, mac(sha256.New, c.Secret, body)) {
			return source.Message{}, unauthorized("X-Hub-Signature-256 is missing or does not match the body")
		}
		id, typ = header.Get("X-GitHub-Delivery"), header.Get("X-GitHub-Event")
	case VerifyStripe:
		if err := verifyStripe(c.Secret, header.Get("Stripe-Signature"), body, now, tolerance); err != nil {
			return source.Message{}, err
		}
		var ev struct{ ID, Type string }
		_ = json.Unmarshal(body, &ev)
		id, typ = ev.ID, ev.Type
	case VerifyHMAC:
		sig, ok := strings.CutPrefix(header.Get(c.Header), c.Prefix)
		var got []byte
		var err error
		if c.Encoding == "base64" {
			got, err = base64.StdEncoding.DecodeString(sig)
		} else {
			got, err = hex.DecodeString(strings.ToLower(sig))
		}
		h := map[string]func() hash.Hash{"sha1": sha1.New, "sha512": sha512.New}[c.Algorithm]
		if h == nil {
			h = sha256.New
		}
		if !ok || sig == "" || err != nil || !hmac.Equal(got, mac(h, c.Secret, body)) {
			return source.Message{}, unauthorized(c.Header + " is missing or does not match the body")
		}
	}
	if c.IDHeader != "" {
		id = header.Get(c.IDHeader)
	}
	if c.TypeHeader != "" {
		typ = header.Get(c.TypeHeader)
	}
	if id == "" {
		sum := sha256.Sum256(body)
		id = "sha256:" + hex.EncodeToString(sum[:])
	} else if len(id) > 200 || !printableASCII(id) {
		// Long or odd ids still dedupe, by their digest, within the
		// idempotency key's limit.
		sum := sha256.Sum256([]byte(id))
		id = "id-sha256:" + hex.EncodeToString(sum[:])
	}
	msg.ID, msg.Type = id, typ
	if len(msg.Type) > herald.MaxEventTypeLen || !printableASCII(msg.Type) {
		msg.Type = ""
	}
	msg.IdempotencyKey = "delivery:" + id
	return msg, nil
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

func mac(h func() hash.Hash, secret string, body []byte) []byte {
	m := hmac.New(h, []byte(secret))
	m.Write(body)
	return m.Sum(nil)
}

// verifyStripe checks a Stripe-Signature header, "t=<unix>,v1=<hex>,...":
// HMAC-SHA256 of "<t>.<body>" under the endpoint secret, with t within
// tolerance of now.
func verifyStripe(secret, value string, body []byte, now time.Time, tolerance time.Duration) error {
	var ts string
	var sigs []string
	for item := range strings.SplitSeq(value, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(item), "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			sigs = append(sigs, v)
		}
	}
	unix, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || len(sigs) == 0 {
		return unauthorized("Stripe-Signature is missing or malformed")
	}
	if d := now.Sub(time.Unix(unix, 0)); d > tolerance || d < -tolerance {
		return unauthorized("Stripe-Signature's timestamp is outside the tolerance")
	}
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(ts + "."))
	m.Write(body)
	want := m.Sum(nil)
	for _, s := range sigs {
		if got, err := hex.DecodeString(s); err == nil && hmac.Equal(got, want) {
			return nil
		}
	}
	return unauthorized("no Stripe-Signature v1 signature matches the body")
}
