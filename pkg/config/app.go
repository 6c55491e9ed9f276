package config

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/rs/zerolog"
	"github.com/urfave/cli/v2"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/logging"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/version"
)

// RunFunc is a command's work: it runs until done or until ctx is
// cancelled (SIGINT, SIGTERM), and returns nil on a clean stop.
type RunFunc func(ctx context.Context, cfg *Config, log zerolog.Logger) error

// UsageError is a mistake on the command line (unknown flag, missing
// argument). Main exits with status 2 on it, as on *Error.
type UsageError struct {
	Err error
}

// Error is the underlying message.
func (e *UsageError) Error() string { return e.Err.Error() }

// Unwrap returns the underlying error.
func (e *UsageError) Unwrap() error { return e.Err }

// Exit statuses of Main.
const (
	ExitOK      = 0
	ExitRuntime = 1 // the command failed while running
	ExitUsage   = 2 // bad flags, arguments or configuration
)

// NewApp is the command-line program for cmd: its flags (Flags), a
// `version` subcommand and --version, --help. Its action loads the
// configuration (Load), builds the logger (JSON, or console output on a
// terminal; debug level with --debug), logs the redacted configuration at
// debug level and calls run with a context cancelled on SIGINT or
// SIGTERM. Run it with Main or Execute, which print errors as one line.
func NewApp(cmd Command, name, usage string, run RunFunc) *cli.App {
	app := &cli.App{
		Name:            name,
		Usage:           usage,
		Version:         version.Version,
		HideVersion:     true,
		HideHelpCommand: true,
		Flags: append(Flags(cmd), &cli.BoolFlag{
			Name:  "version",
			Usage: "Print the version, commit and Go version, and exit",
		}),
		Commands: []*cli.Command{{
			Name:  "version",
			Usage: "Print the version, commit and Go version",
			Action: func(c *cli.Context) error {
				if c.Args().Present() {
					return &UsageError{Err: fmt.Errorf("version takes no arguments, got %q", c.Args().First())}
				}
				_, err := fmt.Fprintln(c.App.Writer, version.String(name))
				return err
			},
			OnUsageError: usageError,
		}},
		OnUsageError:   usageError,
		ExitErrHandler: func(*cli.Context, error) {}, // Execute decides the exit status
		Action: func(c *cli.Context) error {
			if c.Bool("version") {
				_, err := fmt.Fprintln(c.App.Writer, version.String(name))
				return err
			}
			return action(c, cmd, true, run)
		},
	}
	if cmd == Configure {
		app.ArgsUsage = "<out-dir> [teleport-addr [ca-name [server-name [client-name]]]]"
	}
	return app
}

// Subcommand is an extra subcommand of cmd's app (such as `ingest status`)
// that runs like the main action: the app's flags and file are loaded for
// cmd, logging is set up, and run gets a context cancelled on SIGINT or
// SIGTERM. The flags may be given before the subcommand name, after it, or
// both; a flag given in both places takes the value given after it. Unlike
// the main action it does not require Teleport credentials or a Fluentd URL
// (a status report needs only NATS); what is set is still checked. Add it
// to the app's Commands.
func Subcommand(cmd Command, name, usage string, run RunFunc) *cli.Command {
	return &cli.Command{
		Name:         name,
		Usage:        usage,
		Flags:        Flags(cmd),
		OnUsageError: usageError,
		Action: func(c *cli.Context) error {
			return action(c, cmd, false, run)
		},
	}
}

func usageError(_ *cli.Context, err error, _ bool) error { return &UsageError{Err: err} }

func action(c *cli.Context, cmd Command, required bool, run RunFunc) error {
	cfg, err := load(c, cmd, required)
	if err != nil {
		return err
	}
	log := logging.New(c.App.ErrWriter, cfg.Debug)
	log.Debug().Object("config", cfg).Msg("configuration loaded")

	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()
	err = run(ctx, cfg, log)
	if err != nil && ctx.Err() != nil && c.Context.Err() == nil && errors.Is(err, context.Canceled) {
		// Stopped by a signal: a clean shutdown, not a failure.
		return nil
	}
	return err
}

// Execute runs app with args (args[0] is the program) and returns the exit
// status: 0, 1 for a runtime error, 2 for a usage or configuration error.
// An error is printed to stderr as one line `<name>: error: <message>`,
// without usage text or stack trace.
func Execute(ctx context.Context, app *cli.App, args []string, stderr io.Writer) int {
	err := app.RunContext(ctx, args)
	if err == nil {
		return ExitOK
	}
	fmt.Fprintf(stderr, "%s: error: %s\n", app.Name, oneLine(err.Error()))
	var ue *UsageError
	var ce *Error
	if errors.As(err, &ue) || errors.As(err, &ce) {
		return ExitUsage
	}
	return ExitRuntime
}

// Main runs app with the process's arguments and exits with Execute's
// status. Every command's main calls it, so exit statuses are uniform.
func Main(app *cli.App) {
	os.Exit(Execute(context.Background(), app, os.Args, os.Stderr))
}

// oneLine folds a multi-line message (errors.Join) onto one line.
func oneLine(s string) string {
	lines := strings.FieldsFunc(strings.TrimSpace(s), func(r rune) bool { return r == '\n' || r == '\r' })
	return strings.Join(lines, "; ")
}
