package smtptest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

// MailpitVersion is the Mailpit that .ci/run installs (the binary built
// from its Go module) and HERALD_TEST_MAILPIT names.
const MailpitVersion = "v1.33.1"

// Mailpit is a Mailpit process a test started: its SMTP address and its
// HTTP API.
type Mailpit struct {
	Host string // SMTP host
	Port int    // SMTP port
	API  string // base URL of the HTTP API, http://127.0.0.1:port
}

// SMTP returns the SMTP address, host:port.
func (m *Mailpit) SMTP() string { return net.JoinHostPort(m.Host, strconv.Itoa(m.Port)) }

// StartMailpit runs the Mailpit binary that HERALD_TEST_MAILPIT names
// (.ci/run builds it from the Go module with go install) on free loopback
// ports, keeping every message (--max 0) in a database in the test's
// temporary directory, and stops it when the test ends. Without the
// variable the test skips and names it.
//
// Mailpit cannot run inside the test's process: its server and store
// are internal packages driven by process-wide settings, and it can
// neither stop nor say which port it took. So the ports are found free
// here and handed to it, and a start that lost one to another process
// is retried on others.
func StartMailpit(t testing.TB, getenv func(string) string) *Mailpit {
	t.Helper()
	bin := getenv("HERALD_TEST_MAILPIT")
	if bin == "" {
		t.Skip("HERALD_TEST_MAILPIT is not set (GOBIN=DIR go install github.com/axllent/mailpit@" + MailpitVersion + "; .ci/run does)")
	}
	var errs []error
	for attempt := range 5 {
		m, err := startMailpit(t, bin, filepath.Join(t.TempDir(), "mailpit-"+strconv.Itoa(attempt)+".db"))
		if err == nil {
			return m
		}
		errs = append(errs, err)
	}
	t.Fatalf("start mailpit: %v", errors.Join(errs...))
	return nil
}

// freePort returns a loopback port that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func startMailpit(t testing.TB, bin, db string) (*Mailpit, error) {
	smtpPort, err := freePort()
	if err != nil {
		return nil, err
	}
	httpPort, err := freePort()
	if err != nil {
		return nil, err
	}
	m := &Mailpit{Host: "127.0.0.1", Port: smtpPort, API: "http://127.0.0.1:" + strconv.Itoa(httpPort)}
	cmd := exec.Command(bin, "--smtp", m.SMTP(), "--listen", "127.0.0.1:"+strconv.Itoa(httpPort),
		"--database", db, "--max", "0", "--quiet", "--disable-version-check", "--smtp-disable-rdns")
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	stop := func() {
		_ = cmd.Process.Kill()
		<-exited
	}
	// A loaded machine may take long to start it: wait for its API and
	// its SMTP port, or for it to exit (a port taken meanwhile).
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	hc := &http.Client{Timeout: 5 * time.Second}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if mailpitUp(ctx, hc, m) {
			t.Cleanup(stop)
			return m, nil
		}
		select {
		case <-exited:
			return nil, fmt.Errorf("mailpit exited: %s", out.String())
		case <-ctx.Done():
			stop()
			return nil, fmt.Errorf("mailpit did not answer in 2 minutes: %s", out.String())
		case <-tick.C:
		}
	}
}

func mailpitUp(ctx context.Context, hc *http.Client, m *Mailpit) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, m.API+"/api/v1/info", nil)
	if err != nil {
		return false
	}
	resp, err := hc.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false
	}
	c, err := (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, "tcp", m.SMTP())
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// syncBuffer is a bytes.Buffer that the process's output and the test
// may use at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
