package herald

import (
	"strings"
	"testing"
	"time"
)

func TestMatchTopic(t *testing.T) {
	cases := []struct {
		pattern, topic string
		want           bool
	}{
		{"orders", "orders", true},
		{"orders", "orders.created", false},
		{"orders.*", "orders.created", true},
		{"orders.*", "orders", false},
		{"orders.*", "orders.card.declined", false},
		{"orders.>", "orders.created", true},
		{"orders.>", "orders.card.declined", true},
		{"orders.>", "orders", false},
		{"*.created", "orders.created", true},
		{"*.created", "orders.updated", false},
		{">", "anything.at.all", true},
		{"*", "one", true},
		{"*", "one.two", false},
		{"a.*.c", "a.b.c", true},
		{"a.*.c", "a.b.d", false},
		{"payments.card.declined", "payments.card.declined", true},
		{"payments.card", "payments.cards", false},
	}
	for _, c := range cases {
		if got := MatchTopic(c.pattern, c.topic); got != c.want {
			t.Errorf("MatchTopic(%q, %q) = %v, want %v", c.pattern, c.topic, got, c.want)
		}
	}
}

func TestTopicAndPatternValidation(t *testing.T) {
	good := []string{"orders", "payments.card.declined", "a-b_c.D9"}
	for _, n := range good {
		if err := ValidateTopicName(n); err != nil {
			t.Errorf("ValidateTopicName(%q) = %v, want nil", n, err)
		}
	}
	bad := []string{"", ".", "a..b", "a.", ".a", "a b", "a/b", "a.*", "é", strings.Repeat("a", MaxTopicNameLen+1)}
	for _, n := range bad {
		err := ValidateTopicName(n)
		if err == nil || ErrorCode(err) != CodeInvalid || err.(*Error).Field != "topic" {
			t.Errorf("ValidateTopicName(%q) = %v, want a CodeInvalid error on field topic", n, err)
		}
	}
	for _, p := range []string{"a.*", "a.>", ">", "*.b.*", "a"} {
		if err := ValidatePattern(p); err != nil {
			t.Errorf("ValidatePattern(%q) = %v", p, err)
		}
	}
	for _, p := range []string{"a.>.b", "a.**", "a.b*", "", "a..*"} {
		if err := ValidatePattern(p); err == nil {
			t.Errorf("ValidatePattern(%q) = nil, want error", p)
		}
	}
}

func TestScopes(t *testing.T) {
	ss, err := ParseScopes([]string{"publish:orders.>", "read:orders.*"})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		a     Action
		topic string
		want  bool
	}{
		{ActionPublish, "orders.created", true},
		{ActionPublish, "orders.card.declined", true},
		{ActionPublish, "payments.created", false},
		{ActionRead, "orders.created", true},
		{ActionRead, "orders.card.declined", false},
		{ActionRead, "orders.*", true},  // a pattern inside the scope's pattern
		{ActionRead, "orders.>", false}, // wider than the scope
		{ActionSubscribe, "orders.created", false},
	}
	for _, c := range cases {
		if got := ss.Allows(c.a, c.topic); got != c.want {
			t.Errorf("Allows(%s, %q) = %v, want %v", c.a, c.topic, got, c.want)
		}
	}
	if !(Scopes{{Action: ActionAdmin}}).Allows(ActionPublish, "x") {
		t.Error("admin must allow everything")
	}
	for _, bad := range []string{"write:orders", "publish", "publish:", "publish:a..b", "root"} {
		if _, err := ParseScope(bad); err == nil || ErrorCode(err) != CodeInvalid {
			t.Errorf("ParseScope(%q) = %v, want CodeInvalid", bad, err)
		}
	}
}

