package herald

import (
	"context"
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
	CreatedAt      time.Time
}

// MaxArchiveNameLen bounds an archive's name.
const MaxArchiveNameLen = 64

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
	// DeleteArchive removes the archive (not its subscription), or
	// returns CodeNotFound.
	DeleteArchive(ctx context.Context, name string) error
}
