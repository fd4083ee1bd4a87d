package channel

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"

	"github.com/heraldhq/herald"
)

// AllowPrivateEnv is the setting that lets channels reach refused addresses;
// messages name it so an operator knows what to change.
const AllowPrivateEnv = "HERALD_ALLOW_PRIVATE_DESTINATIONS"

// ErrDestinationRefused is the cause of every refusal by the SSRF guard: a
// dial to, or a URL naming, an address that is loopback, private, link-local
// or otherwise not a public unicast address, while private destinations are
// not allowed. Test with errors.Is; the wrapping error names the address.
var ErrDestinationRefused = &herald.Error{
	Code:    herald.CodeForbidden,
	Message: "destination refused: the address is loopback, private, link-local or reserved (set " + AllowPrivateEnv + "=true to allow)",
}

// refusedRange is one block of addresses no channel reaches by default.
type refusedRange struct {
	prefix netip.Prefix
	name   string
}

// refusedRanges lists the special-purpose blocks of the IANA IPv4 and IPv6
// registries that are not public unicast destinations. IPv4-mapped IPv6
// addresses are unmapped before the lookup, so they are covered by the IPv4
// rows; NAT64 and 6to4 addresses are checked again by their embedded IPv4
// address (see refusal).
var refusedRanges = func() []refusedRange {
	rows := []struct{ cidr, name string }{
		{"0.0.0.0/8", "\"this network\" (0.0.0.0/8)"},
		{"10.0.0.0/8", "private (RFC 1918)"},
		{"100.64.0.0/10", "shared address space (CGNAT, RFC 6598)"},
		{"127.0.0.0/8", "loopback"},
		{"169.254.0.0/16", "link-local (includes cloud metadata 169.254.169.254)"},
		{"172.16.0.0/12", "private (RFC 1918)"},
		{"192.0.0.0/24", "IETF protocol assignments"},
		{"192.0.2.0/24", "documentation (TEST-NET-1)"},
		{"192.88.99.0/24", "6to4 relay anycast"},
		{"192.168.0.0/16", "private (RFC 1918)"},
		{"198.18.0.0/15", "benchmarking"},
		{"198.51.100.0/24", "documentation (TEST-NET-2)"},
		{"203.0.113.0/24", "documentation (TEST-NET-3)"},
		{"224.0.0.0/4", "multicast"},
		{"240.0.0.0/4", "reserved (includes broadcast 255.255.255.255)"},

		{"::/128", "unspecified"},
		{"::1/128", "loopback"},
		{"::/96", "IPv4-compatible (deprecated)"},
		{"::ffff:0:0:0/96", "IPv4-translated"},
		{"64:ff9b:1::/48", "local-use NAT64"},
		{"100::/64", "discard-only"},
		{"2001::/23", "IETF protocol assignments (includes Teredo)"},
		{"2001:db8::/32", "documentation"},
		{"3fff::/20", "documentation"},
		{"5f00::/16", "segment routing (SRv6)"},
		{"fc00::/7", "unique local"},
		{"fe80::/10", "link-local"},
		{"fec0::/10", "site-local (deprecated)"},
		{"ff00::/8", "multicast"},
	}
	out := make([]refusedRange, len(rows))
	for i, r := range rows {
		out[i] = refusedRange{netip.MustParsePrefix(r.cidr), r.name}
	}
	return out
}()

var (
	nat64Prefix = netip.MustParsePrefix("64:ff9b::/96")
	sixToFour   = netip.MustParsePrefix("2002::/16")
)

// refusal returns why ip is not a public unicast destination, or "" when it
// is one. An invalid address is refused.
func refusal(ip netip.Addr) string {
	if !ip.IsValid() {
		return "not a valid IP address"
	}
	ip = ip.WithZone("").Unmap() // Prefix.Contains ignores zoned and mapped forms
	for _, r := range refusedRanges {
		if r.prefix.Contains(ip) {
			return r.name
		}
	}
	// Forms that carry an IPv4 address inside: refuse them when it is.
	var v4 [4]byte
	switch b := ip.As16(); {
	case nat64Prefix.Contains(ip):
		copy(v4[:], b[12:16])
	case sixToFour.Contains(ip):
		copy(v4[:], b[2:6])
	default:
		return ""
	}
	if why := refusal(netip.AddrFrom4(v4)); why != "" {
		return why + " (embedded in " + ip.String() + ")"
	}
	return ""
}

