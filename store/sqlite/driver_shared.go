package sqlite

import (
	"context"
	"database/sql/driver"
)

// dsnConnector opens connections on a driver without the global registry.
type dsnConnector struct {
	dsn string
	drv driver.Driver
}

func (c dsnConnector) Connect(context.Context) (driver.Conn, error) { return c.drv.Open(c.dsn) }
func (c dsnConnector) Driver() driver.Driver                        { return c.drv }
