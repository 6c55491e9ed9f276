package helm

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/certs"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/configure"
)

// secrets are the Secrets of a namespace as the tests lay them out: name →
// key → the file holding the value.
type secrets map[string]map[string]string

// installation is what `configure --helm` wrote: its directory, the values
// file and the Secrets its script creates.
type installation struct {
	dir     string
	values  string
	secrets secrets
}

var (
	installOnce sync.Once
	installs    map[bool]installation // by forward
	installErr  error
)

// configured runs configure --helm (in_http, or in_forward with forward)
// once per test binary, adds the identity tctl would write, and reads the
// Secrets of the script configure wrote.
func configured(t *testing.T, forward bool) installation {
	t.Helper()
	installOnce.Do(func() {
		base, err := os.MkdirTemp("", "helm-configure-")
		if err != nil {
			installErr = err
			return
		}
		installs = map[bool]installation{}
		for _, fwd := range []bool{false, true} {
			dir := filepath.Join(base, fmt.Sprintf("forward-%v", fwd))
			inst, err := configure1(dir, fwd)
			if err != nil {
				installErr = err
				return
			}
			installs[fwd] = inst
		}
	})
	if installErr != nil {
		t.Fatal(installErr)
	}
	return installs[forward]
}

func configure1(dir string, forward bool) (installation, error) {
	_, err := configure.Run(context.Background(), configure.Options{
		OutDir: dir, TeleportAddr: "teleport.example.com:443", DNSNames: []string{"fluentd.logging.svc"},
		KeyType: certs.KeyECDSA, Helm: true, Forward: forward,
	})
	if err != nil {
		return installation{}, fmt.Errorf("configure --helm: %w", err)
	}
	// tctl auth sign --format=file --out <dir>/identity writes it later.
	if err := os.WriteFile(filepath.Join(dir, configure.IdentityFile), []byte("identity\n"), 0o600); err != nil {
		return installation{}, err
	}
	s, err := scriptSecrets(filepath.Join(dir, configure.SecretsScriptFile))
	if err != nil {
		return installation{}, err
	}
	return installation{dir: dir, values: filepath.Join(dir, configure.HelmValuesFile), secrets: s}, nil
}

var (
	createRE   = regexp.MustCompile(`^kubectl -n "\$ns" create secret generic ([a-z0-9-]+)((?: --from-file=[^ ]+)+)$`)
	fromFileRE = regexp.MustCompile(`--from-file=([^=]+)='([^']*)'`)
)

// scriptSecrets reads the Secrets configure's script creates: every
// kubectl line must be one `create secret generic` of --from-file keys.
func scriptSecrets(path string) (secrets, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	out := secrets{}
	for _, line := range strings.Split(string(data), "\n") {
		if !strings.HasPrefix(line, "kubectl") {
			continue
		}
		m := createRE.FindStringSubmatch(line)
		if m == nil {
			return nil, fmt.Errorf("%s: not a kubectl create secret generic with --from-file keys: %s", path, line)
		}
		keys := map[string]string{}
		for _, f := range fromFileRE.FindAllStringSubmatch(m[2], -1) {
			keys[f[1]] = f[2]
		}
		out[m[1]] = keys
	}
	return out, nil
}

// with is s plus the Secrets of more (copied; s is shared).
func (s secrets) with(more secrets) secrets {
	out := secrets{}
	for _, m := range []secrets{s, more} {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

// writeValues writes a values file for a test.
func writeValues(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
