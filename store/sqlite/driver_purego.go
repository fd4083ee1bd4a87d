//go:build !cgo

package sqlite

import (
	"database/sql"
	"errors"
	"fmt"
	"syscall"
	"time"

	msqlite "modernc.org/sqlite"
)

// Without cgo the store runs on modernc.org/sqlite, a pure-Go build of
// SQLite: slower (see docs/adr/0001-sqlite-driver.md) but it needs no C
// compiler, so `go run ./cmd/herald serve` works on a bare machine.

// driverName is reported in logs and metrics.
const driverName = "modernc.org/sqlite"

func openDB(dsn string) *sql.DB {
	return sql.OpenDB(dsnConnector{dsn: dsn, drv: &msqlite.Driver{}})
}

// driverParams sets the same connection settings as the cgo driver, in
// modernc's syntax. auto_vacuum comes before journal_mode, as there.
func driverParams(busy time.Duration, readOnly bool) string {
	p := fmt.Sprintf("_pragma=busy_timeout(%d)", busy.Milliseconds())
	if !readOnly {
		p += "&_pragma=auto_vacuum(incremental)"
	}
	p += "&_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_pragma=foreign_keys(1)"
	if readOnly {
		return p + "&_pragma=query_only(1)"
	}
	return p + "&_txlock=immediate"
}

// sqliteCode returns the extended SQLite result code in err's chain, or 0.
func sqliteCode(err error) int {
	if e, ok := errors.AsType[*msqlite.Error](err); ok {
		return e.Code()
	}
	return 0
}

// sqliteErrno returns 0: modernc.org/sqlite does not report the operating
// system's error behind an I/O error (a full disk still shows as
// SQLITE_FULL).
func sqliteErrno(error) syscall.Errno { return 0 }
