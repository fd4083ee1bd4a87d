package main

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"

	"github.com/heraldhq/herald/cluster"
)

// errLocked is lockFile's error when another process holds the lock.
var errLocked = errors.New("locked by another process")

// lockSQLite makes this process the only server of the SQLite database at
// path, with a lock on path+".lock" held while it runs: another `herald
// serve` of the database fails to start rather than dispatch beside it,
// and this one may end every dispatch lease when it starts (exclusive),
// since whoever held one is gone. `herald migrate` takes no lock. Where
// file locks are not available, exclusive is false: leases left by a
// killed process then run out before their subscriptions move on.
func (m *Main) lockSQLite(path string) (exclusive bool, err error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return false, fmt.Errorf("create the directory of the SQLite database %s: %w", path, err)
	}
	f, err := lockFile(path + ".lock")
	switch {
	case errors.Is(err, errLocked):
		return false, fmt.Errorf("the SQLite database %s is served by another herald process, which holds %s.lock: stop it first, or give this one its own data-dir", path, path)
	case errors.Is(err, errors.ErrUnsupported):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("lock the SQLite database %s: %w", path, err)
	}
	m.locks = append(m.locks, f)
	return true, nil
}

// nodeIDFile is the file in data-dir that keeps the node's id.
const nodeIDFile = "node-id"

// nodeID returns the name this node dispatches and joins the cluster
// under: the node-id setting, else the id kept in data-dir/node-id (made
// at the first start), locked while the process runs so that no other
// process takes it. Under a name that stays, a restarted node takes back
// its dispatch leases at once instead of waiting for them to run out.
// When the file is locked by another process (several nodes started with
// one data-dir) or cannot be written, the process gets a name of its own,
// which does not outlive it.
func (m *Main) nodeID() string {
	if m.Config.NodeID != "" {
		return m.Config.NodeID
	}
	id, err := m.keptNodeID()
	if err != nil {
		id = cluster.NewNodeID()
		m.Logger.Warn("no node id kept in data-dir: this process takes one of its own, and after a restart its subscriptions wait for its leases to run out; set node-id or give each node its own data-dir",
			"node_id", id, "err", err)
	}
	return id
}

// keptNodeID reads (or makes) the id in data-dir/node-id and keeps the
// file locked.
func (m *Main) keptNodeID() (string, error) {
	if err := os.MkdirAll(m.Config.DataDir, 0o750); err != nil {
		return "", err
	}
	path := filepath.Join(m.Config.DataDir, nodeIDFile)
	f, err := lockFile(path)
	switch {
	case errors.Is(err, errLocked):
		return "", fmt.Errorf("%s is in use by another herald process", path)
	case err != nil:
		return "", err
	}
	id, err := readOrMakeNodeID(f)
	if err != nil {
		_ = f.Close()
		return "", fmt.Errorf("%s: %w", path, err)
	}
	m.locks = append(m.locks, f)
	return id, nil
}

// readOrMakeNodeID returns the id the file holds, or writes a new one when
// it holds none (or one that is not valid).
func readOrMakeNodeID(f *os.File) (string, error) {
	b, err := io.ReadAll(io.LimitReader(f, 1024))
	if err != nil {
		return "", err
	}
	if id := strings.TrimSpace(string(b)); validNodeID(id) {
		return id, nil
	}
	id := newNodeID()
	if err := f.Truncate(0); err != nil {
		return "", err
	}
	if _, err := f.WriteAt([]byte(id+"\n"), 0); err != nil {
		return "", err
	}
	return id, f.Sync()
}

// newNodeID makes an id to keep: the host name, cut to what validNodeID
// accepts, and a random suffix.
func newNodeID() string {
	host, _ := os.Hostname()
	host = strings.Map(func(r rune) rune {
		if r < 128 && validNodeID(string(r)) {
			return r
		}
		return '-'
	}, host)
	if host == "" {
		host = "node"
	}
	return fmt.Sprintf("%.40s-%08x", host, rand.Uint32())
}
