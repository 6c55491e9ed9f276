package config

import (
	"strings"
	"time"

	"github.com/urfave/cli/v2"
)

// Flags are the command-line flags of cmd, one per key plus --config (for
// ingest and fluentd-sink). Each usage text names the key's environment
// variables, and each flag's default is the value of Default, so --help
// shows both. Every call returns new flag values: urfave/cli keeps parse
// state in them.
//
// The environment is deliberately not wired into the flags: Load reads it
// itself, so that it knows whether a value came from the command line or
// from the environment (flag > environment > file > default).
func Flags(cmd Command) []cli.Flag {
	def := Default()
	var out []cli.Flag
	if cmd != Configure {
		out = append(out, &cli.StringFlag{
			Name:    configFlag,
			Aliases: []string{"c"},
			Usage:   "TOML configuration file (teleport-event-handler.toml works unchanged)" + envUsage(configEnv),
		})
	}
	for _, k := range keys {
		if !k.cmds.has(cmd) {
			continue
		}
		out = append(out, k.cliFlag(&def))
	}
	return out
}

func envUsage(vars []string) string {
	return " [$" + strings.Join(vars, ", $") + "]"
}

// cliFlag is the key's flag with def's value as its default.
func (k *key) cliFlag(def *Config) cli.Flag {
	usage := k.usage + envUsage(k.envVars())
	if k.name != "" && !k.cliOnly {
		usage += " (key " + k.name + ")"
	}
	switch p := k.field(def).(type) {
	case *string:
		return &cli.StringFlag{Name: k.flag, Aliases: k.short, Usage: usage, Value: *p}
	case *[]string:
		f := &cli.StringSliceFlag{Name: k.flag, Aliases: k.short, Usage: usage}
		if len(*p) > 0 {
			f.Value = cli.NewStringSlice(*p...)
		}
		return f
	case *int:
		return &cli.IntFlag{Name: k.flag, Aliases: k.short, Usage: usage, Value: *p}
	case *int64:
		return &cli.Int64Flag{Name: k.flag, Aliases: k.short, Usage: usage, Value: *p}
	case *int32:
		return &cli.Int64Flag{Name: k.flag, Aliases: k.short, Usage: usage, Value: int64(*p)}
	case *bool:
		return &cli.BoolFlag{Name: k.flag, Aliases: k.short, Usage: usage, Value: *p}
	case *time.Duration:
		return &cli.DurationFlag{Name: k.flag, Aliases: k.short, Usage: usage, Value: *p}
	case *time.Time, *MemoryBudget:
		return &cli.StringFlag{Name: k.flag, Aliases: k.short, Usage: usage, Value: k.format(def)}
	}
	panic("config: key " + k.name + " has an unsupported field type") // programming error in the table, caught by tests
}
