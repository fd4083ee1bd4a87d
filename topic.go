package herald

import (
	"strings"
	"time"
)

// Topic limits and defaults.
const (
	MaxTopicNameLen      = 200
	DefaultRetention     = 7 * 24 * time.Hour
	DefaultMaxEventBytes = 256 << 10
	DefaultDedupWindow   = 24 * time.Hour
	// MaxEventBytesLimit is the largest max_event_bytes a topic may set.
	MaxEventBytesLimit = 4 << 20
	// MinRetention, MaxRetention and MaxDedupWindow bound topic settings.
	MinRetention   = time.Minute
	MaxRetention   = 365 * 24 * time.Hour
	MaxDedupWindow = 30 * 24 * time.Hour
	// SystemTopicPrefix starts the names of topics Herald itself writes to.
	SystemTopicPrefix = "herald."
)

// Topic is a named, append-only log of events with its settings.
type Topic struct {
	Name          string
	Retention     time.Duration // events older than this are pruned
	MaxEventBytes int           // largest payload accepted
	DedupWindow   time.Duration // how long an idempotency key is remembered
	CreatedAt     time.Time
	UpdatedAt     time.Time

	// Read-only statistics filled by the store on Get and List.
	HeadSeq  int64 // seq of the newest event ever appended; 0 if none
	FirstSeq int64 // seq of the oldest retained event; 0 if none retained
}

// EventCount is the number of retained events: seqs are gap-free and
// retention removes from the front, so it is derived from the two seqs.
func (t Topic) EventCount() int64 {
	if t.FirstSeq == 0 {
		return 0
	}
	return t.HeadSeq - t.FirstSeq + 1
}

// WithDefaults returns t with zero settings replaced by the defaults. It is
// for settings nobody gave: a zero DedupWindow means deduplication off, so
// a caller that was given one explicitly must not pass it through here.
func (t Topic) WithDefaults() Topic {
	if t.Retention == 0 {
		t.Retention = DefaultRetention
	}
	if t.MaxEventBytes == 0 {
		t.MaxEventBytes = DefaultMaxEventBytes
	}
	if t.DedupWindow == 0 {
		t.DedupWindow = DefaultDedupWindow
	}
	return t
}

// Validate checks the name and settings; the error names the field at fault.
func (t Topic) Validate() error {
	if err := ValidateTopicName(t.Name); err != nil {
		return err
	}
	switch {
	case t.Retention < MinRetention || t.Retention > MaxRetention:
		return FieldErrorf("retention", "retention must be between %s and %s, got %s",
			FormatDuration(MinRetention), FormatDuration(MaxRetention), FormatDuration(t.Retention))
	case t.MaxEventBytes < 1 || t.MaxEventBytes > MaxEventBytesLimit:
		return FieldErrorf("max_event_bytes", "max_event_bytes must be between 1 and %d, got %d", MaxEventBytesLimit, t.MaxEventBytes)
	case t.DedupWindow < 0 || t.DedupWindow > MaxDedupWindow:
		return FieldErrorf("dedup_window", "dedup_window must be between 0s and %s (0s turns deduplication off), got %s",
			FormatDuration(MaxDedupWindow), FormatDuration(t.DedupWindow))
	}
	return nil
}

// ValidateTopicName checks a topic name: dot-separated, non-empty segments of
// [A-Za-z0-9_-], at most MaxTopicNameLen bytes. It does not reject the system
// prefix; callers that create user topics check IsSystemTopic.
func ValidateTopicName(name string) error {
	if name == "" {
		return FieldErrorf("topic", "topic name is empty")
	}
	if len(name) > MaxTopicNameLen {
		return FieldErrorf("topic", "topic name is %d bytes; the limit is %d", len(name), MaxTopicNameLen)
	}
	for seg := range strings.SplitSeq(name, ".") {
		if seg == "" {
			return FieldErrorf("topic", "topic name %q has an empty segment", name)
		}
		if !validSegment(seg) {
			return FieldErrorf("topic", "topic name %q: segments may hold only letters, digits, '_' and '-'", name)
		}
	}
	return nil
}

// IsSystemTopic reports whether the name is reserved for Herald's own
// events; for a pattern, whether it names only such topics ("herald.>").
func IsSystemTopic(name string) bool { return strings.HasPrefix(name, SystemTopicPrefix) }

func validSegment(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// ValidatePattern checks a topic pattern: a topic name whose segments may
// also be "*" (exactly one segment) or, as the last segment, ">" (one or
// more remaining segments).
func ValidatePattern(p string) error {
	if p == "" {
		return FieldErrorf("topic", "topic pattern is empty")
	}
	if len(p) > MaxTopicNameLen {
		return FieldErrorf("topic", "topic pattern is %d bytes; the limit is %d", len(p), MaxTopicNameLen)
	}
	segs := strings.Split(p, ".")
	for i, seg := range segs {
		switch {
		case seg == "*":
		case seg == ">":
			if i != len(segs)-1 {
				return FieldErrorf("topic", "topic pattern %q: '>' may only be the last segment", p)
			}
		case seg == "" || !validSegment(seg):
			return FieldErrorf("topic", "topic pattern %q: segments are names of [A-Za-z0-9_-], '*' or a final '>'", p)
		}
	}
	return nil
}

// IsPattern reports whether p contains a wildcard segment.
func IsPattern(p string) bool {
	for seg := range strings.SplitSeq(p, ".") {
		if seg == "*" || seg == ">" {
			return true
		}
	}
	return false
}

// MatchTopic reports whether the topic name matches the pattern. A pattern
// without wildcards matches only the equal name. It allocates nothing.
func MatchTopic(pattern, topic string) bool {
	for {
		pi := strings.IndexByte(pattern, '.')
		ti := strings.IndexByte(topic, '.')
		pseg, tseg := pattern, topic
		if pi >= 0 {
			pseg = pattern[:pi]
		}
		if ti >= 0 {
			tseg = topic[:ti]
		}
		switch {
		case pseg == ">":
			return pi < 0 && topic != ""
		case pseg != "*" && pseg != tseg:
			return false
		case tseg == "":
			return false
		}
		if pi < 0 || ti < 0 {
			return pi < 0 && ti < 0
		}
		pattern, topic = pattern[pi+1:], topic[ti+1:]
	}
}
