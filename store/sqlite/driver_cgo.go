//go:build cgo

package sqlite

import (
	"database/sql"
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/mattn/go-sqlite3"
)

// With cgo the store runs on github.com/mattn/go-sqlite3, measured faster
// than the pure-Go driver (docs/adr/0001-sqlite-driver.md). Without cgo it
// falls back to modernc.org/sqlite (driver_purego.go), so `go run` works on
// a machine with no C compiler. Everything driver-specific is in these two
// files.

// driverName is reported in logs and metrics.
const driverName = "mattn/go-sqlite3"

// openDB returns a pool on the driver without going through the global
// driver registry.
func openDB(dsn string) *sql.DB {
	return sql.OpenDB(dsnConnector{dsn: dsn, drv: &sqlite3.SQLiteDriver{}})
}

func driverParams(busy time.Duration, readOnly bool) string {
	q := fmt.Sprintf("_busy_timeout=%d&_journal_mode=WAL&_synchronous=FULL&_foreign_keys=1", busy.Milliseconds())
	if readOnly {
		return q + "&_query_only=1"
	}
	return q + "&_txlock=immediate&_auto_vacuum=incremental"
}

// sqliteCode returns the extended SQLite result code in err's chain, or 0.
func sqliteCode(err error) int {
	if e, ok := errors.AsType[sqlite3.Error](err); ok {
		return int(e.ExtendedCode)
	}
	return 0
}

// sqliteErrno returns the operating system's error behind an SQLite I/O
// error in err's chain (ENOSPC, EIO...), or 0.
func sqliteErrno(err error) syscall.Errno {
	if e, ok := errors.AsType[sqlite3.Error](err); ok {
		return e.SystemErrno
	}
	return 0
}
