package archive

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// objects is where an archive's files live: a local folder or an S3
// bucket. Keys are slash-separated paths relative to the archive's root.
type objects interface {
	// Put stores data under key so that the object is visible only once
	// complete and durable when Put returns: a reader never sees part of
	// a file, and a crash never leaves one behind under its name.
	Put(ctx context.Context, key string, data []byte) error
	// Get returns the object; an error wrapping fs.ErrNotExist when there
	// is none.
	Get(ctx context.Context, key string) ([]byte, error)
	// Dirs returns the names of the folders directly under prefix (which
	// ends in "/" or is ""), sorted.
	Dirs(ctx context.Context, prefix string) ([]string, error)
	// Where names the destination for logs and errors.
	Where() string
}

// localObjects keeps files in a folder of the local disk.
type localObjects struct {
	root string
}

// Put writes data to a hidden temporary file in the key's folder, syncs
// it, renames it over the key's name and syncs the folder: the name then
// points at the whole file, durably. The temporary name starts with a dot
// and ends in ".tmp", so globs for *.parquet or *.jsonl.zst skip it.
func (l *localObjects) Put(ctx context.Context, key string, data []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	name := filepath.Join(l.root, filepath.FromSlash(key))
	dir := filepath.Dir(name)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("create folder %s: %w", dir, err)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(name)+".*.tmp")
	if err != nil {
		return fmt.Errorf("create temporary file in %s: %w", dir, err)
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp, err)
	}
	if err := os.Chmod(tmp, 0o640); err != nil {
		return fmt.Errorf("chmod %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, name); err != nil {
		return fmt.Errorf("rename %s: %w", tmp, err)
	}
	ok = true
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open folder %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, os.ErrInvalid) {
		return fmt.Errorf("sync folder %s: %w", dir, err)
	}
	return nil
}

func (l *localObjects) Get(ctx context.Context, key string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return os.ReadFile(filepath.Join(l.root, filepath.FromSlash(key)))
}

func (l *localObjects) Dirs(ctx context.Context, prefix string) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(filepath.Join(l.root, filepath.FromSlash(prefix)))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		if e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

func (l *localObjects) Where() string { return l.root }
