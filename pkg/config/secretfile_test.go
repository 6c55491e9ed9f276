//go:build unix

package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCheckSecretFileModes: a seed file readable by its owner passes, and
// so does one readable by the command's own group too (a Kubernetes Secret
// mounted for a non-root pod with fsGroup: mode 0440, group fsGroup); any
// other access — group write, others, another group — is refused.
func TestCheckSecretFileModes(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		mode  os.FileMode
		gid   int // -1: the process's group
		allow bool
	}{
		{0o600, -1, true},
		{0o400, -1, true},
		{0o440, -1, true},
		{0o640, -1, true},
		{0o660, -1, false},
		{0o604, -1, false},
		{0o444, -1, false},
		{0o440, 54321, false},
	} {
		t.Run(fmt.Sprintf("%04o-gid%d", tc.mode, tc.gid), func(t *testing.T) {
			path := filepath.Join(dir, fmt.Sprintf("seed-%04o-%d.nk", tc.mode, tc.gid))
			if err := os.WriteFile(path, []byte("SU\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			if tc.gid >= 0 {
				if os.Geteuid() != 0 {
					t.Skip("giving a file another group needs root")
				}
				if err := os.Chown(path, -1, tc.gid); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.Chmod(path, tc.mode); err != nil {
				t.Fatal(err)
			}
			err := CheckSecretFile("NATS nkey seed file", path)
			if tc.allow {
				if err != nil {
					t.Fatalf("mode %04o of the process's group: %v", tc.mode, err)
				}
				return
			}
			want := fmt.Sprintf("NATS nkey seed file %q is open to group or others (mode %04o), it must be readable by its owner only: run chmod 600 %s", path, tc.mode, path)
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("mode %04o, group %d: got %v, want %q", tc.mode, tc.gid, err, want)
			}
		})
	}
}
