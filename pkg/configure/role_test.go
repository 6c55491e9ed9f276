package configure

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/gravitational/teleport/api/types"
	"gopkg.in/yaml.v3"
)

// teleportRoleVersions are the role versions each Teleport major accepts in
// `tctl create` (it answers `role version "vN" is not supported` to the
// others). Facts, from Teleport's releases and issues:
//   - v13 refuses v7: seen on a real v13.3.8 auth server (issue #18);
//     gravitational/teleport#16658 shows the same refusal of a version
//     newer than the server.
//   - v7 came with Teleport 14 (the Terraform provider added it for v14,
//     gravitational/teleport-plugins#925, September 2023).
//   - v8 came with Teleport 18 (gravitational/teleport#52332: "a new role
//     version to be available in Teleport V18"); v18's resource reference
//     lists v3 to v8 as supported.
//   - v3 to v6 are accepted from v12 on and none was dropped up to v18.
//
// The project reads Teleport v13 to v18, so RoleVersion must be in every
// row. To support another major, add its row.
var teleportRoleVersions = []struct {
	major    int
	accepted []string
}{
	{13, []string{"v3", "v4", "v5", "v6"}},
	{14, []string{"v3", "v4", "v5", "v6", "v7"}},
	{15, []string{"v3", "v4", "v5", "v6", "v7"}},
	{16, []string{"v3", "v4", "v5", "v6", "v7"}},
	{17, []string{"v3", "v4", "v5", "v6", "v7"}},
	{18, []string{"v3", "v4", "v5", "v6", "v7", "v8"}},
}

// TestRoleVersionAcceptedByEverySupportedTeleport checks the written role
// version against the table, and that it is the oldest version every
// supported Teleport accepts whose defaults add no access (see
// TestRoleV3WouldGrantMore).
func TestRoleVersionAcceptedByEverySupportedTeleport(t *testing.T) {
	for _, row := range teleportRoleVersions {
		if !slices.Contains(row.accepted, RoleVersion) {
			t.Errorf("Teleport v%d does not accept role version %s (accepts %v)", row.major, RoleVersion, row.accepted)
		}
	}
	for _, lock := range []bool{false, true} {
		role, _ := generatedRoleAndUser(t, lock)
		if role.Version != RoleVersion {
			t.Errorf("lock=%v: the role file says version %q, want %q", lock, role.Version, RoleVersion)
		}
	}
	// v3 is accepted everywhere too, but grants more: the next one up
	// is the oldest that fits.
	if RoleVersion != types.V4 {
		t.Errorf("RoleVersion %s: the oldest version without v3's wildcard label defaults is %s", RoleVersion, types.V4)
	}
}

