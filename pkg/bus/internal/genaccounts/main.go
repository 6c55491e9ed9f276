// Command genaccounts writes the cluster's users and permissions
// (bus.AccountsConf) to a file:
// go run ./pkg/bus/internal/genaccounts -o deploy/nats/accounts.conf
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
)

func main() {
	out := flag.String("o", "deploy/nats/accounts.conf", "file to write")
	flag.Parse()
	if err := os.WriteFile(*out, bus.AccountsConf(), 0o644); err != nil {
		fmt.Fprintf(os.Stderr, "genaccounts: error: %v\n", err)
		os.Exit(1)
	}
}
