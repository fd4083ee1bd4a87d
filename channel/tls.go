package channel

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"

	"github.com/heraldhq/herald"
)

// MaxPEMLen bounds each PEM member of TLSOptions, in bytes.
const MaxPEMLen = 65536

// TLSOptions are the TLS members a broker channel's config embeds (so
// they sit at the top level of the config, named tls_*). KeyPEM is a
// secret: a channel's Public clears it.
type TLSOptions struct {
	// TLS turns TLS on, with the system's roots unless CAPEM is set.
	TLS        bool   `json:"tls,omitempty"`
	CAPEM      string `json:"tls_ca_pem,omitempty"`      // PEM roots that sign the server's certificate
	ServerName string `json:"tls_server_name,omitempty"` // overrides the name checked in the certificate
	// InsecureSkipVerify accepts any certificate; admin keys only.
	InsecureSkipVerify bool   `json:"tls_insecure_skip_verify,omitempty"`
	CertPEM            string `json:"tls_cert_pem,omitempty"` // client certificate, for mutual TLS
	KeyPEM             string `json:"tls_key_pem,omitempty"`  // its private key; secret
}

// Validate checks the options as a caller wrote them and returns them to
// store. A key left out of an update is kept from prev when the
// certificate is unchanged. Errors name the member ("tls_ca_pem").
func (in TLSOptions) Validate(prev TLSOptions, admin bool) (TLSOptions, error) {
	if !in.TLS {
		if in.CAPEM != "" || in.ServerName != "" || in.InsecureSkipVerify || in.CertPEM != "" || in.KeyPEM != "" {
			return TLSOptions{}, herald.FieldErrorf("tls", `the tls_* members need "tls": true`)
		}
		return TLSOptions{}, nil
	}
	if in.InsecureSkipVerify && !admin {
		return TLSOptions{}, herald.FieldErrorf("tls_insecure_skip_verify", "only an admin key may turn certificate checks off")
	}
	for name, v := range map[string]string{"tls_ca_pem": in.CAPEM, "tls_cert_pem": in.CertPEM, "tls_key_pem": in.KeyPEM} {
		if len(v) > MaxPEMLen {
			return TLSOptions{}, herald.FieldErrorf(name, "%s is %d bytes; the limit is %d", name, len(v), MaxPEMLen)
		}
	}
	if len(in.ServerName) > 253 {
		return TLSOptions{}, herald.FieldErrorf("tls_server_name", "tls_server_name is longer than 253 bytes")
	}
	if in.CAPEM != "" && !x509.NewCertPool().AppendCertsFromPEM([]byte(in.CAPEM)) {
		return TLSOptions{}, herald.FieldErrorf("tls_ca_pem", "tls_ca_pem holds no PEM certificate")
	}
	if in.KeyPEM == "" && in.CertPEM != "" && prev.CertPEM == in.CertPEM {
		in.KeyPEM = prev.KeyPEM // an update that leaves the secret out keeps it
	}
	switch {
	case in.CertPEM == "" && in.KeyPEM != "":
		return TLSOptions{}, herald.FieldErrorf("tls_cert_pem", "tls_key_pem needs its certificate in tls_cert_pem")
	case in.CertPEM != "" && in.KeyPEM == "":
		return TLSOptions{}, herald.FieldErrorf("tls_key_pem", "tls_cert_pem needs its private key in tls_key_pem")
	case in.CertPEM != "":
		if _, err := tls.X509KeyPair([]byte(in.CertPEM), []byte(in.KeyPEM)); err != nil {
			if b, _ := pem.Decode([]byte(in.CertPEM)); b == nil {
				return TLSOptions{}, herald.FieldErrorf("tls_cert_pem", "tls_cert_pem holds no PEM certificate")
			}
			return TLSOptions{}, herald.FieldErrorf("tls_key_pem", "tls_key_pem is not the private key of tls_cert_pem")
		}
	}
	return in, nil
}

// Config returns the crypto/tls config of validated options, nil when TLS
// is off. When ServerName is empty, the dialer sets it from the address
// dialed (see TLSConfigFor).
func (o TLSOptions) Config() (*tls.Config, error) {
	if !o.TLS {
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: o.ServerName, InsecureSkipVerify: o.InsecureSkipVerify} //nolint:gosec // an admin's explicit choice, checked by Validate
	if o.CAPEM != "" {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM([]byte(o.CAPEM)) {
			return nil, fmt.Errorf("tls_ca_pem holds no certificate")
		}
		tc.RootCAs = pool
	}
	if o.CertPEM != "" {
		cert, err := tls.X509KeyPair([]byte(o.CertPEM), []byte(o.KeyPEM))
		if err != nil {
			return nil, fmt.Errorf("tls client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}
