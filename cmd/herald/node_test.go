package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A node keeps its id in data-dir across restarts, and no two running
// processes get the same one: a second process on the data-dir gets its
// own; node-id overrides.
func TestNodeIDKeptInDataDir(t *testing.T) {
	dir := t.TempDir()
	node := func(configured string) (*Main, string) {
		m := &Main{Config: DefaultConfig(), Logger: slog.New(slog.DiscardHandler)}
		m.Config.DataDir, m.Config.NodeID = dir, configured
		id := m.nodeID()
		if !validNodeID(id) {
			t.Fatalf("node id %q is not valid", id)
		}
		t.Cleanup(func() { release(m) })
		return m, id
	}
	first, id := node("")
	if b, err := os.ReadFile(filepath.Join(dir, nodeIDFile)); err != nil || strings.TrimSpace(string(b)) != id {
		t.Fatalf("data-dir/node-id holds %q (%v), want %q", b, err, id)
	}
	if _, other := node(""); other == id {
		t.Fatalf("a second process on the data-dir got the running one's id %q", id)
	}
	if _, set := node("n1"); set != "n1" {
		t.Fatalf("with node-id n1 the id is %q", set)
	}
	release(first)
	if _, again := node(""); again != id {
		t.Fatalf("after a restart the id is %q, want the kept %q", again, id)
	}
}

func release(m *Main) {
	for _, f := range m.locks {
		_ = f.Close()
	}
	m.locks = nil
}

// A second server of one SQLite database refuses to start: it would take
// the first one's dispatch leases.
func TestSecondServerOfASQLiteDatabaseRefused(t *testing.T) {
	dir := t.TempDir()
	testServer(t, dir, nil)
	m := NewMain(io.Discard, io.Discard, func(string) string { return "" })
	m.Config.Addr, m.Config.DataDir, m.Config.AdminKey = "127.0.0.1:0", dir, testAdminKey
	err := m.Run(t.Context())
	if err == nil {
		_ = m.Close(context.Background())
		t.Fatal("a second server of the SQLite database started")
	}
	if want := "is served by another herald process"; !strings.Contains(err.Error(), want) {
		t.Fatalf("Run = %v, want an error saying it %s", err, want)
	}
}
