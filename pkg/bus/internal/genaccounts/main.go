// Command genaccounts writes deploy/nats, the template of the cluster's
// configuration (bus.TemplateCluster rendered by bus.ClusterFiles):
// go run ./pkg/bus/internal/genaccounts -dir deploy/nats
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
)

func main() {
	dir := flag.String("dir", "deploy/nats", "directory to write")
	flag.Parse()
	spec := bus.TemplateCluster(bus.NamesFor(config.Default().NATS, config.Default().Sink))
	for _, f := range bus.ClusterFiles(spec) {
		if err := os.WriteFile(filepath.Join(*dir, f.Name), f.Data, 0o644); err != nil {
			fmt.Fprintf(os.Stderr, "genaccounts: error: %v\n", err)
			os.Exit(1)
		}
	}
}
