package bus

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// StoreLockFile is the file in the storage directory that the process
// serving the embedded NATS server holds an exclusive lock on.
const StoreLockFile = "store.lock"

// flock is syscall.Flock; tests replace it to play a file system that
// cannot lock.
var flock = syscall.Flock

// StoreHolder describes the process holding a storage directory, as it
// wrote itself into the lock file.
type StoreHolder struct {
	PID     int       `json:"pid"`
	Command string    `json:"command"`
	Host    string    `json:"host"`
	Started time.Time `json:"started"`
}

// String is "pid 123 (ingest) on host h since <time>".
func (h StoreHolder) String() string {
	if h.PID == 0 {
		return "another process (it has not written its details yet)"
	}
	s := fmt.Sprintf("pid %d", h.PID)
	if h.Command != "" {
		s += fmt.Sprintf(" (%s)", h.Command)
	}
	if h.Host != "" {
		s += " on host " + h.Host
	}
	if !h.Started.IsZero() {
		s += " since " + h.Started.UTC().Format(time.RFC3339)
	}
	return s
}

// StoreLockedError is LockStore's answer when another process holds the
// directory.
type StoreLockedError struct {
	Dir    string
	Holder StoreHolder
}

// Error names the directory and the holder in one line.
func (e *StoreLockedError) Error() string {
	return fmt.Sprintf("storage directory %q is locked by %s: only one process may serve a store; stop it first, or give this one another storage", e.Dir, e.Holder)
}

// StoreLock is an exclusive lock on a storage directory: while it is held,
// no other process (LockStore in this one included) gets it. It is an OS
// lock (flock) on StoreLockFile, so the kernel drops it when the holder
// exits, however it exits: a killed holder leaves no lock to clean up, and
// the file it leaves is simply locked again. The file is never removed
// (removing it would let two processes lock two different files).
type StoreLock struct {
	f   *os.File
	dir string
}

// LockStore takes the lock on dir (created if missing), without waiting,
// and records this process in the lock file as command (its program name
// when empty; never its arguments, which may hold secrets). It reads and writes nothing
// else in dir. A directory another process holds is a *StoreLockedError
// naming the holder; a file system that cannot lock (some network file
// systems) is an error naming the directory.
func LockStore(dir, command string) (*StoreLock, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("storage directory %q is not writable: %w", dir, err)
	}
	path := filepath.Join(dir, StoreLockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("storage directory %q: open lock file: %w", dir, unwrapPathErr(err))
	}
	if err := flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		defer f.Close()
		switch {
		case errors.Is(err, syscall.EWOULDBLOCK):
			return nil, &StoreLockedError{Dir: dir, Holder: readHolder(f)}
		case errors.Is(err, syscall.ENOLCK), errors.Is(err, syscall.EOPNOTSUPP),
			errors.Is(err, syscall.ENOTSUP), errors.Is(err, syscall.EINVAL):
			return nil, fmt.Errorf("storage directory %q: the file system cannot lock files (flock: %v); put storage on a local file system", dir, err)
		default:
			return nil, fmt.Errorf("storage directory %q: lock %s: %w", dir, StoreLockFile, err)
		}
	}
	l := &StoreLock{f: f, dir: dir}
	if command == "" {
		command = filepath.Base(os.Args[0])
	}
	if err := l.record(command); err != nil {
		l.Unlock()
		return nil, fmt.Errorf("storage directory %q: write lock file: %w", dir, err)
	}
	return l, nil
}

// record writes this process's details over whatever an earlier holder
// left.
func (l *StoreLock) record(command string) error {
	host, _ := os.Hostname() // the host is a courtesy in the message
	h := StoreHolder{PID: os.Getpid(), Command: command, Host: host, Started: time.Now().UTC()}
	data, err := json.Marshal(h)
	if err != nil {
		return err
	}
	if err := l.f.Truncate(0); err != nil {
		return err
	}
	if _, err := l.f.WriteAt(append(data, '\n'), 0); err != nil {
		return err
	}
	return l.f.Sync()
}

// Dir is the locked directory.
func (l *StoreLock) Dir() string { return l.dir }

// Unlock releases the lock. It is safe to call more than once and on nil.
func (l *StoreLock) Unlock() {
	if l == nil || l.f == nil {
		return
	}
	// Closing the only descriptor of the open file releases the flock.
	_ = l.f.Close()
	l.f = nil
}

// readHolder reads the holder's details; a file being written at this
// moment gives an empty holder, which says so.
func readHolder(f *os.File) StoreHolder {
	var h StoreHolder
	data, err := io.ReadAll(io.LimitReader(f, 64<<10))
	if err != nil {
		return h
	}
	if json.Unmarshal(data, &h) != nil {
		return StoreHolder{}
	}
	return h
}

func unwrapPathErr(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
