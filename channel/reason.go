package channel

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"syscall"
)

// Failure reasons every network channel shares, for
// herald.DeliveryResult.Err: a small fixed set, safe to show anyone who
// may see the subscription (the raw cause goes to Detail, for admins).
// They are the webhook channel's words for the same failures; each
// channel adds its own (a broker's refusal, an unroutable message).
const (
	ReasonDNS                = "dns-failure"         // the host name did not resolve
	ReasonDestinationRefused = "destination-refused" // the address is private, loopback... (see CheckAddr)
	ReasonConnectionRefused  = "connection-refused"  // nothing accepted the connection
	ReasonConnectionReset    = "connection-reset"    // the connection closed before an answer
	ReasonTimeout            = "timeout"             // no answer within the timeout
	ReasonTLS                = "tls-error"           // the TLS handshake failed
	ReasonNetwork            = "network-error"       // any other failure to reach the service
	ReasonCanceled           = "canceled"            // cut short: Herald was stopping
)

// NetReason returns the reason for an error of reaching a service, most
// specific cause first (a DNS error may also be a timeout; a refused
// destination wraps the dialer's error), or "" when err is none of
// these: the caller then uses a reason of its own.
func NetReason(err error) string {
	var (
		dnsErr     *net.DNSError
		certErr    *tls.CertificateVerificationError
		alertErr   tls.AlertError
		recordErr  tls.RecordHeaderError
		unknownCA  x509.UnknownAuthorityError
		hostErr    x509.HostnameError
		invalidErr x509.CertificateInvalidError
		netErr     net.Error
	)
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrDestinationRefused):
		return ReasonDestinationRefused
	case errors.As(err, &dnsErr):
		return ReasonDNS
	case errors.Is(err, context.Canceled):
		return ReasonCanceled
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		return ReasonTimeout
	case errors.As(err, &certErr), errors.As(err, &alertErr), errors.As(err, &recordErr),
		errors.As(err, &unknownCA), errors.As(err, &hostErr), errors.As(err, &invalidErr):
		return ReasonTLS
	case errors.Is(err, syscall.ECONNREFUSED):
		return ReasonConnectionRefused
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return ReasonConnectionReset
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) {
		return ReasonNetwork
	}
	return ""
}
