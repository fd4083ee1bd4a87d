package channel

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestCheckAddr(t *testing.T) {
	refused := []string{
		"0.0.0.0", "0.1.2.3", "10.0.0.1", "10.255.255.255", "100.64.0.1", "100.127.255.255",
		"127.0.0.1", "127.255.255.254", "169.254.0.1", "169.254.169.254", "172.16.0.1",
		"172.31.255.255", "192.0.0.8", "192.0.2.1", "192.88.99.1", "192.168.1.1",
		"198.18.0.1", "198.19.255.255", "198.51.100.7", "203.0.113.9", "224.0.0.1",
		"239.255.255.250", "240.0.0.1", "255.255.255.255",
		"::", "::1", "::127.0.0.1", "::ffff:127.0.0.1", "::ffff:10.1.2.3",
		"::ffff:169.254.169.254", "::ffff:0.0.0.0", "::ffff:0:10.0.0.1", "64:ff9b::7f00:1",
		"64:ff9b::a9fe:a9fe", "64:ff9b:1::1", "100::1", "2001::1", "2001:db8::1",
		"2002:7f00:1::1", "2002:c0a8:101::", "3fff::1", "5f00::1", "fc00::1",
		"fd12:3456:789a::1", "fe80::1", "fe80::1%eth0", "febf::1", "fec0::1", "ff02::1",
		"ff05::1:3",
	}
	allowed := []string{
		"1.1.1.1", "8.8.8.8", "9.255.255.255", "11.0.0.0", "93.184.215.14", "100.63.255.255",
		"100.128.0.0", "126.255.255.255", "128.0.0.0", "169.253.255.255", "169.255.0.0",
		"172.15.255.255", "172.32.0.0", "192.167.255.255", "192.169.0.0", "198.17.255.255",
		"198.20.0.0", "223.255.255.255", "::ffff:8.8.8.8",
		"2606:4700:4700::1111", "2a00:1450:4001:81a::200e", "64:ff9b::808:808",
		"2002:808:808::1", "2001:200::1",
	}
	for _, s := range refused {
		err := CheckAddr(netip.MustParseAddr(s))
		if !errors.Is(err, ErrDestinationRefused) {
			t.Errorf("CheckAddr(%s) = %v, want refused", s, err)
		} else if !strings.Contains(err.Error(), "HERALD_ALLOW_PRIVATE_DESTINATIONS") {
			t.Errorf("CheckAddr(%s) error %q does not name the setting", s, err)
		}
	}
	for _, s := range allowed {
		if err := CheckAddr(netip.MustParseAddr(s)); err != nil {
			t.Errorf("CheckAddr(%s) = %v, want nil", s, err)
		}
	}
	if err := CheckAddr(netip.Addr{}); !errors.Is(err, ErrDestinationRefused) {
		t.Errorf("CheckAddr(zero Addr) = %v, want refused", err)
	}
}

func TestDialControl(t *testing.T) {
	if DialControl(true) != nil {
		t.Fatal("DialControl(true) must be nil: no check at all")
	}
	control := DialControl(false)
	for addr, ok := range map[string]bool{
		"127.0.0.1:80": false, "[::1]:443": false, "[::ffff:127.0.0.1]:80": false,
		"169.254.169.254:80": false, "[fe80::1%eth0]:80": false, "not an address": false,
		"8.8.8.8:443": true, "[2606:4700:4700::1111]:443": true,
	} {
		err := control(context.Background(), "tcp", addr, nil)
		if ok && err != nil {
			t.Errorf("control(%s) = %v, want nil", addr, err)
		}
		if !ok && !errors.Is(err, ErrDestinationRefused) {
			t.Errorf("control(%s) = %v, want ErrDestinationRefused", addr, err)
		}
	}
}
