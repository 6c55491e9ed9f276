// Package logging builds the zerolog logger every command uses: JSON lines
// for machines (files, journald, containers), zerolog's console format when
// the output is a terminal. Secrets are kept out by the values logged, not
// here: config.Config redacts itself.
package logging

import (
	"io"
	"os"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/term"
)

// New is a logger writing to w at info level, or debug level with debug.
// When w is a terminal (an *os.File for which term.IsTerminal holds) the
// output is zerolog's human-readable console format; otherwise one JSON
// object per line.
func New(w io.Writer, debug bool) zerolog.Logger {
	level := zerolog.InfoLevel
	if debug {
		level = zerolog.DebugLevel
	}
	if IsTerminal(w) {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.DateTime}
	}
	return zerolog.New(w).Level(level).With().Timestamp().Logger()
}

// IsTerminal reports whether w is a terminal.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
