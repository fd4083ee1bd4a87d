//go:build !unix

package main

import (
	"errors"
	"os"
)

// lockFile is not available here: errors.ErrUnsupported. Callers go on
// without the guarantees the lock gives (see its unix version).
func lockFile(string) (*os.File, error) { return nil, errors.ErrUnsupported }
