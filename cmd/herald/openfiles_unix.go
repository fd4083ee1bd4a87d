//go:build unix

package main

import (
	"log/slog"
	"syscall"
)

// openFilesReserve is what Herald keeps open besides client connections and
// webhook requests: the store's files and connections, the listeners, the
// runtime's poller.
const openFilesReserve = 64

// warnOpenFiles warns when the connections the settings allow could exceed
// the process's open-file limit (which Go raises to its hard limit at
// start). Past it, accepting fails with "too many open files", and no one,
// admins included, can connect: http.max-conns should keep clients below
// it.
func warnOpenFiles(log *slog.Logger, c Config) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return
	}
	need := uint64(c.HTTPMaxConns) + uint64(c.WebhookMaxConcurrency) + openFilesReserve
	if lim.Cur < need {
		log.Warn("the open-file limit is below what the settings allow: lower http.max-conns (or webhook.max-concurrency), or raise the limit (ulimit -n, systemd LimitNOFILE)",
			"open_file_limit", lim.Cur, "http_max_conns", c.HTTPMaxConns, "webhook_max_concurrency", c.WebhookMaxConcurrency, "needed", need)
	}
}