// TestRoleParsesWithTeleportAPI reads the written role and user into the
// api module's types, applies Teleport's defaults and validation
// (CheckAndSetDefaults, what tctl does before creating them), and checks
// the rules the ingest needs and that nothing else is granted.
func TestRoleParsesWithTeleportAPI(t *testing.T) {
	for _, lock := range []bool{false, true} {
		role, user := generatedRoleAndUser(t, lock)
		if err := role.CheckAndSetDefaults(); err != nil {
			t.Fatalf("lock=%v: Teleport's role validation: %v", lock, err)
		}
		// CheckAndSetDefaults turns a version it does not know into the
		// newest one: check it left ours alone.
		if role.GetVersion() != RoleVersion || role.GetName() != RoleName {
			t.Errorf("lock=%v: role %s version %s after validation, want %s %s", lock, role.GetName(), role.GetVersion(), RoleName, RoleVersion)
		}
		want := map[string][]string{
			types.KindEvent:   {types.VerbList, types.VerbRead},
			types.KindSession: {types.VerbList, types.VerbRead},
		}
		if lock {
			want[types.KindLock] = []string{types.VerbCreate, types.VerbUpdate}
		}
		got := map[string][]string{}
		for _, r := range role.GetRules(types.Allow) {
			if err := r.CheckAndSetDefaults(); err != nil {
				t.Errorf("lock=%v: rule %v: %v", lock, r, err)
			}
			for _, res := range r.Resources {
				got[res] = append(got[res], r.Verbs...)
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("lock=%v: allow rules %v, want %v", lock, got, want)
		}
		if d := role.GetRules(types.Deny); len(d) != 0 {
			t.Errorf("lock=%v: deny rules %v, want none", lock, d)
		}
		for name, labels := range map[string]types.Labels{
			"node": role.GetNodeLabels(types.Allow), "app": role.GetAppLabels(types.Allow),
			"kubernetes": role.GetKubernetesLabels(types.Allow), "database": role.GetDatabaseLabels(types.Allow),
		} {
			if len(labels) != 0 {
				t.Errorf("lock=%v: the role grants %s labels %v, want none", lock, name, labels)
			}
		}
		if len(role.GetLogins(types.Allow)) != 0 {
			t.Errorf("lock=%v: the role grants logins %v", lock, role.GetLogins(types.Allow))
		}

		if err := user.CheckAndSetDefaults(); err != nil {
			t.Fatalf("lock=%v: Teleport's user validation: %v", lock, err)
		}
		if user.GetName() != RoleName || !slices.Equal(user.GetRoles(), []string{RoleName}) {
			t.Errorf("lock=%v: user %s with roles %v, want %s with [%s]", lock, user.GetName(), user.GetRoles(), RoleName, RoleName)
		}
	}
}

// TestRoleV3WouldGrantMore shows why the role is not v3: with the same
// spec, Teleport's v3 defaults grant every app, Kubernetes cluster and
// database.
func TestRoleV3WouldGrantMore(t *testing.T) {
	role, _ := generatedRoleAndUser(t, false)
	role.Version = types.V3
	if err := role.CheckAndSetDefaults(); err != nil {
		t.Fatal(err)
	}
	if len(role.GetAppLabels(types.Allow)) == 0 || len(role.GetDatabaseLabels(types.Allow)) == 0 {
		t.Errorf("a v3 role got app labels %v and database labels %v; the reason for %s is gone",
			role.GetAppLabels(types.Allow), role.GetDatabaseLabels(types.Allow), RoleVersion)
	}
}

// TestRoleAndUserSeparate checks that the role and the user are separate
// files of one document each, so `tctl create` of the role fails alone.
func TestRoleAndUserSeparate(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := run(t, Options{OutDir: dir}); err != nil {
		t.Fatal(err)
	}
	for file, kind := range map[string]string{RoleFile: types.KindRole, UserFile: types.KindUser} {
		docs := yamlDocs(t, filepath.Join(dir, file))
		if len(docs) != 1 || docs[0]["kind"] != kind {
			t.Errorf("%s holds %d documents (%v), want one %s", file, len(docs), docs, kind)
		}
	}
}

// generatedRoleAndUser runs configure and reads its role and user into the
// api module's types, the way tctl reads YAML (to JSON, then the types'
// JSON form).
func generatedRoleAndUser(t *testing.T, lock bool) (*types.RoleV6, *types.UserV2) {
	t.Helper()
	dir := t.TempDir()
	if _, _, err := run(t, Options{OutDir: dir, Lock: lock}); err != nil {
		t.Fatal(err)
	}
	var role types.RoleV6
	var user types.UserV2
	for file, v := range map[string]any{RoleFile: &role, UserFile: &user} {
		docs := yamlDocs(t, filepath.Join(dir, file))
		if len(docs) != 1 {
			t.Fatalf("%s: %d documents, want 1", file, len(docs))
		}
		data, err := json.Marshal(docs[0])
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(data, v); err != nil {
			t.Fatalf("%s into the api type: %v", file, err)
		}
	}
	if role.Kind != types.KindRole || user.Kind != types.KindUser || user.Version != types.V2 {
		t.Fatalf("role kind %q, user kind %q version %q", role.Kind, user.Kind, user.Version)
	}
	return &role, &user
}

// yamlDocs decodes every YAML document of path into JSON-ready maps.
func yamlDocs(t *testing.T, path string) []map[string]any {
	t.Helper()
	dec := yaml.NewDecoder(strings.NewReader(read(t, path)))
	var out []map[string]any
	for {
		var d any
		err := dec.Decode(&d)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		m, ok := d.(map[string]any)
		if !ok {
			t.Fatalf("%s: a document is %T, want a mapping", path, d)
		}
		out = append(out, m)
	}
}
