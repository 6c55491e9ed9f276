package config

import (
	"strings"
	"testing"
)

func TestParseMemoryBudget(t *testing.T) {
	good := []struct {
		in   string
		want MemoryBudget
	}{
		{"auto", MemoryBudget{Mode: BudgetAuto}},
		{" AUTO ", MemoryBudget{Mode: BudgetAuto}},
		{"off", MemoryBudget{Mode: BudgetOff}},
		{"Off", MemoryBudget{Mode: BudgetOff}},
		{"384MiB", MemoryBudget{Mode: BudgetSize, Bytes: 384 << 20}},
		{"384mib", MemoryBudget{Mode: BudgetSize, Bytes: 384 << 20}},
		{"1GiB", MemoryBudget{Mode: BudgetSize, Bytes: 1 << 30}},
		{"512KiB", MemoryBudget{Mode: BudgetSize, Bytes: 512 << 10}},
		{"400MB", MemoryBudget{Mode: BudgetSize, Bytes: 400_000_000}},
		{"400 mb", MemoryBudget{Mode: BudgetSize, Bytes: 400_000_000}},
		{"2GB", MemoryBudget{Mode: BudgetSize, Bytes: 2_000_000_000}},
		{"300kB", MemoryBudget{Mode: BudgetSize, Bytes: 300_000}},
		{"268435456", MemoryBudget{Mode: BudgetSize, Bytes: 268435456}},
		{"268435456B", MemoryBudget{Mode: BudgetSize, Bytes: 268435456}},
	}
	for _, c := range good {
		got, err := ParseMemoryBudget(c.in)
		if err != nil || got != c.want {
			t.Errorf("ParseMemoryBudget(%q) = %+v, %v; want %+v", c.in, got, err, c.want)
		}
	}
	bad := []struct{ in, want string }{
		{"", `does not start with a number`},
		{"lots", `"lots" does not start with a number`},
		{"256M", `unknown unit "M"`},
		{"1.5GiB", `unknown unit ".5GiB"`},
		{"-1", `"-1" does not start with a number`},
		{"256 MiBs", `unknown unit "MiBs"`},
		{"99999999999GiB", `too large`},
		{"99999999999999999999", `too large`},
	}
	for _, c := range bad {
		_, err := ParseMemoryBudget(c.in)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), `must be "auto", "off" or a size`) {
			t.Errorf("ParseMemoryBudget(%q) error %v; want one containing %q", c.in, err, c.want)
		}
	}
}

func TestFormatSize(t *testing.T) {
	for n, want := range map[int64]string{256 << 20: "256MiB", 1 << 30: "1GiB", 3 << 29: "1536MiB", 400_000_000: "400000000", 2048: "2048", 1: "1", 0: "0"} {
		if got := FormatSize(n); got != want {
			t.Errorf("FormatSize(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestMemoryBudgetKey(t *testing.T) {
	f := newFixture(t)
	def, err := Decode([]byte(""), "gen.toml")
	if err != nil {
		t.Fatal(err)
	}
	if def.Ingest.MemoryBudget != (MemoryBudget{Mode: BudgetAuto}) {
		t.Errorf("default %+v, want auto", def.Ingest.MemoryBudget)
	}
	for body, want := range map[string]MemoryBudget{
		`memory-budget = "384MiB"`:  {Mode: BudgetSize, Bytes: 384 << 20},
		`memory-budget = "off"`:     {Mode: BudgetOff},
		`memory-budget = "auto"`:    {Mode: BudgetAuto},
		`memory-budget = 300000000`: {Mode: BudgetSize, Bytes: 300_000_000},
	} {
		cfg, err := Decode([]byte("[ingest]\n"+body+"\n"), "gen.toml")
		if err != nil || cfg.Ingest.MemoryBudget != want {
			t.Errorf("%s: %+v, %v; want %+v", body, cfg.Ingest.MemoryBudget, err, want)
		}
	}

	min := FormatSize(MinMemoryBudget)
	errs := map[string]string{
		`memory-budget = "lots"`: `config gen.toml: key "ingest.memory-budget": must be "auto", "off" or a size such as "384MiB", "1GiB" or "400MB": "lots" does not start with a number of bytes`,
		`memory-budget = true`:   `config gen.toml: key "ingest.memory-budget": must be "auto", "off" or a size such as "384MiB", got boolean true`,
		`memory-budget = "1MiB"`: `config gen.toml: key "ingest.memory-budget": 1MiB is below the smallest budget ingest runs in, ` + min + `; set at least ` + min + `, or "off" (` + MinMemoryBudgetWhy + `)`,
	}
	for body, want := range errs {
		_, err := Decode([]byte("[ingest]\n"+body+"\n"), "gen.toml")
		if err == nil || err.Error() != want {
			t.Errorf("%s: error %v\nwant %s", body, err, want)
		}
	}

	// The flag and the variable, through Load, with flag > environment.
	file := f.write(t, "ingest.toml", ingestOK+"[ingest]\nmemory-budget = \"1GiB\"\n")
	t.Setenv("FDFWD_INGEST_MEMORY_BUDGET", "512MiB")
	cfg, err := loadArgs(t, Ingest, "--config", file)
	if err != nil || cfg.Ingest.MemoryBudget.Bytes != 512<<20 {
		t.Fatalf("environment over file: %+v, %v", cfg, err)
	}
	cfg, err = loadArgs(t, Ingest, "--config", file, "--ingest-memory-budget", "off")
	if err != nil || cfg.Ingest.MemoryBudget.Mode != BudgetOff {
		t.Fatalf("flag over environment: %+v, %v", cfg, err)
	}
	_, err = loadArgs(t, Ingest, "--config", file, "--ingest-memory-budget", "10MB")
	if want := `flag --ingest-memory-budget: 10000000 is below the smallest budget ingest runs in, ` + min; err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("flag below the minimum: %v\nwant %s…", err, want)
	}
	t.Setenv("FDFWD_INGEST_MEMORY_BUDGET", "big")
	_, err = loadArgs(t, Ingest, "--config", file)
	if err == nil || !strings.Contains(err.Error(), "FDFWD_INGEST_MEMORY_BUDGET") || !strings.Contains(err.Error(), `"big" does not start with a number`) {
		t.Errorf("bad environment value: %v", err)
	}
}

// The key's usage (the reference, --help) states the default and the
// minimum the code uses.
func TestMemoryBudgetUsage(t *testing.T) {
	u := byName["ingest.memory-budget"].usage
	for _, w := range []string{"or " + FormatSize(DefaultMemoryBudget) + " without one", "at least " + FormatSize(MinMemoryBudget)} {
		if !strings.Contains(u, w) {
			t.Errorf("usage %q lacks %q", u, w)
		}
	}
}