// CheckAddr returns nil when ip is a public unicast address, and otherwise
// an error wrapping ErrDestinationRefused that names the address and its
// range.
func CheckAddr(ip netip.Addr) error {
	if why := refusal(ip); why != "" {
		return fmt.Errorf("%w: %s is %s", ErrDestinationRefused, ip, why)
	}
	return nil
}

// DialControl returns a function for net.Dialer.ControlContext that refuses
// to connect to any address CheckAddr refuses, unless allowPrivate is true
// (then it returns nil, which allows everything). It runs after name
// resolution and before the connection is made, on the address actually
// dialed, so DNS rebinding, names that resolve to private addresses and
// redirects cannot get around it. Refusals wrap ErrDestinationRefused; no
// packet is sent to a refused address. It is safe for concurrent use.
func DialControl(allowPrivate bool) func(ctx context.Context, network, address string, c syscall.RawConn) error {
	if allowPrivate {
		return nil
	}
	return func(_ context.Context, network, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			// Fail closed: the dialer only passes resolved addresses here.
			return fmt.Errorf("%w: cannot check %s address %q", ErrDestinationRefused, network, address)
		}
		return CheckAddr(ap.Addr())
	}
}

// CheckHost checks the host of a destination when a subscription is
// written, to refuse mistakes and obvious SSRF attempts early, for every
// channel alike: unless allowPrivate is true, a literal IP address in a
// refused range (see CheckAddr), "localhost" or a name under ".localhost"
// is refused with an error wrapping ErrDestinationRefused; a host that
// looks like an IPv4 address in a non-standard form ("127.1",
// "0x7f.0.0.1") is refused always. Names are not resolved here: the dial
// guard (DialControl) checks what they resolve to at every connection.
// what names the destination in messages ("the URL's host"); errors are
// *herald.Error with CodeInvalid and the given field.
func CheckHost(host string, allowPrivate bool, field, what string) error {
	host = strings.ToLower(strings.TrimSuffix(strings.Trim(host, "[]"), "."))
	if ip, err := netip.ParseAddr(host); err == nil {
		if allowPrivate {
			return nil
		}
		if why := refusal(ip); why != "" {
			return &herald.Error{
				Code:    herald.CodeInvalid,
				Field:   field,
				Message: fmt.Sprintf("%s %s is %s; Herald may only reach public addresses unless the server runs with %s=true", what, ip, why, AllowPrivateEnv),
				Err:     ErrDestinationRefused,
			}
		}
		return nil
	}
	if looksNumeric(host) {
		// Some resolvers read these as IPv4 addresses, so they would
		// dodge the literal check above.
		return herald.FieldErrorf(field, "%s %q looks like an IPv4 address in a non-standard form; write it as four decimal numbers", what, host)
	}
	if !allowPrivate && (host == "localhost" || strings.HasSuffix(host, ".localhost")) {
		return &herald.Error{
			Code:    herald.CodeInvalid,
			Field:   field,
			Message: fmt.Sprintf("%s %q is this machine; Herald may only reach public addresses unless the server runs with %s=true", what, host, AllowPrivateEnv),
			Err:     ErrDestinationRefused,
		}
	}
	return nil
}

// CheckHostPort checks a "host:port" destination (a broker address) as
// CheckHost does, and that the port is between 1 and 65535.
func CheckHostPort(addr string, allowPrivate bool, field string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return herald.FieldErrorf(field, "%q is not a host:port address", addr)
	}
	if n, ok := portNumber(port); !ok || n < 1 || n > 65535 {
		return herald.FieldErrorf(field, "the port of %q is not between 1 and 65535", addr)
	}
	return CheckHost(host, allowPrivate, field, "the host")
}

func portNumber(p string) (int, bool) {
	if p == "" {
		return 0, false
	}
	n := 0
	for i := 0; i < len(p); i++ {
		if p[i] < '0' || p[i] > '9' || n > 65535 {
			return 0, false
		}
		n = n*10 + int(p[i]-'0')
	}
	return n, true
}

// looksNumeric reports whether the last label of a host name is a decimal
// or 0x-hexadecimal number, as in the IPv4 shorthand forms. No top-level
// domain is numeric, so no real name is rejected.
func looksNumeric(host string) bool {
	last := host[strings.LastIndexByte(host, '.')+1:]
	if last == "" {
		return false
	}
	digits := last
	if strings.HasPrefix(last, "0x") {
		digits = last[2:]
		if digits == "" {
			return true
		}
		return strings.Trim(digits, "0123456789abcdef") == ""
	}
	return strings.Trim(digits, "0123456789") == ""
}
