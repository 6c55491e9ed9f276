package bus

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/rs/zerolog"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
	"github.com/teleport-event-bus/teleport-event-bus/test/fsdigest"
)

// holdLockEnv makes the test binary a child that holds a storage lock
// (TestHelperHoldStoreLock) until its stdin closes or it is killed.
const holdLockEnv = "BUS_TEST_HOLD_STORE_LOCK"

func TestHelperHoldStoreLock(t *testing.T) {
	dir := os.Getenv(holdLockEnv)
	if dir == "" {
		t.Skip("only runs as the child of TestStoreLockHeldByAnotherProcess")
	}
	l, err := LockStore(dir, "lock-holder")
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(3)
	}
	fmt.Println("locked")
	// Hold until the parent closes stdin or kills this process.
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	l.Unlock()
	os.Exit(0)
}

func TestStoreLockTwiceInOneProcess(t *testing.T) {
	dir := t.TempDir()
	first, err := LockStore(dir, "first")
	if err != nil {
		t.Fatalf("first lock: %v", err)
	}
	// A second descriptor of the same file: flock locks belong to the open
	// file, so this one is refused even in the same process.
	_, err = LockStore(dir, "second")
	var le *StoreLockedError
	if !errors.As(err, &le) {
		t.Fatalf("second lock: got %v, want a StoreLockedError", err)
	}
	if le.Holder.PID != os.Getpid() || le.Holder.Command != "first" {
		t.Errorf("holder = %+v, want pid %d command first", le.Holder, os.Getpid())
	}
	want := fmt.Sprintf("storage directory %q is locked by pid %d (first) on host ", dir, os.Getpid())
	if !strings.HasPrefix(err.Error(), want) {
		t.Errorf("error %q\ndoes not start with %q", err, want)
	}
	first.Unlock()
	first.Unlock() // twice is harmless
	again, err := LockStore(dir, "third")
	if err != nil {
		t.Fatalf("lock after unlock: %v", err)
	}
	again.Unlock()
}

func TestStoreLockHeldByAnotherProcess(t *testing.T) {
	dir := t.TempDir()
	child := exec.Command(os.Args[0], "-test.run=^TestHelperHoldStoreLock$")
	child.Env = append(os.Environ(), holdLockEnv+"="+dir)
	stdin, err := child.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = stdin.Close()
		_ = child.Process.Kill()
		_ = child.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "locked" {
		t.Fatalf("child: %q, %v", line, err)
	}

	_, err = LockStore(dir, "ingest")
	var le *StoreLockedError
	if !errors.As(err, &le) {
		t.Fatalf("lock held by the child: got %v, want a StoreLockedError", err)
	}
	if le.Holder.PID != child.Process.Pid || le.Holder.Command != "lock-holder" {
		t.Fatalf("holder = %+v, want the child, pid %d (lock-holder)", le.Holder, child.Process.Pid)
	}
	t.Logf("error: %v", err)

	// kill -9: the kernel drops the lock; the file, naming a dead pid,
	// is simply locked again.
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = child.Wait() // killed: the exit status is the signal
	before, err := os.ReadFile(filepath.Join(dir, StoreLockFile))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(before), fmt.Sprintf(`"pid":%d`, child.Process.Pid)) {
		t.Fatalf("lock file after the kill = %q, want the dead child's pid", before)
	}
	l, err := LockStore(dir, "after-kill")
	if err != nil {
		t.Fatalf("lock after kill -9 of the holder: %v", err)
	}
	defer l.Unlock()
	after, err := os.ReadFile(filepath.Join(dir, StoreLockFile))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(after), fmt.Sprintf(`"pid":%d`, os.Getpid())) || !strings.Contains(string(after), "after-kill") {
		t.Fatalf("lock file = %q, want this process as holder", after)
	}
}

func TestStoreLockFileSystemCannotLock(t *testing.T) {
	for _, errno := range []syscall.Errno{syscall.ENOLCK, syscall.EOPNOTSUPP, syscall.EINVAL} {
		t.Run(errno.Error(), func(t *testing.T) {
			orig := flock
			flock = func(int, int) error { return errno }
			t.Cleanup(func() { flock = orig })
			dir := t.TempDir()
			_, err := StartEmbedded(testCtx(t), EmbeddedOptions{Listen: "127.0.0.1:0", StoreDir: dir, Log: zerolog.Nop()})
			if err == nil {
				t.Fatal("StartEmbedded succeeded on a file system that cannot lock")
			}
			want := fmt.Sprintf("start embedded NATS server: storage directory %q: the file system cannot lock files (flock: %v); put storage on a local file system", dir, errno)
			if err.Error() != want {
				t.Fatalf("error:\n %s\nwant\n %s", err, want)
			}
			if _, err := os.Stat(filepath.Join(dir, "jetstream")); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("jetstream directory created anyway (%v)", err)
			}
		})
	}
}

// TestEmbeddedOnLockedStoreTouchesNothing fills a store, locks it from a
// second descriptor and checks that StartEmbedded and Open refuse it
// naming the holder, and leave every file as it was.
func TestEmbeddedOnLockedStoreTouchesNothing(t *testing.T) {
	storage := t.TempDir()
	b, err := Open(testCtx(t), config.NATSConfig{Listen: "127.0.0.1:0"}, storage, "filler", zerolog.Nop(), true)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.EnsureStreams(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if _, err := b.State(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	b.Close()

	held, err := LockStore(storage, "holder")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Unlock()
	before := treeDigest(t, storage)

	_, err = Open(testCtx(t), config.NATSConfig{Listen: "127.0.0.1:0"}, storage, "ingest", zerolog.Nop(), true)
	var le *StoreLockedError
	if !errors.As(err, &le) {
		t.Fatalf("Open on a locked store: got %v, want a StoreLockedError", err)
	}
	want := fmt.Sprintf("start embedded NATS server: storage directory %q is locked by pid %d (holder)", storage, os.Getpid())
	if !strings.HasPrefix(err.Error(), want) {
		t.Errorf("error %q\ndoes not start with %q", err, want)
	}
	if after := treeDigest(t, storage); after != before {
		t.Errorf("the locked store changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// treeDigest is fsdigest.Tree of dir.
func treeDigest(t *testing.T, dir string) string {
	t.Helper()
	d, err := fsdigest.Tree(dir)
	if err != nil {
		t.Fatal(err)
	}
	return d
}
