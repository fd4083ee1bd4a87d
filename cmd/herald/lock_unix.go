//go:build unix

package main

import (
	"errors"
	"os"
	"syscall"
)

// lockFile opens the file at path, creating it, and takes an exclusive
// lock on it without waiting: errLocked when another process holds it. The
// lock lasts until the file is closed or the process ends, however it ends
// (kill -9 included), so a lock never outlives its holder.
func lockFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, errLocked
		}
		return nil, err
	}
	return f, nil
}
