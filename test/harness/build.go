package harness

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
)

// Commands are the binaries the harness runs, by name.
var Commands = []string{"ingest", "fluentd-sink", "configure", "teleport-sim", "fluentd-sim", "nats-server", "audit-tail", "demo"}

// packages maps a command to its package path in the module.
var packages = map[string]string{
	"ingest":       "./cmd/ingest",
	"fluentd-sink": "./cmd/fluentd-sink",
	"configure":    "./cmd/configure",
	"teleport-sim": "./test/cmd/teleport-sim",
	"fluentd-sim":  "./test/cmd/fluentd-sim",
	"nats-server":  "./test/cmd/nats-server",
	"audit-tail":   "./test/cmd/audit-tail",
	"demo":         "./test/cmd/demo",
}

// RepoRoot finds the module root above the working directory.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod above the working directory")
		}
		dir = parent
	}
}

// Build compiles the named commands (all of Commands when none are named)
// into outDir with one `go build`, so the build cache does the rest.
func Build(ctx context.Context, outDir string, names ...string) error {
	root, err := RepoRoot()
	if err != nil {
		return err
	}
	if len(names) == 0 {
		names = Commands
	}
	args := []string{"build", "-o", outDir + string(filepath.Separator)}
	for _, n := range names {
		pkg, ok := packages[n]
		if !ok {
			return fmt.Errorf("build: unknown command %q", n)
		}
		args = append(args, pkg)
	}
	cmd := exec.CommandContext(ctx, filepath.Join(runtime.GOROOT(), "bin", "go"), args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %v: %w\n%s", names, err, out)
	}
	return nil
}
