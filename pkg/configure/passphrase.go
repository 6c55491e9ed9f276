package configure

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"unicode"
)

// serverPassphrase reads server.key's passphrase from stdin when stdin is
// not a terminal (piped in by a script), else generates one. It reports
// whether the passphrase came from stdin.
func serverPassphrase(o Options) ([]byte, bool, error) {
	if o.Stdin == nil || o.StdinIsTerminal {
		p, err := generatePassphrase()
		return p, false, err
	}
	data, err := io.ReadAll(io.LimitReader(o.Stdin, maxPassphrase+1))
	if err != nil {
		return nil, false, fmt.Errorf("read passphrase from stdin: %w", err)
	}
	if len(data) > maxPassphrase {
		return nil, false, fmt.Errorf("passphrase on stdin is longer than %d bytes", maxPassphrase)
	}
	data = bytes.TrimSuffix(data, []byte("\n"))
	data = bytes.TrimSuffix(data, []byte("\r"))
	if len(data) == 0 {
		return nil, false, errors.New("passphrase on stdin is empty (pipe one in, or run from a terminal to generate it)")
	}
	for _, r := range string(data) {
		// fluent.conf holds it in a double-quoted string on one line.
		if unicode.IsControl(r) {
			return nil, false, errors.New("passphrase on stdin contains a control character (only one trailing newline is removed)")
		}
	}
	return data, true, nil
}

// generatePassphrase returns 32 random bytes, base64url-encoded: safe in
// TOML, in fluent.conf and on a command line.
func generatePassphrase() ([]byte, error) {
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return nil, fmt.Errorf("generate passphrase: %w", err)
	}
	out := make([]byte, base64.RawURLEncoding.EncodedLen(len(raw)))
	base64.RawURLEncoding.Encode(out, raw)
	return out, nil
}
