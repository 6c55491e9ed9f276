// Command nats-server is the real NATS server, built from the
// github.com/nats-io/nats-server/v2 module this project pins, so the cluster
// tests and deploy/nats configs run against separate server processes
// without downloading anything. It takes the upstream server's flags
// (-c config, -js, -p, --cluster, --routes, …).
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/nats-io/nats-server/v2/server"
)

func main() {
	fs := flag.NewFlagSet("nats-server", flag.ExitOnError)
	opts, err := server.ConfigureOptions(fs, os.Args[1:],
		server.PrintServerAndExit,
		fs.Usage,
		server.PrintTLSHelpAndDie)
	if err != nil {
		fmt.Fprintf(os.Stderr, "nats-server: %v\n", err)
		os.Exit(2)
	}
	s, err := server.NewServer(opts)
	if err != nil {
		fmt.Fprintf(os.Stderr, "nats-server: %v\n", err)
		os.Exit(1)
	}
	s.ConfigureLogger()
	if err := server.Run(s); err != nil {
		fmt.Fprintf(os.Stderr, "nats-server: %v\n", err)
		os.Exit(1)
	}
	s.WaitForShutdown()
}
