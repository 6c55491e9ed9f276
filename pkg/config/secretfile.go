package config

import (
	"errors"
	"fmt"
	"io"
	"os"
)

// CheckSecretFile checks a file holding a credential (a NATS NKey seed or
// creds file) before it is used: it must exist, be a readable file, and
// be readable by its owner only — or also by the command's own group,
// which is how Kubernetes mounts a Secret for a non-root pod (the file
// belongs to root and the pod's fsGroup, mode 0440). what names the kind
// of file in the message ("NATS nkey seed file"). Each error is one line
// naming the file and the fix.
func CheckSecretFile(what, path string) error {
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("%s %q does not exist: create it (configure --nats-credentials <dir>) or correct the path", what, path)
	case err != nil:
		return fmt.Errorf("%s %q: cannot read it (%v): check the directory's permissions", what, path, unwrapPathError(err))
	case st.IsDir():
		return fmt.Errorf("%s %q is a directory, not a file", what, path)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 && !(perm&0o077 == 0o040 && inOwnGroup(st)) {
		return fmt.Errorf("%s %q is open to group or others (mode %04o), it must be readable by its owner only: run chmod 600 %s", what, path, perm, path)
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("%s %q: cannot read it (%v): it must belong to the user the command runs as (chown, then chmod 600 %s)", what, path, unwrapPathError(err), path)
	}
	defer f.Close()
	if _, err := f.Read(make([]byte, 1)); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("%s %q: cannot read it (%v)", what, path, err)
	}
	return nil
}
