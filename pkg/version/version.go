// Package version holds what `<command> version` prints. Version and Commit
// are stamped at build time with -ldflags "-X".
package version

import (
	"fmt"
	"runtime"
)

// Stamped at build time; the defaults are what a plain `go build` gives.
var (
	Version = "dev"
	Commit  = "unknown"
)

// String is the one-line version report: program, version, commit, Go.
func String(program string) string {
	return fmt.Sprintf("%s %s (commit %s, %s %s/%s)", program, Version, Commit, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
