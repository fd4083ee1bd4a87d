package push

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Web Push message encryption (RFC 8291) in the aes128gcm content coding
// (RFC 8188), one record: the body is the coding's header (salt, record
// size, the sender's ephemeral public key) then the sealed plaintext with
// its 0x02 delimiter.

// RecordSize is the record size written in the header: push services
// accept bodies of up to 4096 bytes, one record.
const RecordSize = 4096

// headerLen is the aes128gcm header with a 65-byte key id.
const headerLen = 16 + 4 + 1 + 65

// MaxPlaintext is the most a single record carries: the record size less
// the header, the delimiter and the 16-byte tag.
const MaxPlaintext = RecordSize - headerLen - 1 - 16

// Encrypt seals plaintext for a user agent with public key uaPublic (the
// subscription's p256dh, 65 bytes uncompressed) and auth secret (16
// bytes), with the sender's ephemeral key asKey and salt (16 bytes). Tests
// pass fixed ones to reproduce RFC 8291's example; Seal makes fresh ones.
func Encrypt(plaintext, uaPublic, authSecret []byte, asKey *ecdh.PrivateKey, salt []byte) ([]byte, error) {
	if len(plaintext) > MaxPlaintext {
		return nil, fmt.Errorf("the message is %d bytes; Web Push carries at most %d", len(plaintext), MaxPlaintext)
	}
	if len(salt) != 16 {
		return nil, errors.New("the salt must be 16 bytes")
	}
	ua, err := ecdh.P256().NewPublicKey(uaPublic)
	if err != nil {
		return nil, fmt.Errorf("p256dh is not a P-256 public key: %w", err)
	}
	if len(authSecret) != 16 {
		return nil, errors.New("auth must be 16 bytes")
	}
	shared, err := asKey.ECDH(ua)
	if err != nil {
		return nil, fmt.Errorf("ecdh: %w", err)
	}
	asPublic := asKey.PublicKey().Bytes()
	// RFC 8291 section 3.4: the input keying material mixes in the auth
	// secret and both public keys.
	keyInfo := append(append([]byte("WebPush: info\x00"), uaPublic...), asPublic...)
	ikm, err := hkdf.Key(sha256.New, shared, authSecret, string(keyInfo), 32)
	if err != nil {
		return nil, err
	}
	cek, err := hkdf.Key(sha256.New, ikm, salt, "Content-Encoding: aes128gcm\x00", 16)
	if err != nil {
		return nil, err
	}
	nonce, err := hkdf.Key(sha256.New, ikm, salt, "Content-Encoding: nonce\x00", 12)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(cek)
	if err != nil {
		return nil, err
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, headerLen+len(plaintext)+1+gcm.Overhead())
	out = append(out, salt...)
	out = binary.BigEndian.AppendUint32(out, RecordSize)
	out = append(out, byte(len(asPublic)))
	out = append(out, asPublic...)
	record := append(append(make([]byte, 0, len(plaintext)+1), plaintext...), 0x02) // the last record's delimiter, no padding
	return gcm.Seal(out, nonce, record, nil), nil
}

// Seal encrypts plaintext for a subscription's keys with a fresh
// ephemeral key and salt.
func Seal(plaintext, uaPublic, authSecret []byte) ([]byte, error) {
	as, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	salt := make([]byte, 16)
	_, _ = rand.Read(salt)
	return Encrypt(plaintext, uaPublic, authSecret, as, salt)
}

