package stream

import (
	"bytes"
	"net"
	"testing"
	"time"
)

// TestCorkedWriter checks that frames written while corked leave together
// at uncork, in order, that a batch larger than maxPending is not held in
// memory whole, and that a failed write fails every later one.
func TestCorkedWriter(t *testing.T) {
	server, client := net.Pipe()
	defer client.Close()
	w := &corkedWriter{nc: server, timeout: 5 * time.Second}

	got := make(chan []byte, 16)
	go func() {
		buf := make([]byte, 256<<10)
		for {
			n, err := client.Read(buf)
			if err != nil {
				close(got)
				return
			}
			got <- bytes.Clone(buf[:n])
		}
	}()
	recv := func() []byte {
		t.Helper()
		select {
		case b := <-got:
			return b
		case <-time.After(5 * time.Second):
			t.Fatal("nothing arrived")
			return nil
		}
	}

	w.cork()
	for _, s := range []string{"one,", "two,", "three"} {
		if _, err := w.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case b := <-got:
		t.Fatalf("%q left before uncork", b)
	default:
	}
	if err := w.uncork(); err != nil {
		t.Fatal(err)
	}
	if b := recv(); string(b) != "one,two,three" {
		t.Fatalf("after uncork got %q, want the three frames in one write", b)
	}

	// Uncorked, a write goes straight through.
	if _, err := w.Write([]byte("direct")); err != nil {
		t.Fatal(err)
	}
	if b := recv(); string(b) != "direct" {
		t.Fatalf("got %q", b)
	}

	// Corked, more than maxPending is sent as it grows, in order.
	w.cork()
	chunk := bytes.Repeat([]byte("x"), maxPending/2+1)
	go func() {
		for range 3 {
			_, _ = w.Write(chunk)
		}
		_ = w.uncork()
	}()
	var all []byte
	for len(all) < 3*len(chunk) {
		all = append(all, recv()...)
	}
	if !bytes.Equal(all, bytes.Repeat(chunk, 3)) {
		t.Fatalf("got %d bytes, want %d in order", len(all), 3*len(chunk))
	}

	// A failed write sticks.
	_ = client.Close()
	if _, err := w.Write([]byte("lost")); err == nil {
		t.Fatal("write to a closed peer succeeded")
	}
	w.cork()
	if _, err := w.Write([]byte("later")); err == nil {
		t.Fatal("a write after a failed one succeeded")
	}
	if err := w.uncork(); err == nil {
		t.Fatal("uncork after a failed write succeeded")
	}
}
