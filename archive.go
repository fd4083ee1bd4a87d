package herald

import (
	"context"
	"math"
	"time"
)

// Archive is a named, long-lived copy of the events of the topics a
// pattern matches, written in date-partitioned files (package archive).
// It is backed by an internal subscription of the "archive" channel: that
// subscription carries the archive's settings (its topic pattern, filter
// and channel config) and its delivery state (cursors, retries, leases,
// pause and resume), so an archive is delivered at least once exactly as
// any subscription is. The Archive itself names the subscription.
type Archive struct {
	Name           string // [a-z0-9][a-z0-9_-]*, at most MaxArchiveNameLen bytes
	SubscriptionID string
	// MaxHold bounds the retention hold of an archive that is not active
	// (paused or disabled): the events it has not written are kept at
	// most this long past their topic's retention, then pruned (and the
	// archive counts the gap when it resumes). An active archive holds
	// without bound. 0 means a paused archive does not hold at all.
	MaxHold   time.Duration
	CreatedAt time.Time
}

// Archive limits.
const (
	// MaxArchiveNameLen bounds an archive's name.
	MaxArchiveNameLen = 64
	// DefaultArchiveMaxHold is an archive's MaxHold unless it names one.
	DefaultArchiveMaxHold = 7 * 24 * time.Hour
	// MaxArchiveMaxHold bounds MaxHold.
	MaxArchiveMaxHold = 366 * 24 * time.Hour
)

// ValidateArchiveMaxHold checks an archive's MaxHold; errors name the field
// "max_hold".
func ValidateArchiveMaxHold(d time.Duration) error {
	if d < 0 || d > MaxArchiveMaxHold {
		return FieldErrorf("max_hold", "max_hold is a duration between 0s and %s, got %s", FormatDuration(MaxArchiveMaxHold), FormatDuration(d))
	}
	return nil
}

// RetentionHold is what one archive keeps back in one topic's log: the
// events after Seq, which it has not written yet. Prune keeps them unless
// their time is at or before Cutoff (Unix nanoseconds; math.MinInt64 for
// an active archive, which holds without bound).
type RetentionHold struct {
	Seq    int64
	Cutoff int64
}

// ArchiveHold returns the hold of an archive whose subscription is in the
// given state, has settled the topic up to cursor (0 when it has no
// cursor there: nothing is written yet) and has retries from minRetry
// (0 for none), for a topic whose retention cutoff is retentionCutoff
// (Unix nanoseconds: events at or before it are past retention). Both
// stores compute holds with it, so they cannot drift apart.
func ArchiveHold(a Archive, state SubscriptionState, cursor, minRetry, retentionCutoff int64) RetentionHold {
	h := RetentionHold{Seq: cursor, Cutoff: math.MinInt64}
	if minRetry > 0 && minRetry-1 < h.Seq {
		h.Seq = minRetry - 1
	}
	if state != StateActive {
		h.Cutoff = retentionCutoff - int64(a.MaxHold)
		if a.MaxHold > 0 && h.Cutoff > retentionCutoff { // wrapped around
			h.Cutoff = math.MinInt64
		}
	}
	return h
}

// Held reports whether a hold keeps the event of the seq and time (Unix
// nanoseconds) back from pruning.
func Held(holds []RetentionHold, seq, timeNanos int64) bool {
	for _, h := range holds {
		if seq > h.Seq && timeNanos > h.Cutoff {
			return true
		}
	}
	return false
}

// ValidateArchiveName checks an archive name: 1 to MaxArchiveNameLen
// lower-case letters, digits, '_' and '-', starting with a letter or digit,
// so it is safe in a path and a URL as it is. Errors name the field "name".
func ValidateArchiveName(name string) error {
	if name == "" || len(name) > MaxArchiveNameLen {
		return FieldErrorf("name", "an archive name is 1 to %d characters, got %d", MaxArchiveNameLen, len(name))
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		ok := c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || i > 0 && (c == '_' || c == '-')
		if !ok {
			return FieldErrorf("name", "an archive name is lower-case letters, digits, '_' and '-', starting with a letter or digit; got %q", name)
		}
	}
	return nil
}

// ArchiveStore keeps the names of archives and the subscriptions behind
// them. Both stores implement it; storetest checks it.
type ArchiveStore interface {
	// CreateArchive stores a new archive; CodeConflict if the name exists.
	CreateArchive(ctx context.Context, a Archive) error
	// GetArchive returns the archive, or CodeNotFound.
	GetArchive(ctx context.Context, name string) (Archive, error)
	// ListArchives returns up to limit archives whose names sort after
	// the given one ("" for the first page), in name order.
	ListArchives(ctx context.Context, after string, limit int) ([]Archive, error)
	// UpdateArchive replaces the archive's MaxHold (the name, the
	// subscription and CreatedAt never change), or returns CodeNotFound.
	UpdateArchive(ctx context.Context, a Archive) error
	// DeleteArchive removes the archive (not its subscription), or
	// returns CodeNotFound.
	DeleteArchive(ctx context.Context, name string) error
}
