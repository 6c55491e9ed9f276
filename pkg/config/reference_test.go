package config

import (
	"os"
	"strings"
	"testing"
)

func TestReferenceIsUpToDate(t *testing.T) {
	got, err := os.ReadFile("../../docs/configuration.md")
	if err != nil {
		t.Fatalf("read docs/configuration.md: %v (regenerate: go generate ./pkg/config)", err)
	}
	if string(got) != Reference() {
		t.Fatal("docs/configuration.md differs from config.Reference(); regenerate it: go generate ./pkg/config")
	}
}

func TestReferenceNamesEveryKey(t *testing.T) {
	ref := Reference()
	for _, k := range keys {
		for _, s := range append([]string{"`--" + k.flag + "`"}, k.envVars()...) {
			if !strings.Contains(ref, s) {
				t.Errorf("reference lacks %s", s)
			}
		}
		if !k.cliOnly && !strings.Contains(ref, "`"+k.name+"`") {
			t.Errorf("reference lacks key %s", k.name)
		}
	}
}

// The key table is the single source of flags, variables and TOML names:
// none may be claimed twice, and every field type must have a flag.
func TestKeyTableIsConsistent(t *testing.T) {
	flags := map[string]string{configFlag: "config", "version": "version", "help": "help", "c": "config", "h": "help"}
	envs := map[string]string{}
	for _, v := range configEnv {
		envs[v] = "config"
	}
	tomlNames := map[string]string{}
	for _, k := range keys {
		if k.usage == "" || k.field == nil || k.cmds == 0 {
			t.Errorf("%s: incomplete entry", k.name)
		}
		for _, f := range append([]string{k.flag}, k.short...) {
			if prev, ok := flags[f]; ok {
				t.Errorf("flag %q of %s is also %s", f, k.name, prev)
			}
			flags[f] = k.name
		}
		for _, e := range k.envVars() {
			if prev, ok := envs[e]; ok {
				t.Errorf("variable %s of %s is also %s", e, k.name, prev)
			}
			envs[e] = k.name
		}
		for _, n := range k.tomlNames() {
			if prev, ok := tomlNames[n]; ok {
				t.Errorf("TOML key %s of %s is also %s", n, k.name, prev)
			}
			tomlNames[n] = k.name
		}
	}
	for _, cmd := range []Command{Ingest, Sink, Configure} {
		if len(Flags(cmd)) == 0 {
			t.Errorf("%s has no flags", cmd)
		}
	}
}

// The older tool's flag names keep their meaning.
func TestOlderFlagNamesExist(t *testing.T) {
	older := map[Command][]string{
		Ingest: {"teleport-addr", "teleport-identity", "teleport-ca", "teleport-cert", "teleport-key", "storage", "batch",
			"namespace", "types", "skip-event-types", "skip-session-types", "start-time", "timeout", "cursor", "debug",
			"dry-run", "exit-on-last-event", "concurrency", "window-size", "lock-enabled", "lock-failed-attempts-count",
			"lock-period", "lock-for", "config"},
		Sink:      {"fluentd-url", "fluentd-session-url", "fluentd-ca", "fluentd-cert", "fluentd-key", "debug", "dry-run", "config"},
		Configure: {"ttl", "dns-names", "ip", "length", "key-type", "encrypt-client-key", "force", "lock"},
	}
	for cmd, names := range older {
		have := map[string]bool{}
		for _, f := range Flags(cmd) {
			for _, n := range f.Names() {
				have[n] = true
			}
		}
		for _, n := range names {
			if !have[n] {
				t.Errorf("%s lacks --%s", cmd, n)
			}
		}
	}
}

func TestDidYouMean(t *testing.T) {
	tests := map[string]string{
		"bacth":                   "batch",
		"nats.replica":            "nats.replicas",
		"forward.fluentd.ulr":     "forward.fluentd.url",
		"skip-sesion-types":       "skip-session-types",
		"lock.failed-attempt-cnt": "lock.failed-attempts-count",
		"completely-different":    "",
	}
	for in, want := range tests {
		if got := suggest(in); got != want {
			t.Errorf("suggest(%q) = %q, want %q", in, got, want)
		}
	}
}