// TestScopesReachSystemTopicsOnlyByName: a wildcard in a scope never
// grants Herald's own topics; only admin or a scope naming them does.
func TestScopesReachSystemTopicsOnlyByName(t *testing.T) {
	cases := []struct {
		scope, topic string
		want         bool
	}{
		{"read:>", "herald.subscriptions", false},
		{"read:*.subscriptions", "herald.subscriptions", false},
		{"read:*.>", "herald.subscriptions", false},
		{"read:>", "herald.>", false},
		{"read:>", "orders.eu", true},
		// A wildcard pattern is allowed: system topics are left out of it
		// by whoever delivers it (see Scope.Allows).
		{"read:>", ">", true},
		{"read:*.subscriptions", "*.subscriptions", true},
		{"read:herald.>", "herald.subscriptions", true},
		{"read:herald.subscriptions", "herald.subscriptions", true},
		{"read:herald.>", "herald.*", true},
		{"read:herald.subscriptions", "herald.>", false},
		{"subscribe:>", "herald.subscriptions", false},
		{"admin", "herald.subscriptions", true},
	}
	for _, c := range cases {
		ss, err := ParseScopes([]string{c.scope})
		if err != nil {
			t.Fatal(err)
		}
		a := ActionRead
		if ss[0].Action != ActionAdmin {
			a = ss[0].Action
		}
		if got := ss.Allows(a, c.topic); got != c.want {
			t.Errorf("%s allows %s %q = %v, want %v", c.scope, a, c.topic, got, c.want)
		}
	}
}

func TestDurations(t *testing.T) {
	cases := []struct {
		in   string
		want time.Duration
	}{
		{"7d", 7 * 24 * time.Hour},
		{"1d12h", 36 * time.Hour},
		{"90m", 90 * time.Minute},
		{"1.5h", 90 * time.Minute},
		{"0s", 0},
	}
	for _, c := range cases {
		got, err := ParseDuration(c.in)
		if err != nil || got != c.want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", c.in, got, err, c.want)
		}
		if back, _ := ParseDuration(FormatDuration(got)); back != got {
			t.Errorf("FormatDuration(%v) = %q does not parse back", got, FormatDuration(got))
		}
	}
	for _, bad := range []string{"d", "-1d", "1dx", "x", "1d-5h"} {
		if _, err := ParseDuration(bad); err == nil {
			t.Errorf("ParseDuration(%q) = nil error", bad)
		}
	}
	if s := FormatDuration(90 * time.Minute); s != "1h30m" {
		t.Errorf("FormatDuration(90m) = %q", s)
	}
}

func TestRetryPolicyDelay(t *testing.T) {
	p := DefaultRetryPolicy
	var total time.Duration
	prev := time.Duration(0)
	for a := 1; a < p.MaxAttempts; a++ {
		lo, hi := p.Delay(a, 0), p.Delay(a, 0.999999)
		if hi > lo || lo > p.Max || hi < time.Duration(float64(lo)*0.8) {
			t.Fatalf("attempt %d: jitter range [%v, %v] out of bounds", a, lo, hi)
		}
		mid := p.Delay(a, 0.5)
		if mid < prev {
			t.Fatalf("attempt %d: delay %v shrank from %v", a, mid, prev)
		}
		prev = mid
		total += mid
	}
	// The documented default keeps trying for about a day.
	if total < 20*time.Hour || total > 36*time.Hour {
		t.Fatalf("default schedule spans %v, want about a day", total)
	}
	if err := (RetryPolicy{MaxAttempts: 0, Initial: time.Second, Max: time.Minute}).Validate(); ErrorCode(err) != CodeInvalid {
		t.Fatalf("Validate zero attempts = %v", err)
	}
}

func TestNewIDIsUUIDv7(t *testing.T) {
	now := time.Now()
	a, b := NewID(now), NewID(now.Add(time.Millisecond))
	if len(a) != 36 || a[14] != '7' || !strings.ContainsRune("89ab", rune(a[19])) {
		t.Fatalf("NewID = %q, not a UUIDv7", a)
	}
	if a >= b {
		t.Fatalf("ids must sort by time: %q >= %q", a, b)
	}
}
