package webhook

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"strconv"
	"syscall"

	"github.com/heraldhq/herald/channel"
)

// Failure reasons: what a failed delivery or challenge reports in
// herald.DeliveryResult.Err. They come from this fixed set, plus
// HTTPReason for an answer that was not a success, and are safe to show to
// anyone who may see the subscription: the raw cause, which can name
// internal hosts, resolvers and addresses, goes to
// herald.DeliveryResult.Detail, for the server log and admin keys only.
// docs/webhooks.md lists them; they are part of the API.
const (
	ReasonDNS                = "dns-failure"         // the host name did not resolve
	ReasonDestinationRefused = "destination-refused" // the address is private, loopback... (see CheckAddr)
	ReasonConnectionRefused  = "connection-refused"  // nothing accepted the connection
	ReasonConnectionReset    = "connection-reset"    // the connection closed before a whole answer
	ReasonTimeout            = "timeout"             // no answer within the timeout (connect or response)
	ReasonTLS                = "tls-error"           // the TLS handshake failed: certificate, protocol
	ReasonNetwork            = "network-error"       // any other failure to reach the endpoint
	ReasonCanceled           = "canceled"            // cut short: Herald was stopping
	ReasonChallengeMismatch  = "challenge-mismatch"  // a 2xx answer that did not echo the challenge
	ReasonSigning            = "signing-failed"      // the subscription's secret could not sign
)

// HTTPReason is the reason of an answer with a status that is not a
// success: "http-503".
func HTTPReason(status int) string { return "http-" + strconv.Itoa(status) }

// classifyErr returns the reason for a request that got no answer. It
// looks for the most specific cause first: a DNS error is a net.Error
// that may also be a timeout, and a refused destination wraps the
// dialer's error.
func classifyErr(err error) string {
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
	case errors.Is(err, channel.ErrDestinationRefused):
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
	return ReasonNetwork
}
