package bench

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/teleport-event-bus/teleport-event-bus/test/harness"
)

// tailLines is how many lines of each process's log a failure shows.
const tailLines = 15

// withLogs is err, the failure of a phase, with what is needed to
// diagnose it: the last lines of every process's log (tails), and where
// the logs are. A failed benchmark removes its temporary working
// directory when it ends, so unless the working directory is kept
// (BENCH_DIR, kept true) the log directories dirs are copied to a new
// directory that stays, and that one is named.
func withLogs(err error, kept bool, dirs []string, tails string) error {
	where := strings.Join(dirs, ", ")
	if !kept {
		var cerr error
		if where, cerr = copyLogs(dirs); cerr != nil {
			where = fmt.Sprintf("(not kept: %v; the working directory is removed; set BENCH_DIR to keep it)", cerr)
		}
	}
	return fmt.Errorf("%w\nlogs are in %s\n%s", err, where, tails)
}

// tails is the last lines of each process's log.
func tails(procs []*harness.Proc) string {
	var b strings.Builder
	for _, p := range procs {
		b.WriteString(p.Tail(tailLines))
		b.WriteString("\n")
	}
	return b.String()
}

// copyLogs copies the files of each directory of dirs into a new
// directory under the system's temporary directory, one subdirectory per
// source named after it and its parent (backfill-logs, nats-logs), and
// returns the new directory.
func copyLogs(dirs []string) (string, error) {
	dst, err := os.MkdirTemp("", "bench-logs-")
	if err != nil {
		return "", err
	}
	for i, src := range dirs {
		sub := filepath.Join(dst, fmt.Sprintf("%d-%s-%s", i+1, filepath.Base(filepath.Dir(src)), filepath.Base(src)))
		if err := copyDir(src, sub); err != nil {
			return "", err
		}
	}
	return dst, nil
}

// copyDir copies the regular files of src (not its subdirectories) into
// dst, which it creates.
func copyDir(src, dst string) error {
	entries, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		if err := copyFile(filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copy %s: %w", src, err)
	}
	return out.Close()
}
