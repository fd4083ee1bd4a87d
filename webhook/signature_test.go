package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald"
)

// The example vector of the Standard Webhooks reference libraries
// (standard-webhooks/standard-webhooks, libraries/go/webhook_test.go,
// TestWebhookSign; the same vector is in the other languages' suites).
const (
	specSecret    = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	specID        = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	specTimestamp = 1614265330
	specPayload   = `{"test": 2432232314}`
	specSignature = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
)

func TestSignPublishedVector(t *testing.T) {
	key, err := ParseSecret(specSecret)
	if err != nil {
		t.Fatal(err)
	}
	got := Sign(key, specID, time.Unix(specTimestamp, 0), []byte(specPayload))
	if got != specSignature {
		t.Fatalf("Sign = %s, want the published %s", got, specSignature)
	}
}

// referenceSign computes a signature from the specification's definition
// alone, without any code of this package.
func referenceSign(secret, id string, ts int64, body string) string {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		panic(err)
	}
	m := hmac.New(sha256.New, key)
	fmt.Fprintf(m, "%s.%d.%s", id, ts, body)
	return "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
}

func TestSignMatchesIndependentComputation(t *testing.T) {
	if got := referenceSign(specSecret, specID, specTimestamp, specPayload); got != specSignature {
		t.Fatalf("the reference computation disagrees with the published vector: %s", got)
	}
	cases := []struct {
		id   string
		ts   int64
		body string
	}{
		{"01J9Z6Y3K8", 1700000000, `{"amount":100}`},
		{"evt_1", 0, ""},
		{"0198c6a4-0f6e-7b3c-9d51-4a0c2f9e8b7d", 1999999999, strings.Repeat("x", 100000)},
		{"id", 1700000000, "binary\x00\xff\xfe payload"},
	}
	for range 3 {
		secret := NewSecret()
		key, err := ParseSecret(secret)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cases {
			got := Sign(key, c.id, time.Unix(c.ts, 999_000_000), []byte(c.body))
			if want := referenceSign(secret, c.id, c.ts, c.body); got != want {
				t.Errorf("Sign(%q, %d) = %s, reference %s", c.id, c.ts, got, want)
			}
		}
	}
}

func TestNewSecret(t *testing.T) {
	a, b := NewSecret(), NewSecret()
	if a == b {
		t.Fatal("two secrets are equal")
	}
	if !strings.HasPrefix(a, "whsec_") {
		t.Fatalf("secret %q lacks the whsec_ prefix", a)
	}
	key, err := ParseSecret(a)
	if err != nil {
		t.Fatal(err)
	}
	if len(key) != 24 {
		t.Fatalf("key is %d bytes, want 24", len(key))
	}
}

func TestParseSecret(t *testing.T) {
	raw := strings.TrimPrefix(specSecret, "whsec_")
	cases := []struct {
		in string
		ok bool
	}{
		{specSecret, true},
		{raw, true}, // the prefix is optional, as in the reference libraries
		{"whsec_" + base64.StdEncoding.EncodeToString(make([]byte, 64)), true},
		{"whsec_" + base64.StdEncoding.EncodeToString(make([]byte, 23)), false},
		{"whsec_" + base64.StdEncoding.EncodeToString(make([]byte, 65)), false},
		{"whsec_not base64!", false},
		{"whsec_", false},
		{"", false},
	}
	for _, c := range cases {
		_, err := ParseSecret(c.in)
		if (err == nil) != c.ok {
			t.Errorf("ParseSecret(%q) error = %v, want ok=%v", c.in, err, c.ok)
			continue
		}
		if err != nil {
			if e, ok := errors.AsType[*herald.Error](err); !ok || e.Code != herald.CodeInvalid || e.Field != "secret" {
				t.Errorf("ParseSecret(%q) error = %#v, want CodeInvalid on field secret", c.in, err)
			}
			if c.in != "" && strings.Contains(err.Error(), c.in) {
				t.Errorf("error %q repeats the secret", err)
			}
		}
	}
}

func specHeader(sig string, ts int64) http.Header {
	h := http.Header{}
	h.Set(HeaderID, specID)
	h.Set(HeaderTimestamp, strconv.FormatInt(ts, 10))
	h.Set(HeaderSignature, sig)
	return h
}

