// Command gendoc writes the configuration reference (config.Reference) to
// a file: go run ./pkg/config/internal/gendoc -o docs/configuration.md
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
)

func main() {
	out := flag.String("o", "docs/configuration.md", "file to write")
	flag.Parse()
	if err := os.WriteFile(*out, []byte(config.Reference()), 0o644); err != nil {
		fmt.Fprintf(os.Stderr, "gendoc: error: %v\n", err)
		os.Exit(1)
	}
}
