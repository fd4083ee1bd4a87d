//go:build !unix

package main

import "log/slog"

// warnOpenFiles has no limit to check on this system.
func warnOpenFiles(*slog.Logger, Config) {}
