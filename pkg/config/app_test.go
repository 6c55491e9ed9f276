package config

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/rs/zerolog"
)

func TestExecuteExitCodesAndOneLineErrors(t *testing.T) {
	f := newFixture(t)
	good := f.write(t, "c.toml", ingestOK)
	bad := f.write(t, "bad.toml", "[nats]\nreplicas = 7\n"+ingestOK)
	boom := func(context.Context, *Config, zerolog.Logger) error {
		return errors.New("connect to teleport [localhost:3025]: connection refused\nsecond line")
	}
	tests := []struct {
		name   string
		args   []string
		code   int
		stderr string
		stdout string
	}{
		{name: "runtime error", args: []string{"--config", good}, code: 1,
			stderr: "ingest: error: connect to teleport [localhost:3025]: connection refused; second line\n"},
		{name: "bad flag", args: []string{"--bogus"}, code: 2,
			stderr: "ingest: error: flag provided but not defined: -bogus\n"},
		{name: "bad flag value", args: []string{"--batch", "many"}, code: 2,
			stderr: "ingest: error: invalid value \"many\" for flag -batch: parse error\n"},
		{name: "bad config", args: []string{"--config", bad}, code: 2,
			stderr: "ingest: error: config " + bad + ": key \"nats.replicas\": must be 1..5, got 7\n"},
		{name: "version subcommand", args: []string{"version"}, code: 0, stdout: "ingest dev (commit unknown, go"},
		{name: "version flag", args: []string{"--version"}, code: 0, stdout: "ingest dev (commit unknown, go"},
		{name: "help", args: []string{"--help"}, code: 0, stdout: "--teleport-identity value"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr, logs bytes.Buffer
			app := NewApp(Ingest, "ingest", "test", boom)
			app.Writer, app.ErrWriter = &stdout, &logs
			code := Execute(context.Background(), app, append([]string{"ingest"}, tt.args...), &stderr)
			if code != tt.code {
				t.Errorf("exit %d, want %d (stderr %q)", code, tt.code, stderr.String())
			}
			if stderr.String() != tt.stderr {
				t.Errorf("stderr %q, want %q", stderr.String(), tt.stderr)
			}
			if !strings.Contains(stdout.String(), tt.stdout) {
				t.Errorf("stdout %q lacks %q", stdout.String(), tt.stdout)
			}
			if tt.code != 0 && stdout.Len() > 0 {
				t.Errorf("usage dumped on error: %q", stdout.String())
			}
		})
	}
}

// SIGTERM cancels the run's context; a run that then returns its
// context's error has stopped cleanly: exit 0, nothing on stderr.
func TestSignalStopsRunCleanly(t *testing.T) {
	f := newFixture(t)
	app := NewApp(Ingest, "ingest", "test", func(ctx context.Context, _ *Config, _ zerolog.Logger) error {
		if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
			return err
		}
		<-ctx.Done()
		return fmt.Errorf("ingest stopped: %w", ctx.Err())
	})
	var stderr bytes.Buffer
	app.ErrWriter = &bytes.Buffer{}
	if code := Execute(context.Background(), app, []string{"ingest", "--config", f.write(t, "c.toml", ingestOK)}, &stderr); code != 0 {
		t.Errorf("exit %d, want 0; stderr %q", code, stderr.String())
	}
	if stderr.Len() != 0 {
		t.Errorf("stderr %q", stderr.String())
	}
}

// TestSubcommandTakesTheGlobalFlags: `ingest status --config x` works like
// `ingest --config x status`; a flag given on both sides of the subcommand
// takes the value after it; flag > environment > file > default holds.
func TestSubcommandTakesTheGlobalFlags(t *testing.T) {
	f := newFixture(t)
	a := f.write(t, "a.toml", "batch = 21\nstorage = \"/a\"\n"+ingestOK)
	b := f.write(t, "b.toml", "batch = 22\nstorage = \"/b\"\n"+ingestOK)
	tests := []struct {
		name    string
		env     map[string]string
		args    []string
		file    string
		batch   int
		storage string
	}{
		{name: "config after the subcommand", args: []string{"status", "--config", a}, file: a, batch: 21, storage: "/a"},
		{name: "config before the subcommand", args: []string{"--config", a, "status"}, file: a, batch: 21, storage: "/a"},
		{name: "short alias after", args: []string{"status", "-c", b}, file: b, batch: 22, storage: "/b"},
		{name: "both places: after wins", args: []string{"--config", a, "status", "--config", b}, file: b, batch: 22, storage: "/b"},
		{name: "flag after beats the file", args: []string{"status", "--config", a, "--batch", "40"}, file: a, batch: 40, storage: "/a"},
		{name: "flag before beats the file", args: []string{"--batch", "30", "status", "--config", a}, file: a, batch: 30, storage: "/a"},
		{name: "flags on both sides: after wins", args: []string{"--batch", "30", "--storage", "/x", "status", "--config", a, "--batch", "40"},
			file: a, batch: 40, storage: "/x"},
		{name: "environment beats the file", env: map[string]string{"FDFWD_BATCH": "50"}, args: []string{"status", "--config", a}, file: a, batch: 50, storage: "/a"},
		{name: "flag after beats the environment", env: map[string]string{"FDFWD_BATCH": "50"}, args: []string{"status", "--config", a, "--batch", "40"},
			file: a, batch: 40, storage: "/a"},
		{name: "config from the environment", env: map[string]string{"FDFWD_CONFIG": b}, args: []string{"status"}, file: b, batch: 22, storage: "/b"},
		{name: "flag config beats FDFWD_CONFIG", env: map[string]string{"FDFWD_CONFIG": b}, args: []string{"status", "--config", a}, file: a, batch: 21, storage: "/a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			var got *Config
			app := NewApp(Ingest, "ingest", "test", func(context.Context, *Config, zerolog.Logger) error {
				return errors.New("the main action ran instead of the subcommand")
			})
			app.Commands = append(app.Commands, Subcommand(Ingest, "status", "test", func(_ context.Context, c *Config, _ zerolog.Logger) error {
				got = c
				return nil
			}))
			var stdout, stderr, logs bytes.Buffer
			app.Writer, app.ErrWriter = &stdout, &logs
			if code := Execute(context.Background(), app, append([]string{"ingest"}, tt.args...), &stderr); code != 0 {
				t.Fatalf("exit %d: %s", code, stderr.String())
			}
			if got == nil {
				t.Fatal("the subcommand did not run")
			}
			if got.File != tt.file || got.Batch != tt.batch || got.Storage != tt.storage {
				t.Errorf("file %q batch %d storage %q, want %q %d %q", got.File, got.Batch, got.Storage, tt.file, tt.batch, tt.storage)
			}
		})
	}
	t.Run("unknown flag after the subcommand", func(t *testing.T) {
		app := NewApp(Ingest, "ingest", "test", nil)
		app.Commands = append(app.Commands, Subcommand(Ingest, "status", "test", nil))
		var stdout, stderr, logs bytes.Buffer
		app.Writer, app.ErrWriter = &stdout, &logs
		code := Execute(context.Background(), app, []string{"ingest", "status", "--bogus"}, &stderr)
		if code != ExitUsage || stderr.String() != "ingest: error: flag provided but not defined: -bogus\n" {
			t.Errorf("exit %d, stderr %q", code, stderr.String())
		}
	})
}
