package archive

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/format"
)

// ddlColumn is a column of a CREATE EXTERNAL TABLE statement.
type ddlColumn struct{ name, typ string }

var ddlLine = regexp.MustCompile("^  `([^`]+)` ([a-z<>:,]+)[,)]$")

// parseDDL reads the data and partition columns of a statement TableDDL
// writes, from its text.
func parseDDL(t *testing.T, ddl string) (data, partition []ddlColumn) {
	t.Helper()
	in := &data
	for _, line := range strings.Split(ddl, "\n") {
		if line == "PARTITIONED BY (" {
			in = &partition
			continue
		}
		if m := ddlLine.FindStringSubmatch(line); m != nil {
			*in = append(*in, ddlColumn{m[1], m[2]})
		}
	}
	if len(data) == 0 || len(partition) == 0 {
		t.Fatalf("no columns read from:\n%s", ddl)
	}
	return data, partition
}

// writtenParquet writes a few events with the archive writer into a
// Parquet archive partitioned as the docs' example and returns the
// archive's folder and one data file's path.
func writtenParquet(t *testing.T) (root, file string) {
	t.Helper()
	ch, dir := newChannel(t)
	config := validConfig(t, ch, `{"format":"parquet","partition":[{"key":"env","field":"environment","default":"unknown"},{"key":"org","field":"organization.id"},{"key":"log_type","field":"log_type"}],"destination":{"type":"local","path":"logs"}}`)
	s := open(t, ch, config)
	e1 := ev("logs.app", 1, t0, `{"environment":"prod","organization":{"id":"acme"},"log_type":"app","msg":"x"}`)
	e1.Headers, e1.Type, e1.Key = map[string]string{"H": "v"}, "log.line", "k"
	e2 := ev("logs.app", 2, t0, "")
	e2.ContentType, e2.Payload = "application/octet-stream", []byte{1, 2}
	allDelivered(t, deliver(t, s, e1, e2))
	root = filepath.Join(dir, "logs")
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasSuffix(p, ".parquet") && file == "" {
			file = p
		}
		return err
	})
	if file == "" {
		t.Fatal("no Parquet file written")
	}
	return root, file
}

// TestTableDDL checks the Athena/Trino table definition against what the
// writer writes: its data columns are a written file's columns, in order,
// each of the Hive type the file's Parquet type maps to; its partition
// columns are the file's folders, in order (the date parts digits, for
// int); and docs/archive.md shows the statement as TableDDL writes it.
func TestTableDDL(t *testing.T) {
	t.Parallel()
	root, file := writtenParquet(t)
	ch := New(ChannelConfig{Dir: t.TempDir()}, nil, nil)
	c, err := parseConfig(validConfig(t, ch, `{"format":"parquet","partition":[{"key":"env","field":"environment"},{"key":"org","field":"organization.id"},{"key":"log_type","field":"log_type"}],"destination":{"type":"local"}}`))
	if err != nil {
		t.Fatal(err)
	}
	ddl := TableDDL("logs", "s3://herald-archive/prod/logs/", c)
	data, partition := parseDDL(t, ddl)

	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	info, _ := f.Stat()
	pf, err := parquet.OpenFile(f, info.Size())
	if err != nil {
		t.Fatal(err)
	}
	// The Hive type each Parquet type of the file maps to, written out
	// here rather than taken from hiveType.
	want := func(n parquet.Node) string {
		var logical format.LogicalTypeValue
		if lt := n.Type().LogicalType(); lt != nil {
			logical = lt.Value
		}
		switch logical.(type) {
		case *format.StringType:
			if n.Type().Kind() == parquet.ByteArray {
				return "string"
			}
		case *format.TimestampType:
			if n.Type().Kind() == parquet.Int64 {
				return "timestamp"
			}
		case *format.IntType, nil:
			if n.Type().Kind() == parquet.Int64 {
				return "bigint"
			}
		}
		return "unexpected " + n.Type().String()
	}
	fields := pf.Schema().Fields()
	if len(fields) != len(data) {
		t.Fatalf("the file has %d columns, the DDL %d:\n%s", len(fields), len(data), ddl)
	}
	for i, fld := range fields {
		if data[i].name != fld.Name() || data[i].typ != want(fld) {
			t.Errorf("column %d: the DDL says %s %s, the file has %s %s (%s)", i+1, data[i].name, data[i].typ, fld.Name(), want(fld), fld.Type())
		}
	}
	// The folders from the archive's root to the file: key=value each.
	rel, _ := filepath.Rel(root, filepath.Dir(file))
	folders := strings.Split(filepath.ToSlash(rel), "/")
	if len(folders) != len(partition) {
		t.Fatalf("the file is %d folders deep (%s), the DDL has %d partition columns", len(folders), rel, len(partition))
	}
	for i, folder := range folders {
		key, val, _ := strings.Cut(folder, "=")
		if key != partition[i].name {
			t.Errorf("folder %d is %s, the DDL's partition column %s", i+1, folder, partition[i].name)
		}
		if _, err := strconv.Atoi(val); partition[i].typ == "int" && err != nil {
			t.Errorf("folder %s: not an int, as the DDL declares", folder)
		}
	}

	// The docs show this statement.
	doc, err := os.ReadFile("../docs/archive.md")
	if err != nil {
		t.Fatal(err)
	}
	_, block, ok := strings.Cut(string(doc), "<!-- athena-ddl")
	if !ok {
		t.Fatal("docs/archive.md has no athena-ddl block")
	}
	_, block, _ = strings.Cut(block, "```sql\n")
	block, _, _ = strings.Cut(block, "```")
	var lines []string
	for _, l := range strings.SplitAfter(block, "\n") {
		if !strings.HasPrefix(l, "--") {
			lines = append(lines, l)
		}
	}
	if got := strings.Join(lines, ""); got != ddl {
		t.Errorf("docs/archive.md's table definition:\n%s\nTableDDL:\n%s", got, ddl)
	}
}
