// Command configure writes what a new installation needs: the mTLS
// certificates for the sink → Fluentd link, the Teleport role and user,
// fluent.conf and teleport-event-handler.toml. Its arguments and flags are
// described by `configure --help` and docs/configuration.md.
package main

import (
	"context"
	"errors"
	"net"
	"os"

	"github.com/rs/zerolog"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/certs"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/configure"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/logging"
)

func main() {
	config.Main(config.NewApp(config.Configure, "configure",
		"Write mTLS certificates, NATS credentials, the Teleport role, fluent.conf and the TOML configuration", run))
}

func run(ctx context.Context, cfg *config.Config, _ zerolog.Logger) error {
	o := cfg.Configure
	ips := make([]net.IP, 0, len(o.IPs))
	for _, s := range o.IPs {
		ips = append(ips, net.ParseIP(s)) // validated by config.Load
	}
	nodes, err := configure.ParseClusterNodes(o.NATSCluster)
	if err != nil {
		return &config.UsageError{Err: err}
	}
	if o.NATSCredentials && len(nodes) > 0 {
		return &config.UsageError{Err: errors.New("--nats-cluster makes its certificates with the CA of a new configure run: run configure <out-dir> --nats-cluster ... without --nats-credentials")}
	}
	if o.NATSCredentials {
		_, err := configure.AddNATSCredentials(ctx, configure.Options{OutDir: o.OutDir, Force: o.Force, Out: os.Stdout})
		return err
	}
	_, err = configure.Run(ctx, configure.Options{
		OutDir:           o.OutDir,
		TeleportAddr:     o.TeleportAddr,
		TTL:              o.TTL,
		DNSNames:         o.DNSNames,
		IPs:              ips,
		KeyType:          certs.KeyType(o.KeyType),
		RSABits:          o.Length,
		EncryptClientKey: o.EncryptClientKey,
		Force:            o.Force,
		Lock:             o.Lock,
		Forward:          o.Forward,
		Helm:             o.Helm,
		CACommonName:     o.CACommonName,
		ServerCommonName: o.ServerCommonName,
		ClientCommonName: o.ClientCommonName,
		CAName:           o.CAName,
		ServerName:       o.ServerName,
		ClientName:       o.ClientName,
		NATSNames:        o.NATSNames,
		NATSCluster:      nodes,
		NATSConfDir:      o.NATSConfDir,
		NATSStoreDir:     o.NATSStoreDir,
		Stdin:            os.Stdin,
		StdinIsTerminal:  logging.IsTerminal(os.Stdin),
		Out:              os.Stdout,
	})
	return err
}
