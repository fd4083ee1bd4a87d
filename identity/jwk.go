package identity

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
)

// parseJWK reads one JSON Web Key (RFC 7517) of a provider's set: RSA,
// EC (P-256, P-384, P-521) or OKP (Ed25519). A key meant for encryption
// ("use": "enc") is skipped: nil key, nil error.
func parseJWK(raw json.RawMessage) (string, crypto.PublicKey, error) {
	var k struct {
		Kty string `json:"kty"`
		Kid string `json:"kid"`
		Use string `json:"use"`
		Crv string `json:"crv"`
		N   string `json:"n"`
		E   string `json:"e"`
		X   string `json:"x"`
		Y   string `json:"y"`
	}
	if err := json.Unmarshal(raw, &k); err != nil {
		return "", nil, err
	}
	if k.Use != "" && k.Use != "sig" {
		return k.Kid, nil, nil
	}
	b := func(s string) []byte {
		out, err := base64.RawURLEncoding.DecodeString(s)
		if err != nil {
			return nil
		}
		return out
	}
	switch k.Kty {
	case "RSA":
		n, e := b(k.N), b(k.E)
		if len(n) < 256 || len(e) == 0 || len(e) > 4 {
			return k.Kid, nil, errors.New("RSA key: n must be at least 2048 bits and e at most 32 bits")
		}
		return k.Kid, &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}, nil
	case "EC":
		var curve elliptic.Curve
		switch k.Crv {
		case "P-256":
			curve = elliptic.P256()
		case "P-384":
			curve = elliptic.P384()
		case "P-521":
			curve = elliptic.P521()
		default:
			return k.Kid, nil, fmt.Errorf("EC key: curve %q is not supported", k.Crv)
		}
		size := (curve.Params().BitSize + 7) / 8
		x, y := b(k.X), b(k.Y)
		if len(x) != size || len(y) != size {
			return k.Kid, nil, errors.New("EC key: x and y have the wrong length")
		}
		pub, err := ecdsa.ParseUncompressedPublicKey(curve, append(append([]byte{4}, x...), y...))
		if err != nil {
			return k.Kid, nil, fmt.Errorf("EC key: %w", err)
		}
		return k.Kid, pub, nil
	case "OKP":
		x := b(k.X)
		if k.Crv != "Ed25519" || len(x) != ed25519.PublicKeySize {
			return k.Kid, nil, fmt.Errorf("OKP key: only Ed25519 is supported, got %q", k.Crv)
		}
		return k.Kid, ed25519.PublicKey(x), nil
	}
	return k.Kid, nil, fmt.Errorf("key type %q is not supported", k.Kty)
}
