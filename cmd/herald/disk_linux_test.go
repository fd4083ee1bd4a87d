//go:build linux

package main

import (
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/heraldhq/herald/client"
)

// TestFullDisk serves from a small tmpfs and fills it: publishes are
// refused with a 503 problem that says "disk full" and shows no path,
// /readyz turns 503 with the same reason, and once space is freed both
// recover. It needs to mount a tmpfs (root, or CAP_SYS_ADMIN) and skips
// otherwise; store/sqlite's TestFullDiskIsClassified covers the
// classification everywhere.
func TestFullDisk(t *testing.T) {
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=8m,mode=0700"); err != nil {
		t.Skipf("cannot mount a tmpfs for a full disk (needs root or CAP_SYS_ADMIN): %v", err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(dir, syscall.MNT_DETACH) })
	m, _ := testServer(t, dir, nil)
	ctx := t.Context()
	ac := adminClient(m)
	if _, _, err := ac.PutTopic(ctx, "orders", client.TopicSettings{}); err != nil {
		t.Fatal(err)
	}
	readyz := func() (int, string) {
		resp, err := http.Get(m.URL() + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if code, body := readyz(); code != 200 {
		t.Fatalf("/readyz = %d %s before the disk is full", code, body)
	}

	filler := filepath.Join(dir, "filler")
	fillDisk(t, filler)
	payload := []byte(`{"pad":"` + strings.Repeat("x", 32<<10) + `"}`)
	var problem *client.Problem
	for i := 0; problem == nil; i++ {
		_, err := ac.Publish(ctx, "orders", payload, client.PublishOptions{ContentType: "application/json"})
		switch {
		case errors.As(err, &problem):
		case err != nil:
			t.Fatalf("publish %d on a full disk: %v", i, err)
		case i == 1000:
			t.Fatal("1000 publishes of 32 KiB succeeded on a full 8 MiB disk")
		}
	}
	if problem.Status != 503 || !strings.Contains(problem.Detail, "disk full") || strings.Contains(problem.Detail, dir) {
		t.Fatalf("publish on a full disk: %d %q; want 503 saying \"disk full\", without the path", problem.Status, problem.Detail)
	}
	code, body := readyz()
	if code != 503 || !strings.Contains(body, "disk full") || strings.Contains(body, dir) {
		t.Fatalf("/readyz on a full disk = %d %s; want 503 saying \"disk full\", without the path", code, body)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if _, err := ac.Publish(ctx, "orders", payload, client.PublishOptions{ContentType: "application/json"}); err != nil {
		t.Fatalf("publish once space is freed: %v", err)
	}
	if code, body := readyz(); code != 200 {
		t.Fatalf("/readyz = %d %s once a commit succeeded again", code, body)
	}
}

// fillDisk writes the file until its file system has no room left.
func fillDisk(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, size := range []int{1 << 20, 64 << 10, 4 << 10, 1} {
		buf := make([]byte, size)
		for {
			if _, err := f.Write(buf); err != nil {
				if !errors.Is(err, syscall.ENOSPC) {
					t.Fatalf("fill the disk: %v", err)
				}
				break
			}
		}
	}
}
