package archive

import (
	"fmt"
	"strings"

	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/format"
)

// TableDDL returns the Athena (Hive DDL) and Trino (Hive connector)
// definition of a table over an archive's Parquet files at location (the
// archive's folder, ending in "/"): the event columns as the writer
// writes them, derived from the same Parquet schema, then the archive's
// partition keys and year, month, day and hour as partition columns. It
// does not declare the typed "payload" column of topics with a schema
// (docs/archive.md shows how). Every identifier is quoted with
// backquotes, since some (time, key) are reserved words there.
func TableDDL(table, location string, c Config) string {
	var b strings.Builder
	fmt.Fprintf(&b, "CREATE EXTERNAL TABLE %s (\n", quoteIdent(table))
	for i, f := range eventColumns {
		sep := ",\n"
		if i == len(eventColumns)-1 {
			sep = ")\n"
		}
		fmt.Fprintf(&b, "  %s %s%s", quoteIdent(f.Name()), hiveType(f), sep)
	}
	b.WriteString("PARTITIONED BY (\n")
	for _, k := range c.Partition {
		fmt.Fprintf(&b, "  %s string,\n", quoteIdent(k.Key))
	}
	b.WriteString("  `year` int,\n  `month` int,\n  `day` int,\n  `hour` int)\n")
	b.WriteString("STORED AS PARQUET\n")
	fmt.Fprintf(&b, "LOCATION '%s';\n", strings.ReplaceAll(location, "'", "''"))
	return b.String()
}

func quoteIdent(s string) string { return "`" + strings.ReplaceAll(s, "`", "``") + "`" }

// hiveType is the Hive type of a Parquet column: what Athena and Trino
// map it to when they read the file.
func hiveType(n parquet.Node) string {
	if !n.Leaf() {
		if lt := n.Type().LogicalType(); lt != nil {
			if _, ok := lt.Value.(*format.ListType); ok {
				// LIST: a repeated group "list" of one "element".
				return "array<" + hiveType(n.Fields()[0].Fields()[0]) + ">"
			}
		}
		var parts []string
		for _, f := range n.Fields() {
			parts = append(parts, f.Name()+":"+hiveType(f))
		}
		return "struct<" + strings.Join(parts, ",") + ">"
	}
	if lt := n.Type().LogicalType(); lt != nil {
		switch lt.Value.(type) {
		case *format.StringType, *format.JsonType, *format.EnumType:
			return "string"
		case *format.TimestampType:
			return "timestamp"
		}
	}
	switch n.Type().Kind() {
	case parquet.Boolean:
		return "boolean"
	case parquet.Int32:
		return "int"
	case parquet.Int64:
		return "bigint"
	case parquet.Float:
		return "float"
	case parquet.Double:
		return "double"
	}
	return "binary"
}
