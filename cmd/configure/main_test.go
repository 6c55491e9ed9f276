package main

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

const program = "configure"

var command = config.Configure

// build compiles this command into a temporary directory.
func build(t *testing.T) string {
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

// execBin executes the binary with a clean environment and returns its
// stdout, stderr and exit status.
func execBin(t *testing.T, bin string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "FDFWD_") && !strings.HasPrefix(kv, "FDWRD_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("run %s: %v", bin, err)
	}
	return stdout.String(), stderr.String(), cmd.ProcessState.ExitCode()
}

var envName = regexp.MustCompile(`\$([A-Z0-9_]+)`)

func TestBinary(t *testing.T) {
	bin := build(t)

	t.Run("version", func(t *testing.T) {
		for _, args := range [][]string{{"version"}, {"--version"}} {
			out, errOut, code := execBin(t, bin, args...)
			if code != 0 || !strings.HasPrefix(out, program+" dev (commit unknown, go") || errOut != "" {
				t.Errorf("%v: exit %d stdout %q stderr %q", args, code, out, errOut)
			}
		}
	})

	t.Run("help names every flag, variable and default", func(t *testing.T) {
		out, _, code := execBin(t, bin, "--help")
		if code != 0 {
			t.Fatalf("exit %d", code)
		}
		for _, f := range config.Flags(command) {
			if !strings.Contains(out, "--"+f.Names()[0]) {
				t.Errorf("help lacks --%s", f.Names()[0])
			}
			usage := f.(cli.DocGenerationFlag).GetUsage()
			vars := envName.FindAllStringSubmatch(usage, -1)
			if len(vars) == 0 {
				t.Errorf("--%s names no environment variable", f.Names()[0])
			}
			for _, v := range vars {
				if !strings.Contains(out, "$"+v[1]) {
					t.Errorf("help lacks $%s of --%s", v[1], f.Names()[0])
				}
			}
			if d := f.(cli.DocGenerationFlag).GetDefaultText(); d != "" && d != `""` && !strings.Contains(out, "(default: "+d+")") {
				t.Errorf("help lacks the default %s of --%s", d, f.Names()[0])
			}
		}
	})

	t.Run("bad flag", func(t *testing.T) {
		out, errOut, code := execBin(t, bin, "--no-such-flag")
		want := program + ": error: flag provided but not defined: -no-such-flag\n"
		if code != 2 || errOut != want || out != "" {
			t.Errorf("exit %d stdout %q stderr %q; want 2 and %q", code, out, errOut, want)
		}
	})

	t.Run("bad arguments", func(t *testing.T) {
		dir := t.TempDir()
		tests := []struct {
			args []string
			want string
		}{
			{nil, "configure: error: missing argument <out-dir>: usage: configure <out-dir> [teleport-addr [ca-name [server-name [client-name]]]]\n"},
			{[]string{"--length", "1024", dir}, "configure: error: flag --length: must be 2048 or 4096, got 1024\n"},
			{[]string{"--key-type", "dsa", dir}, "configure: error: flag --key-type: must be rsa or ecdsa, got \"dsa\"\n"},
		}
		for _, tt := range tests {
			_, errOut, code := execBin(t, bin, tt.args...)
			if code != 2 || errOut != tt.want {
				t.Errorf("%v: exit %d stderr %q; want 2 and %q", tt.args, code, errOut, tt.want)
			}
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 0 {
			t.Errorf("files written despite bad arguments: %d", len(entries))
		}
	})
}
