package bus

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"slices"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"
	"github.com/pelletier/go-toml/v2"
)

// User is one client the embedded server admits: the public half of an
// NKey and the role it gets. The seed (the private half) stays in the
// client's seed file; the server never sees it.
type User struct {
	Role Role   `toml:"role"`
	NKey string `toml:"nkey"`
}

// usersDoc is the layout of a users file ([nats] users):
//
//	[[user]]
//	role = "ingest"
//	nkey = "UA…"
type usersDoc struct {
	User []User `toml:"user"`
}

// usersHeader opens every users file configure writes.
const usersHeader = `# NATS users of the embedded server (teleport-event-bus), named by [nats]
# users in the TOML. Public NKeys only: the seeds are in the *.nk files.
# Written by configure; to add a reader, append a [[user]] with role
# "reader" and the public key of its seed (nk -inkey reader.nk -pubout).
`

// RenderUsers is the text of a users file holding users.
func RenderUsers(users []User) ([]byte, error) {
	out, err := toml.Marshal(usersDoc{User: users})
	if err != nil {
		return nil, fmt.Errorf("render NATS users: %w", err)
	}
	return append([]byte(usersHeader+"\n"), out...), nil
}

// LoadUsers reads a users file and checks it: at least one user, every
// role known, every key a valid public user NKey, and the file not
// writable by group or others (whoever can write it can let themselves in).
func LoadUsers(path string) ([]User, error) {
	st, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("NATS users file %q does not exist: run `configure --nats-credentials <dir>` to write it, or remove [nats] users", path)
	}
	if err != nil {
		return nil, fmt.Errorf("NATS users file %q: %w", path, err)
	}
	if st.Mode().Perm()&0o022 != 0 {
		return nil, fmt.Errorf("NATS users file %q is writable by group or others (mode %04o): run chmod 600 %s", path, st.Mode().Perm(), path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("NATS users file %q: cannot read it (%v): check its owner and mode (chmod 600 %s)", path, unwrapPath(err), path)
	}
	var doc usersDoc
	dec := toml.NewDecoder(bytes.NewReader(data)).DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("NATS users file %q: %s", path, oneLineTOML(err))
	}
	if len(doc.User) == 0 {
		return nil, fmt.Errorf("NATS users file %q lists no [[user]]: nobody could connect; run `configure --nats-credentials <dir> --force` to write it again", path)
	}
	seen := map[string]bool{}
	for i, u := range doc.User {
		if !slices.Contains(Roles, u.Role) {
			return nil, fmt.Errorf("NATS users file %q: user %d: role %q is not one of ingest, fluentd-sink, reader", path, i+1, u.Role)
		}
		if !nkeys.IsValidPublicUserKey(u.NKey) {
			return nil, fmt.Errorf("NATS users file %q: user %d (%s): nkey %q is not a public user NKey (U…): put the public key here, never the seed", path, i+1, u.Role, shortKey(u.NKey))
		}
		if seen[u.NKey] {
			return nil, fmt.Errorf("NATS users file %q: user %d (%s): nkey listed twice", path, i+1, u.Role)
		}
		seen[u.NKey] = true
	}
	return doc.User, nil
}

// shortKey shows the start of a key only: a seed pasted by mistake must not
// reach an error message whole.
func shortKey(k string) string {
	if len(k) > 4 {
		return k[:4] + "…"
	}
	return k
}

func oneLineTOML(err error) string {
	var de *toml.DecodeError
	if errors.As(err, &de) {
		row, col := de.Position()
		return fmt.Sprintf("line %d, column %d: %s", row, col, de.Error())
	}
	return err.Error()
}

func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// NewUserKey makes a new user NKey: the seed file's text (the seed and a
// newline, as `nats --nkey FILE` reads it) and the public key for the
// users file.
func NewUserKey() (seedFile []byte, public string, err error) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		return nil, "", fmt.Errorf("create NATS user NKey: %w", err)
	}
	seed, err := kp.Seed()
	if err != nil {
		return nil, "", fmt.Errorf("create NATS user NKey: %w", err)
	}
	public, err = kp.PublicKey()
	if err != nil {
		return nil, "", fmt.Errorf("create NATS user NKey: %w", err)
	}
	return append(seed, '\n'), public, nil
}

// nkeyUsers are users as the embedded server takes them, each with its
// role's permissions.
func nkeyUsers(users []User, n AuthNames) []*server.NkeyUser {
	out := make([]*server.NkeyUser, 0, len(users))
	for _, u := range users {
		out = append(out, &server.NkeyUser{Nkey: u.NKey, Permissions: Permissions(u.Role, n)})
	}
	return out
}
