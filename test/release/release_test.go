// Package release_test checks what a user installing a release gets: the
// archive's contents, the install script (and its refusal to half-install),
// and the Dockerfile, which CI cannot build without a Docker engine.
package release_test

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"crypto/rsa"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/certs"
)

var commands = []string{"ingest", "fluentd-sink", "configure"}

// repoRoot is two levels up from this package.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// buildRelease runs deploy/release.sh for the host platform into a temporary
// directory and returns the unpacked archive's top directory.
func buildRelease(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds a release archive")
	}
	root := repoRoot(t)
	dist := t.TempDir()
	platform := runtime.GOOS + "/" + runtime.GOARCH
	cmd := exec.Command("sh", filepath.Join(root, "deploy", "release.sh"), "v9.9.9-test", "c0ffee1", platform)
	cmd.Env = append(os.Environ(), "DIST="+dist)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("release.sh: %v\n%s", err, out)
	}

	sums, err := os.ReadFile(filepath.Join(dist, "SHA256SUMS"))
	if err != nil {
		t.Fatalf("SHA256SUMS: %v", err)
	}
	name := "teleport-event-bus-v9.9.9-test-" + runtime.GOOS + "-" + runtime.GOARCH
	archive := name + "-bin.tar.gz"
	if !strings.Contains(string(sums), archive) {
		t.Fatalf("SHA256SUMS does not list %s:\n%s", archive, sums)
	}
	unpacked := t.TempDir()
	untar(t, filepath.Join(dist, archive), unpacked)
	return filepath.Join(unpacked, name)
}

