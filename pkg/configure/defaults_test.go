package configure

import (
	"bytes"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
)

// commentedKey is a commented-out setting of the TOML configure writes.
var commentedKey = regexp.MustCompile(`^# ([a-z][a-z-]*) = (.+)$`)

// defaultSections are the sections whose commented-out lines show defaults.
var defaultSections = map[string]bool{"[nats]": true, "[ingest]": true, "[sink]": true, "[lock]": true}

// TestGeneratedTOMLShowsDefaults: in the [nats], [ingest], [sink] and [lock]
// sections every commented-out "# key = value" line names a key the
// commands read and shows its default, so uncommenting it changes nothing
// (the top-level lines above them are examples, not defaults).
func TestGeneratedTOMLShowsDefaults(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := run(t, Options{OutDir: dir, Lock: true, TeleportAddr: "proxy.example.com:443"}); err != nil {
		t.Fatal(err)
	}
	settings := func(toml string) string {
		t.Helper()
		cfg, err := config.Decode([]byte(toml), "test.toml")
		if err != nil {
			t.Fatalf("%q: %v", toml, err)
		}
		var out bytes.Buffer
		log := zerolog.New(&out)
		log.Log().Object("config", cfg).Send()
		return out.String()
	}
	section, checked := "", 0
	for _, l := range strings.Split(read(t, filepath.Join(dir, TOMLFile)), "\n") {
		if strings.HasPrefix(l, "[") {
			section = l
			continue
		}
		m := commentedKey.FindStringSubmatch(l)
		if m == nil || !defaultSections[section] {
			continue
		}
		checked++
		without := section + "\n"
		if settings(without+m[1]+" = "+m[2]+"\n") != settings(without) {
			t.Errorf("%s %q: not the default of %s.%s", section, l, strings.Trim(section, "[]"), m[1])
		}
	}
	if checked < 15 {
		t.Fatalf("checked %d commented settings, want the 15 or more configure writes", checked)
	}
}
