package channel

import (
	"context"
	"crypto/tls"
	"net"
	"time"
)

// Dialer returns a dial function for a broker client: through the SSRF
// guard (DialControl) unless allowPrivate, and with TLS when tc is not nil
// (its ServerName, when empty, set from the host dialed).
func Dialer(allowPrivate bool, tc *tls.Config) func(ctx context.Context, network, addr string) (net.Conn, error) {
	nd := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second, ControlContext: DialControl(allowPrivate)}
	if tc == nil {
		return nd.DialContext
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		conf := tc
		if conf.ServerName == "" {
			host, _, _ := net.SplitHostPort(addr)
			conf = tc.Clone()
			conf.ServerName = host
		}
		return (&tls.Dialer{NetDialer: nd, Config: conf}).DialContext(ctx, network, addr)
	}
}