func TestVerify(t *testing.T) {
	now := time.Unix(specTimestamp, 0)
	other := NewSecret()
	otherKey, _ := ParseSecret(other)
	specKey, _ := ParseSecret(specSecret)
	bogus := "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc="

	cases := []struct {
		name      string
		header    http.Header
		body      string
		now       time.Time
		tolerance time.Duration
		want      error // nil or a sentinel
	}{
		{"published vector", specHeader(specSignature, specTimestamp), specPayload, now, 0, nil},
		{"header names are case-insensitive", func() http.Header {
			h := http.Header{}
			h["Webhook-Id"] = []string{specID}
			h["Webhook-Timestamp"] = []string{strconv.Itoa(specTimestamp)}
			h["Webhook-Signature"] = []string{specSignature}
			return h
		}(), specPayload, now, 0, nil},
		{"one good signature among others", specHeader(bogus+" v2,"+specSignature[3:]+" "+specSignature+" v1a,xyz", specTimestamp), specPayload, now, 0, nil},
		{"rotation: old and new secret", specHeader(SignatureHeader([][]byte{otherKey, specKey}, specID, now, []byte(specPayload)), specTimestamp), specPayload, now, 0, nil},
		{"missing id", func() http.Header { h := specHeader(specSignature, specTimestamp); h.Del(HeaderID); return h }(), specPayload, now, 0, ErrMissingHeaders},
		{"missing timestamp", func() http.Header { h := specHeader(specSignature, specTimestamp); h.Del(HeaderTimestamp); return h }(), specPayload, now, 0, ErrMissingHeaders},
		{"missing signature", func() http.Header { h := specHeader(specSignature, specTimestamp); h.Del(HeaderSignature); return h }(), specPayload, now, 0, ErrMissingHeaders},
		{"timestamp not a number", func() http.Header { h := specHeader(specSignature, 0); h.Set(HeaderTimestamp, "yesterday"); return h }(), specPayload, now, 0, ErrInvalidTimestamp},
		{"timestamp with fraction", func() http.Header {
			h := specHeader(specSignature, 0)
			h.Set(HeaderTimestamp, "1614265330.5")
			return h
		}(), specPayload, now, 0, ErrInvalidTimestamp},
		{"timestamp with plus", func() http.Header { h := specHeader(specSignature, 0); h.Set(HeaderTimestamp, "+1614265330"); return h }(), specPayload, now, 0, ErrInvalidTimestamp},
		{"timestamp overflow", func() http.Header {
			h := specHeader(specSignature, 0)
			h.Set(HeaderTimestamp, "99999999999999999999")
			return h
		}(), specPayload, now, 0, ErrInvalidTimestamp},
		{"exactly 5m old passes", specHeader(specSignature, specTimestamp), specPayload, now.Add(5 * time.Minute), 0, nil},
		{"5m1s old fails", specHeader(specSignature, specTimestamp), specPayload, now.Add(5*time.Minute + time.Second), 0, ErrTimestampTooOld},
		{"exactly 5m ahead passes", specHeader(specSignature, specTimestamp), specPayload, now.Add(-5 * time.Minute), 0, nil},
		{"5m1s ahead fails", specHeader(specSignature, specTimestamp), specPayload, now.Add(-5*time.Minute - time.Second), 0, ErrTimestampTooNew},
		{"custom tolerance", specHeader(specSignature, specTimestamp), specPayload, now.Add(time.Hour), 2 * time.Hour, nil},
		{"custom tolerance exceeded", specHeader(specSignature, specTimestamp), specPayload, now.Add(31 * time.Second), 30 * time.Second, ErrTimestampTooOld},
		{"extreme old timestamp", specHeader(specSignature, -1<<63), specPayload, now, 0, ErrTimestampTooOld},
		{"extreme new timestamp", specHeader(specSignature, 1<<63-1), specPayload, now, 0, ErrTimestampTooNew},
		{"tampered body", specHeader(specSignature, specTimestamp), `{"test": 2432232315}`, now, 0, ErrNoMatchingSignature},
		{"body with a trailing newline", specHeader(specSignature, specTimestamp), specPayload + "\n", now, 0, ErrNoMatchingSignature},
		{"signed for another timestamp", specHeader(specSignature, specTimestamp+1), specPayload, now, 0, ErrNoMatchingSignature},
		{"signed with another secret", specHeader(Sign(otherKey, specID, now, []byte(specPayload)), specTimestamp), specPayload, now, 0, ErrNoMatchingSignature},
		{"only a non-v1 version", specHeader("v2,"+specSignature[3:], specTimestamp), specPayload, now, 0, ErrNoMatchingSignature},
		{"truncated signature", specHeader(specSignature[:20], specTimestamp), specPayload, now, 0, ErrNoMatchingSignature},
		{"signature with extra bytes", specHeader("v1,"+base64.StdEncoding.EncodeToString(append(mustDecode(specSignature[3:]), 0)), specTimestamp), specPayload, now, 0, ErrNoMatchingSignature},
		{"garbage", specHeader("v1, , ,,v1 v1,%%%", specTimestamp), specPayload, now, 0, ErrNoMatchingSignature},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := Verify(specSecret, c.header, []byte(c.body), c.now, c.tolerance)
			if c.want == nil {
				if err != nil {
					t.Fatalf("Verify = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, c.want) {
				t.Fatalf("Verify = %v, want %v", err, c.want)
			}
			if herald.ErrorCode(err) != herald.CodeUnauthorized {
				t.Fatalf("code = %s, want unauthorized", herald.ErrorCode(err))
			}
		})
	}
}