// Decrypt opens a body Encrypt made, as the user agent with private key ua
// and auth secret does. Herald sends and never receives; it is here for
// the test receivers and for anyone checking a deployment.
func Decrypt(body []byte, ua *ecdh.PrivateKey, authSecret []byte) ([]byte, error) {
	if len(body) < 21 {
		return nil, errors.New("the body is shorter than the aes128gcm header")
	}
	salt, idLen := body[:16], int(body[20])
	if len(body) < 21+idLen+17 {
		return nil, errors.New("the body is shorter than its header says")
	}
	asPublic := body[21 : 21+idLen]
	as, err := ecdh.P256().NewPublicKey(asPublic)
	if err != nil {
		return nil, fmt.Errorf("the key id is not a P-256 public key: %w", err)
	}
	shared, err := ua.ECDH(as)
	if err != nil {
		return nil, err
	}
	keyInfo := append(append([]byte("WebPush: info\x00"), ua.PublicKey().Bytes()...), asPublic...)
	ikm, err := hkdf.Key(sha256.New, shared, authSecret, string(keyInfo), 32)
	if err != nil {
		return nil, err
	}
	cek, _ := hkdf.Key(sha256.New, ikm, salt, "Content-Encoding: aes128gcm\x00", 16)
	nonce, _ := hkdf.Key(sha256.New, ikm, salt, "Content-Encoding: nonce\x00", 12)
	block, err := aes.NewCipher(cek)
	if err != nil {
		return nil, err
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	plain, err := gcm.Open(nil, nonce, body[21+idLen:], nil)
	if err != nil {
		return nil, err
	}
	// Strip the padding back to the delimiter.
	i := len(plain) - 1
	for i >= 0 && plain[i] == 0 {
		i--
	}
	if i < 0 || plain[i] != 0x02 {
		return nil, errors.New("the record has no last-record delimiter")
	}
	return plain[:i], nil
}

// VAPID identifies Herald to push services (RFC 8292): every request
// carries a JWT signed with the application server key, which the push
// service checks against the key the subscription was made with
// (applicationServerKey in the browser). Safe for concurrent use; tokens
// are cached per push service origin until near their expiry.
type VAPID struct {
	key     *ecdsa.PrivateKey
	public  string // base64url of the uncompressed public key: the k= parameter
	subject string // mailto: or https: contact for the push service's operator
	now     func() time.Time

	mu     sync.Mutex
	tokens map[string]vapidToken // by audience
}

type vapidToken struct {
	jwt     string
	expires time.Time
}

// vapidTTL is how long a VAPID token is valid; RFC 8292 allows up to 24h.
const vapidTTL = 12 * time.Hour

// NewVAPID reads the application server's private key (the 32-byte
// scalar, base64url, as web-push tools print it) and contact subject.
func NewVAPID(privateKey, subject string, now func() time.Time) (*VAPID, error) {
	d, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(strings.TrimSpace(privateKey), "="))
	if err != nil || len(d) != 32 {
		return nil, errors.New("the VAPID private key must be 32 bytes, base64url (the raw P-256 scalar)")
	}
	key, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), d)
	if err != nil {
		return nil, fmt.Errorf("the VAPID private key: %w", err)
	}
	if !strings.HasPrefix(subject, "mailto:") && !strings.HasPrefix(subject, "https://") {
		return nil, fmt.Errorf("the VAPID subject %q must be a mailto: or https: URL the push service can contact", subject)
	}
	pub, err := key.PublicKey.Bytes()
	if err != nil {
		return nil, err
	}
	if now == nil {
		now = time.Now
	}
	return &VAPID{key: key, public: base64.RawURLEncoding.EncodeToString(pub), subject: subject, now: now, tokens: map[string]vapidToken{}}, nil
}

// GenerateVAPIDKey returns a new application server key pair, base64url:
// the private scalar for the setting and the public key for browsers.
func GenerateVAPIDKey() (private, public string, err error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	d, err := k.Bytes()
	if err != nil {
		return "", "", err
	}
	p, err := k.PublicKey.Bytes()
	if err != nil {
		return "", "", err
	}
	return base64.RawURLEncoding.EncodeToString(d), base64.RawURLEncoding.EncodeToString(p), nil
}

// PublicKey is the application server key browsers subscribe with
// (base64url, uncompressed point).
func (v *VAPID) PublicKey() string { return v.public }

// Authorization returns the Authorization header for a request to
// endpoint: "vapid t=<jwt>, k=<public key>".
func (v *VAPID) Authorization(endpoint string) (string, error) {
	u, err := url.Parse(endpoint)
	if err != nil {
		return "", err
	}
	aud := u.Scheme + "://" + u.Host
	now := v.now()
	v.mu.Lock()
	defer v.mu.Unlock()
	if t, ok := v.tokens[aud]; ok && now.Before(t.expires.Add(-time.Hour)) {
		return "vapid t=" + t.jwt + ", k=" + v.public, nil
	}
	exp := now.Add(vapidTTL)
	tok, err := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{
		"aud": aud, "exp": exp.Unix(), "sub": v.subject,
	}).SignedString(v.key)
	if err != nil {
		return "", fmt.Errorf("sign the VAPID token: %w", err)
	}
	if len(v.tokens) > 1000 { // a bound: push services are few
		clear(v.tokens)
	}
	v.tokens[aud] = vapidToken{tok, exp}
	return "vapid t=" + tok + ", k=" + v.public, nil
}
