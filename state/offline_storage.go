package state

// Where the offline log's files live. OfflineLog keeps the layout (views,
// date directories, file names, deduplication) and reads and writes through
// an offlineStorage: a local directory (dirStorage, below) or an S3 bucket
// under a key prefix (s3Storage, offline_s3.go). Both hold the same tree
// under the same slash-separated paths, so a log can be copied from one to
// the other as it is.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
)

// offlineStorage holds files named by slash-separated paths relative to the
// log's root ("txn/date=2024-03-10/p0-….parquet"). A "directory" is a path
// prefix; it exists while something is under it (or, locally, while it is a
// directory).
type offlineStorage interface {
	// listTree lists the subdirectories of dir that keep accepts, each with
	// the regular files directly inside it, by name. Files directly in dir
	// and in deeper levels are not listed (a deeper level still makes its
	// subdirectory exist, with no files). A missing dir has none.
	listTree(ctx context.Context, dir string, keep func(sub string) bool) (map[string][]FileInfo, error)
	// listDir lists the regular files directly in dir, by name; an error
	// wrapping fs.ErrNotExist when dir does not exist.
	listDir(ctx context.Context, dir string) ([]FileInfo, error)
	// open opens the file at path for reading; sizeHint is its size when
	// listed (−1: unknown). It returns an error wrapping fs.ErrNotExist
	// when the file is gone. The file reads as it was when opened, or
	// fails with an unavailable error: never a mix of two versions. Its
	// other failures to read are unavailable errors too; io.EOF past its
	// end is not.
	open(ctx context.Context, path string, sizeHint int64) (offlineFile, error)
	// write writes the file at path whole through fn: readers see the old
	// file or the new one, and a crash leaves one of them (or nothing, for
	// a new path).
	write(ctx context.Context, path string, fn func(io.Writer) error) error
	// remove deletes files; missing ones are not an error.
	remove(ctx context.Context, paths []string) error
}

// unavailableError marks a failure to get a file's bytes, not a fault of
// the bytes themselves: a network error, a server error, throttling, a
// timeout, a refusal, a checksum that does not match, a file replaced
// while it was read, a local I/O error. A day read that meets one fails,
// to be retried later, rather than skip the file as unreadable — a skipped
// file would stay out of the batch data until the day's listing changes,
// which fixing the cause (a permission, a credential, the network) does not
// do.
type unavailableError struct{ err error }

func (e *unavailableError) Error() string { return "storage unavailable: " + e.err.Error() }
func (e *unavailableError) Unwrap() error { return e.err }

// unavailable returns the storage failure in err, or nil.
func unavailable(err error) error {
	var u *unavailableError
	if errors.As(err, &u) {
		return u
	}
	return nil
}

// trackedFile remembers the first storage failure of a file's reads, which
// the Parquet reader would otherwise report as a damaged file.
type trackedFile struct {
	offlineFile
	failed error
}

func (f *trackedFile) ReadAt(p []byte, off int64) (int, error) {
	n, err := f.offlineFile.ReadAt(p, off)
	if err != nil && f.failed == nil {
		f.failed = unavailable(err)
	}
	return n, err
}

// offlineFile is an open file of the log.
type offlineFile interface {
	io.ReaderAt
	// Size is the file's size in bytes when it was opened.
	Size() int64
	Close() error
}

// dirStorage is the offline log in a local directory. Files are replaced
// only by rename, so a reader sees a file whole or not at all; every change
// is fsynced with its directory.
type dirStorage struct {
	root string
}

func (d *dirStorage) full(rel string) string { return filepath.Join(d.root, filepath.FromSlash(rel)) }

func (d *dirStorage) listTree(_ context.Context, dir string, keep func(string) bool) (map[string][]FileInfo, error) {
	full := d.full(dir)
	ents, err := os.ReadDir(full)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	out := map[string][]FileInfo{}
	for _, e := range ents {
		if !e.IsDir() || !keep(e.Name()) {
			continue
		}
		files, err := listLocalDir(filepath.Join(full, e.Name()))
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed since the listing
		}
		if err != nil {
			return nil, err
		}
		out[e.Name()] = files
	}
	return out, nil
}

func (d *dirStorage) listDir(_ context.Context, dir string) ([]FileInfo, error) {
	return listLocalDir(d.full(dir))
}