func mustDecode(s string) []byte {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

func TestVerifyBadSecret(t *testing.T) {
	err := Verify("whsec_???", specHeader(specSignature, specTimestamp), []byte(specPayload), time.Unix(specTimestamp, 0), 0)
	if !herald.IsCode(err, herald.CodeInvalid) {
		t.Fatalf("Verify with a malformed secret = %v, want CodeInvalid", err)
	}
}

func TestVerifyKeysRotation(t *testing.T) {
	oldKey, _ := ParseSecret(NewSecret())
	newKey, _ := ParseSecret(NewSecret())
	unrelated, _ := ParseSecret(NewSecret())
	now := time.Now()
	body := []byte(`{"rotated":true}`)
	h := http.Header{}
	h.Set(HeaderID, "evt_1")
	h.Set(HeaderTimestamp, strconv.FormatInt(now.Unix(), 10))

	// The sender signs with both while the receiver moves over.
	h.Set(HeaderSignature, SignatureHeader([][]byte{newKey, oldKey}, "evt_1", now, body))
	if n := len(strings.Fields(h.Get(HeaderSignature))); n != 2 {
		t.Fatalf("SignatureHeader has %d items, want 2", n)
	}
	for name, keys := range map[string][][]byte{
		"old only": {oldKey}, "new only": {newKey}, "both": {unrelated, newKey},
	} {
		if err := VerifyKeys(keys, h, body, now, 0); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if err := VerifyKeys([][]byte{unrelated}, h, body, now, 0); !errors.Is(err, ErrNoMatchingSignature) {
		t.Errorf("unrelated key: %v, want ErrNoMatchingSignature", err)
	}
	// After the rotation the sender signs with the new key only.
	h.Set(HeaderSignature, SignatureHeader([][]byte{newKey}, "evt_1", now, body))
	if err := VerifyKeys([][]byte{oldKey}, h, body, now, 0); !errors.Is(err, ErrNoMatchingSignature) {
		t.Errorf("old key after rotation: %v, want ErrNoMatchingSignature", err)
	}
}

func BenchmarkSign(b *testing.B) {
	key, _ := ParseSecret(specSecret)
	body := []byte(strings.Repeat(`{"k":"v"}`, 100))
	ts := time.Unix(specTimestamp, 0)
	for b.Loop() {
		Sign(key, specID, ts, body)
	}
}

// A signer reuses its HMAC states: every signature it makes, one after
// another and from many goroutines at once, is the one Sign makes.
func TestSignerReusesStatesWithoutMixingMessages(t *testing.T) {
	t.Parallel()
	key, _ := ParseSecret(specSecret)
	s := newSigner(key)
	ts := time.Unix(specTimestamp, 0)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				id := fmt.Sprintf("evt_%d_%d", g, i)
				body := []byte(strings.Repeat("b", i))
				want := Sign(key, id, ts, body)
				if got := string(s.appendSign(nil, id, ts.Unix(), body)); got != want {
					t.Errorf("%s: signer %s, Sign %s", id, got, want)
					return
				}
			}
		})
	}
	wg.Wait()
	if got, want := signatureHeader([]*signer{s, newSigner([]byte("other"))}, specID, ts, []byte("x")),
		SignatureHeader([][]byte{key, []byte("other")}, specID, ts, []byte("x")); got != want {
		t.Errorf("signatureHeader %q, SignatureHeader %q", got, want)
	}
}
