package teleport

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/gravitational/trace"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
)

// ErrBadCredentials is wrapped by the errors of credential files that
// cannot be used at all: missing, unreadable, or not what the key says
// (an identity file that is not one).
var ErrBadCredentials = errors.New("teleport credentials unusable")

// Check is what ingest does before anything else starts (the store, the
// streams, the lease): it reads the credentials with the loader Connect
// uses, rejects an expired certificate, then connects once and pings the
// server, so that an identity of another cluster (the server's
// certificate not signed by the identity's CA, or ours refused) is found
// too. A server that cannot be reached now, or answers with a transient
// error, is not an error here: Connect retries it. The error names the
// file and what is wrong; it wraps ErrBadCredentials, ErrIdentityExpired,
// ErrUnknownAuthority or ErrAccessDenied.
func Check(ctx context.Context, cfg config.TeleportConfig) error {
	creds, what, err := credentials(cfg)
	if err != nil {
		return err
	}
	if err := checkCredentials(cfg, creds, what, time.Now()); err != nil {
		return err
	}
	if len(cfg.Addr) == 0 {
		return nil
	}
	api, err := dial(ctx, cfg, creds, what)
	if err == nil {
		return api.Close()
	}
	if errors.Is(err, ErrIdentityExpired) || errors.Is(err, ErrUnknownAuthority) || errors.Is(err, ErrAccessDenied) {
		return fmt.Errorf("connect to teleport %v: %w", cfg.Addr, err)
	}
	return nil
}

// checkFiles requires each credential file to be a regular file this
// process can read, before Teleport's loader reads it: the loader would
// block on a FIFO, and its errors name other files.
func checkFiles(cfg config.TeleportConfig) error {
	for _, f := range []struct{ what, path string }{
		{"identity file", cfg.Identity}, {"certificate", cfg.Cert}, {"key", cfg.Key}, {"CA file", cfg.CA},
	} {
		if f.path == "" {
			continue
		}
		if err := readable(f.what, f.path); err != nil {
			return fmt.Errorf("%w: %w", ErrBadCredentials, err)
		}
	}
	return nil
}

// readable says why the credential file (what) at path cannot be read
// (nil when it can).
func readable(what, path string) error {
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%s %q does not exist", what, path)
	case err != nil:
		return fmt.Errorf("cannot read %s %q: %v", what, path, unwrapPath(err))
	case st.IsDir():
		return fmt.Errorf("%s %q is a directory, not a file", what, path)
	case !st.Mode().IsRegular():
		return fmt.Errorf("%s %q is not a regular file (%s): give the path of the file itself", what, path, fileKind(st.Mode()))
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("cannot read %s %q: %v (run ingest as a user that can read it)", what, path, unwrapPath(err))
	}
	return f.Close()
}

// fileKind names a mode's file type for a message.
func fileKind(m fs.FileMode) string {
	switch {
	case m&fs.ModeNamedPipe != 0:
		return "named pipe"
	case m&fs.ModeSocket != 0:
		return "socket"
	case m&fs.ModeDevice != 0:
		return "device"
	}
	return m.Type().String()
}

// notIdentity explains why Teleport's loader could not use an identity
// file: the loader's own message names the "-cert.pub" file it looks for
// beside it, which users never made.
func notIdentity(path string, loadErr error) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("%w: cannot read identity file %q: %v", ErrBadCredentials, path, unwrapPath(err))
	}
	if !bytes.Contains(raw, []byte("-----BEGIN")) {
		return fmt.Errorf("%w: identity file %q is not a Teleport identity file (it holds no key or certificate); write one with tctl auth sign --format=file", ErrBadCredentials, path)
	}
	if !bytes.Contains(raw, []byte("-cert-v01@openssh.com ")) {
		return fmt.Errorf("%w: identity file %q is not a Teleport identity file (it holds no SSH certificate: is it a PEM key or certificate?); write one with tctl auth sign --format=file", ErrBadCredentials, path)
	}
	return fmt.Errorf("%w: identity file %q is not a usable Teleport identity file: %s; write a new one with tctl auth sign --format=file", ErrBadCredentials, path, trace.UserMessage(loadErr))
}

// unwrapPath drops the *fs.PathError wrapper, whose text repeats the path.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
