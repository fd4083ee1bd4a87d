package herald

import (
	"strings"
	"unicode/utf8"
)

// ValidHeaderName reports whether name can be sent as an HTTP field name:
// a non-empty token of RFC 9110 section 5.6.2 (letters, digits and
// !#$%&'*+-.^_`|~). It is the rule for every name Herald writes into a
// delivered request: producer headers and subscription static headers.
func ValidHeaderName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// ValidHeaderValue reports whether v can be sent as an HTTP field value:
// valid UTF-8 without control characters other than tab. CR and LF would
// split the request and an HTTP client refuses the other controls, so a
// value that passes here is one a delivery can carry. It is the one rule
// for everything that ends up in a delivered header: an event's key,
// content type and headers, CloudEvents attributes, and subscription
// static headers. Checking it where the value comes in keeps an event that
// can never be delivered from being accepted.
func ValidHeaderValue(v string) bool {
	if !utf8.ValidString(v) {
		return false
	}
	for _, r := range v {
		if (r < ' ' && r != '\t') || r == 0x7f {
			return false
		}
	}
	return true
}