// listLocalDir lists the regular files of a directory, by name.
func listLocalDir(dir string) ([]FileInfo, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var files []FileInfo
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		info, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		files = append(files, FileInfo{Name: e.Name(), Size: info.Size(), ModTime: info.ModTime().UnixNano()})
	}
	return files, nil // os.ReadDir sorts by name
}

// localFile is an open local file.
type localFile struct {
	*os.File
	size int64
}

func (f localFile) Size() int64 { return f.size }

// ReadAt reads from the file; an I/O error is an unavailable error. io.EOF
// and a negative offset are the reader's, asking outside the file (a
// damaged Parquet footer does).
func (f localFile) ReadAt(p []byte, off int64) (int, error) {
	n, err := f.File.ReadAt(p, off)
	if err != nil && err != io.EOF && off >= 0 {
		err = &unavailableError{err}
	}
	return n, err
}

func (d *dirStorage) open(_ context.Context, path string, _ int64) (offlineFile, error) {
	f, err := os.Open(d.full(path))
	if err != nil {
		return nil, err
	}
	info, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("stat: %w", err)
	}
	return localFile{f, info.Size()}, nil
}

// write writes path through a temp file beside it: write, fsync, rename,
// fsync the directory. A new date (or view) directory is synced into its
// parent too.
func (d *dirStorage) write(_ context.Context, path string, fn func(io.Writer) error) error {
	full := d.full(path)
	dir := filepath.Dir(full)
	if err := d.mkdirs(dir); err != nil {
		return err
	}
	// One writer per (view, partition) owns this name, so the temp name can
	// be fixed: a retry after a crash overwrites the leftover.
	tmp := filepath.Join(dir, "."+filepath.Base(full)+".tmp")
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	err = fn(f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, full)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(dir)
}

// mkdirs creates dir and the missing directories above it (up to the
// root), syncing each new one into its parent.
func (d *dirStorage) mkdirs(dir string) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if filepath.Clean(dir) != filepath.Clean(d.root) {
		if err := d.mkdirs(filepath.Dir(dir)); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return syncDir(filepath.Dir(dir))
}

// remove deletes the files and syncs the directories that held them.
func (d *dirStorage) remove(_ context.Context, paths []string) error {
	dirs := map[string]bool{}
	for _, p := range paths {
		full := d.full(p)
		if err := os.Remove(full); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			return fmt.Errorf("remove %s: %w", p, err)
		}
		dirs[filepath.Dir(full)] = true
	}
	for _, dir := range slices.Sorted(maps.Keys(dirs)) {
		if err := syncDir(dir); err != nil {
			return err
		}
	}
	return nil
}

// syncDir fsyncs a directory so that renames and removals in it are durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// openedFile is the result of opening one file of a day.
type openedFile struct {
	f   offlineFile
	err error
}

// openAhead opens the files of one directory in order for a reader that
// takes them one by one with next: with ahead > 0 it opens up to ahead files
// beyond the one being read, concurrently (an S3 download overlaps the
// decoding of the file before). stop closes what was opened and not taken,
// and returns after every goroutine it started has exited; the reader
// closes the files it took.
func openAhead(store offlineStorage, dir string, files []FileInfo, ahead int) (next func() openedFile, stop func()) {
	open := func(ctx context.Context, f FileInfo) openedFile {
		of, err := store.open(ctx, dir+"/"+f.Name, f.Size)
		return openedFile{of, err}
	}
	i := 0
	if ahead <= 0 || len(files) < 2 {
		return func() openedFile {
			i++
			return open(context.Background(), files[i-1])
		}, func() {}
	}
	ctx, cancel := context.WithCancel(context.Background())
	results := make([]chan openedFile, len(files))
	for j := range results {
		results[j] = make(chan openedFile, 1)
	}
	// slots bounds the files opened and not yet done with: the one being
	// read and ahead more. next frees the slot of the file read before.
	slots := make(chan struct{}, ahead+1)
	quit := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for j, f := range files {
			select {
			case slots <- struct{}{}:
			case <-quit:
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				results[j] <- open(ctx, f)
			}()
		}
	}()
	next = func() openedFile {
		if i > 0 {
			<-slots
		}
		i++
		return <-results[i-1]
	}
	stop = func() {
		close(quit)
		cancel()
		wg.Wait()
		for _, ch := range results[i:] {
			select {
			case o := <-ch:
				if o.f != nil {
					o.f.Close()
				}
			default:
			}
		}
	}
	return next, stop
}