func untar(t *testing.T, archive, dest string) {
	t.Helper()
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("%s: %v", archive, err)
	}
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatalf("%s: %v", archive, err)
		}
		target := filepath.Join(dest, filepath.Clean(h.Name))
		if !strings.HasPrefix(target, dest+string(filepath.Separator)) {
			t.Fatalf("%s: entry %q escapes the archive", archive, h.Name)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, 0o755); err != nil {
				t.Fatal(err)
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				t.Fatal(err)
			}
			out, err := os.OpenFile(target, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, os.FileMode(h.Mode)&0o777)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.Copy(out, tr); err != nil {
				t.Fatal(err)
			}
			if err := out.Close(); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func TestReleaseArchiveInstallsWorkingBinaries(t *testing.T) {
	top := buildRelease(t)
	for _, f := range []string{"install", "README.md", "LICENSE", "example/teleport-event-handler.toml", "deploy/install.sh"} {
		if _, err := os.Stat(filepath.Join(top, f)); err != nil {
			t.Errorf("archive lacks %s: %v", f, err)
		}
	}

	bindir := filepath.Join(t.TempDir(), "bin")
	cmd := exec.Command(filepath.Join(top, "install"))
	cmd.Env = append(os.Environ(), "BINDIR="+bindir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("install: %v\n%s", err, out)
	}
	for _, name := range commands {
		if !strings.Contains(string(out), "installed "+filepath.Join(bindir, name)) {
			t.Errorf("install output does not report %s:\n%s", name, out)
		}
		v, err := exec.Command(filepath.Join(bindir, name), "version").CombinedOutput()
		if err != nil {
			t.Fatalf("%s version: %v\n%s", name, err, v)
		}
		for _, want := range []string{name, "v9.9.9-test", "c0ffee1", runtime.Version()} {
			if !strings.Contains(string(v), want) {
				t.Errorf("%s version = %q, want it to contain %q", name, v, want)
			}
		}
	}
	entries, err := os.ReadDir(bindir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != len(commands) {
		t.Errorf("BINDIR holds %d entries, want exactly the %d commands (no temporary files left)", len(entries), len(commands))
	}
}

func TestInstallRefusesReadOnlyBindirAndWritesNothing(t *testing.T) {
	top := buildRelease(t)

	// Root ignores permission bits, so as root the script runs as nobody.
	base := t.TempDir()
	bindir := filepath.Join(base, "ro")
	if err := os.Mkdir(bindir, 0o555); err != nil {
		t.Fatal(err)
	}
	args := []string{filepath.Join(top, "install")}
	if os.Geteuid() == 0 {
		setpriv, err := exec.LookPath("setpriv")
		if err != nil {
			t.Skip("running as root without setpriv: cannot make a directory read-only for the script")
		}
		// The test's temporary directories are 0700: open the way down to
		// the script and to BINDIR for the unprivileged user.
		for _, d := range append(ancestors(top), ancestors(bindir)...) {
			if err := os.Chmod(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		args = append([]string{setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"}, args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), "BINDIR="+bindir)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() == 0 {
		t.Fatalf("install into a read-only BINDIR: err = %v, want a non-zero exit\n%s", err, out)
	}
	for _, want := range []string{"cannot write to " + bindir, "sudo", "BINDIR="} {
		if !strings.Contains(string(out), want) {
			t.Errorf("install message %q does not contain %q", out, want)
		}
	}
	entries, err := os.ReadDir(bindir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Errorf("read-only BINDIR now holds %d entries, want none", len(entries))
	}
}

// ancestors lists dir and its parents below the system's temporary directory.
func ancestors(dir string) []string {
	var out []string
	tmp := filepath.Clean(os.TempDir())
	for d := filepath.Dir(dir); d != tmp && d != "/" && d != "."; d = filepath.Dir(d) {
		out = append(out, d)
	}
	return out
}

// TestDockerfileParsesAndCopySourcesExist lints the Dockerfile where no
// Docker engine can build it: every instruction is known, and every COPY
// from the build context names a path that exists.
func TestDockerfileParsesAndCopySourcesExist(t *testing.T) {
	root := repoRoot(t)
	f, err := os.Open(filepath.Join(root, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	known := map[string]bool{"FROM": true, "ARG": true, "WORKDIR": true, "COPY": true, "RUN": true, "ENV": true,
		"USER": true, "ENTRYPOINT": true, "CMD": true, "LABEL": true, "EXPOSE": true, "VOLUME": true, "HEALTHCHECK": true}
	var stages, copies int
	var line strings.Builder
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		n++
		text := strings.TrimSpace(sc.Text())
		if line.Len() == 0 && (text == "" || strings.HasPrefix(text, "#")) {
			continue
		}
		if strings.HasSuffix(text, "\\") {
			line.WriteString(strings.TrimSuffix(text, "\\") + " ")
			continue
		}
		line.WriteString(text)
		fields := strings.Fields(line.String())
		line.Reset()
		instr := strings.ToUpper(fields[0])
		if !known[instr] {
			t.Errorf("Dockerfile:%d: unknown instruction %q", n, fields[0])
			continue
		}
		switch instr {
		case "FROM":
			stages++
		case "COPY":
			copies++
			args := fields[1:]
			fromStage := false
			for len(args) > 0 && strings.HasPrefix(args[0], "--") {
				fromStage = fromStage || strings.HasPrefix(args[0], "--from=")
				args = args[1:]
			}
			if len(args) < 2 {
				t.Errorf("Dockerfile:%d: COPY needs a source and a destination", n)
				continue
			}
			if fromStage {
				continue
			}
			for _, src := range args[:len(args)-1] {
				if _, err := os.Stat(filepath.Join(root, src)); err != nil {
					t.Errorf("Dockerfile:%d: COPY source %q does not exist in the repository", n, src)
				}
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if stages < 2 {
		t.Errorf("Dockerfile has %d stages, want a multi-stage build", stages)
	}
	if copies == 0 {
		t.Error("Dockerfile copies nothing")
	}
}

// TestGenExampleMTLS runs `PASS=… KEYLEN=… make gen-example-mtls` as users of
// the older tool do, and opens what it wrote.
func TestGenExampleMTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("builds configure")
	}
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("make not installed")
	}
	root := repoRoot(t)
	dir := filepath.Join(t.TempDir(), "keys")
	cmd := exec.Command("make", "-s", "-C", root, "gen-example-mtls", "EXAMPLE_KEYS="+dir, "BIN="+t.TempDir())
	cmd.Env = append(os.Environ(), "PASS=example-passphrase-42", "KEYLEN=2048")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make gen-example-mtls: %v\n%s", err, out)
	}
	if strings.Contains(string(out), "example-passphrase-42") {
		t.Errorf("the passphrase was printed:\n%s", out)
	}
	for _, f := range []string{"ca.crt", "ca.key", "server.crt", "server.key", "client.crt", "client.key", "fluent.conf", "teleport-event-handler.toml", "teleport-event-handler-role.yaml", "teleport-event-handler-user.yaml"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("gen-example-mtls did not write %s: %v", f, err)
		}
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, "server.key"))
	if err != nil {
		t.Fatal(err)
	}
	key, err := certs.ParseKeyPEM(keyPEM, []byte("example-passphrase-42"))
	if err != nil {
		t.Fatalf("server.key does not open with PASS: %v", err)
	}
	rsaKey, ok := key.(*rsa.PrivateKey)
	if !ok || rsaKey.N.BitLen() != 2048 {
		t.Errorf("server.key is %T, want a 2048-bit RSA key (KEYLEN)", key)
	}
	if _, err := certs.ParseKeyPEM(keyPEM, []byte("wrong")); err == nil {
		t.Error("server.key opens with a wrong passphrase")
	}
	conf, err := os.ReadFile(filepath.Join(dir, "fluent.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(conf), "example-passphrase-42") {
		t.Error("fluent.conf does not carry the passphrase Fluentd needs")
	}
}
