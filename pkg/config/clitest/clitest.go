// Package clitest checks a command built on pkg/config the way a user meets
// it: it builds the binary, runs it with a clean environment, and checks
// `version`, `--help` (every flag, its environment variables and default)
// and the one-line error of a bad flag. Each cmd/* test calls Binary and
// adds its own bad-input cases with Exec.
package clitest

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
)

// Build compiles the command in the current directory into a temporary
// directory and returns the binary's path. It skips in -short mode.
func Build(t *testing.T, program string) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), program)
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// Exec runs the binary without any FDFWD_/FDWRD_ variables of the test's
// environment and returns its stdout, stderr and exit status.
func Exec(t *testing.T, bin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "FDFWD_") && !strings.HasPrefix(kv, "FDWRD_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("run %s: %v", bin, err)
	}
	return out.String(), errOut.String(), cmd.ProcessState.ExitCode()
}

var envName = regexp.MustCompile(`\$([A-Z0-9_]+)`)

// Binary checks what every command must do: `version` and `--version`
// print the program, version and commit; `--help` names every flag of cmd
// with its environment variables and default; an unknown flag is one line
// on stderr and exit 2.
func Binary(t *testing.T, bin, program string, cmd config.Command) {
	t.Run("version", func(t *testing.T) {
		for _, args := range [][]string{{"version"}, {"--version"}} {
			out, errOut, code := Exec(t, bin, args...)
			if code != 0 || !strings.HasPrefix(out, program+" dev (commit unknown, go") || errOut != "" {
				t.Errorf("%v: exit %d stdout %q stderr %q", args, code, out, errOut)
			}
		}
	})

	t.Run("help names every flag, variable and default", func(t *testing.T) {
		out, _, code := Exec(t, bin, "--help")
		if code != 0 {
			t.Fatalf("exit %d", code)
		}
		for _, f := range config.Flags(cmd) {
			name := f.Names()[0]
			if !strings.Contains(out, "--"+name) {
				t.Errorf("help lacks --%s", name)
			}
			doc := f.(cli.DocGenerationFlag)
			vars := envName.FindAllStringSubmatch(doc.GetUsage(), -1)
			if len(vars) == 0 {
				t.Errorf("--%s names no environment variable", name)
			}
			for _, v := range vars {
				if !strings.Contains(out, "$"+v[1]) {
					t.Errorf("help lacks $%s of --%s", v[1], name)
				}
			}
			if d := doc.GetDefaultText(); d != "" && d != `""` && !strings.Contains(out, "(default: "+d+")") {
				t.Errorf("help lacks the default %s of --%s", d, name)
			}
		}
	})

	t.Run("bad flag", func(t *testing.T) {
		out, errOut, code := Exec(t, bin, "--no-such-flag")
		want := program + ": error: flag provided but not defined: -no-such-flag\n"
		if code != 2 || errOut != want || out != "" {
			t.Errorf("exit %d stdout %q stderr %q; want 2 and %q", code, out, errOut, want)
		}
	})
}

// BadConfig writes toml to a file and checks that the binary refuses it
// with exit 2 and exactly the line "<program>: error: config <file>: <msg>".
func BadConfig(t *testing.T, bin, program, toml, msg string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "bad.toml")
	if err := os.WriteFile(path, []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	_, errOut, code := Exec(t, bin, "--config", path)
	want := program + ": error: config " + path + ": " + msg + "\n"
	if code != 2 || errOut != want {
		t.Errorf("exit %d stderr %q; want 2 and %q", code, errOut, want)
	}
}
