package webhook

import (
	"net/url"
	"strconv"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/channel"
)

// MaxURLLen is the longest webhook URL ValidateURL accepts, in bytes.
const MaxURLLen = herald.MaxURLLen

// ValidateURL checks a webhook URL when a subscription is created or
// changed, to reject mistakes and obvious SSRF attempts early: it must be an
// absolute http or https URL of at most MaxURLLen bytes with a host, no
// user information and a port (if any) from 1 to 65535. Unless allowPrivate
// is true, a host that is a literal IP address in a refused range (see
// channel.CheckAddr), or "localhost" or a name under ".localhost", is refused with
// an error that also wraps channel.ErrDestinationRefused. Names are not resolved
// here: the dial guard (channel.DialControl) checks what they resolve to at every
// connection.
//
// Errors are *herald.Error with CodeInvalid and Field "url".
func ValidateURL(raw string, allowPrivate bool) error {
	if len(raw) > MaxURLLen {
		return herald.FieldErrorf("url", "the URL is %d bytes; the limit is %d", len(raw), MaxURLLen)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return herald.FieldErrorf("url", "the URL does not parse: %s", parseReason(err))
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return herald.FieldErrorf("url", "the URL must be absolute and start with http:// or https://")
	case u.Opaque != "":
		return herald.FieldErrorf("url", "the URL must have the form scheme://host/path")
	case u.User != nil:
		return herald.FieldErrorf("url", "the URL must not contain a user name or password; use subscription headers for credentials")
	case u.Hostname() == "":
		return herald.FieldErrorf("url", "the URL has no host")
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return herald.FieldErrorf("url", "the URL's port %q is not between 1 and 65535", p)
		}
	}
	return channel.CheckHost(u.Hostname(), allowPrivate, "url", "the URL's host")
}

// parseReason returns the part of a url.Parse error that does not repeat the
// URL, which may hold credentials.
func parseReason(err error) string {
	if ue, ok := err.(*url.Error); ok {
		return ue.Err.Error()
	}
	return "malformed URL"
}
