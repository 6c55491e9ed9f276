// Command teleport-sim runs the simulated Teleport auth server of package
// teleportsim: a gRPC server over mTLS on 127.0.0.1 with a seeded audit log,
// session recordings, faults on demand and a JSON control endpoint.
//
// It writes a client identity (identity, tls.crt, tls.key, ca.crt) into
// --out, keeping the CA (ca.crt, ca.key) there so identities stay valid when
// it is restarted, and writes its gRPC and control addresses to --out/addr
// and --out/control-addr.
package main

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/certs"
	"github.com/teleport-event-bus/teleport-event-bus/test/teleportsim"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case errors.Is(err, flag.ErrHelp):
	case errors.Is(err, errUsage):
		os.Exit(2)
	case err != nil:
		fmt.Fprintln(os.Stderr, "teleport-sim:", err)
		os.Exit(1)
	}
}

var errUsage = errors.New("usage")

// config is the command line.
type config struct {
	opts        teleportsim.Options
	port        int
	out         string
	user        string
	ttl         time.Duration
	controlAddr string
}

func parse(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("teleport-sim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var from, to, latency string
	fs.IntVar(&c.port, "port", 3025, "gRPC port on 127.0.0.1 (0 picks a free one)")
	fs.StringVar(&c.out, "out", "", "directory for the identity, certificates and address files (required)")
	fs.StringVar(&c.user, "user", "teleport-event-handler", "user the client identity is issued to")
	fs.DurationVar(&c.ttl, "ttl", 12*time.Hour, "validity of the client identity; negative writes an expired one")
	fs.StringVar(&c.controlAddr, "control-addr", "127.0.0.1:0", "address of the JSON control endpoint (empty disables it)")
	fs.StringVar(&c.opts.ClusterName, "cluster-name", teleportsim.DefaultClusterName, "cluster name")
	fs.Int64Var(&c.opts.Seed, "seed", 1, "seed of the generated events")
	fs.IntVar(&c.opts.Events, "events", 1000, "number of backfill audit events")
	fs.IntVar(&c.opts.Sessions, "sessions", 20, "number of recorded sessions in the backfill (3 audit events each)")
	fs.IntVar(&c.opts.HugeEvents, "huge-events", 2, "number of events over 1 MB")
	fs.IntVar(&c.opts.ChunksPerDate, "chunks-per-date", 3, "export chunks per UTC date (plus one single-event chunk)")
	fs.StringVar(&from, "from", "", "start of the backfill, RFC 3339 or YYYY-MM-DD (default: 24h before --to)")
	fs.StringVar(&to, "to", "", "end of the backfill, RFC 3339 or YYYY-MM-DD (default: now)")
	fs.DurationVar(&c.opts.UploadLag, "upload-lag", 0, "delay after session.upload before a recording is readable")
	fs.Float64Var(&c.opts.MissingRecordingRate, "missing-recordings", 0.1, "fraction of sessions without a recording")
	fs.BoolVar(&c.opts.Older, "older", false, "behave like Teleport v13-v16: no bulk export, no unstructured session stream")
	fileLog := fs.Bool("file-log", false, "answer searches as Teleport's file audit log does, parsing and sorting every event of the days searched on each call (default: on with --older)")
	fs.Float64Var(&c.opts.LiveRate, "live-rate", 0, "audit events per second appended while running")
	fs.DurationVar(&c.opts.LiveChunkAge, "live-chunk-age", time.Second, "how long a live export chunk collects events before it is listed")
	fs.BoolVar(&c.opts.Prerender, "prerender", false, "render every backfill event on all cores before serving, so serving costs little CPU")
	fs.BoolVar(&c.opts.DenyLocks, "deny-locks", false, "answer UpsertLock with access denied")
	fs.Float64Var(&c.opts.Faults.UnavailableRate, "error-rate", 0, "fraction of calls answered Unavailable")
	fs.Float64Var(&c.opts.Faults.RateLimitRate, "rate-limit-rate", 0, "fraction of calls answered ResourceExhausted \"rate limit exceeded\"")
	fs.IntVar(&c.opts.Faults.CutAfter, "cut-after", 0, "cut every stream with Unavailable after this many messages (0 = never)")
	fs.StringVar(&latency, "latency", "0s", "latency added to every call")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return c, err
		}
		return c, errUsage
	}
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "file-log" {
			c.opts.Search = teleportsim.SearchIndexed
			if *fileLog {
				c.opts.Search = teleportsim.SearchFileLog
			}
		}
	})
	var errs []error
	if fs.NArg() > 0 {
		errs = append(errs, fmt.Errorf("unexpected arguments %q", fs.Args()))
	}
	if c.out == "" {
		errs = append(errs, errors.New("--out is required"))
	}
	if c.port < 0 || c.port > 65535 {
		errs = append(errs, fmt.Errorf("--port %d is outside 0..65535", c.port))
	}
	if c.ttl == 0 {
		errs = append(errs, errors.New("--ttl must not be zero"))
	}
	var err error
	if c.opts.From, err = parseTime(from); err != nil {
		errs = append(errs, fmt.Errorf("--from: %w", err))
	}
	if c.opts.To, err = parseTime(to); err != nil {
		errs = append(errs, fmt.Errorf("--to: %w", err))
	}
	if c.opts.Faults.Latency, err = time.ParseDuration(latency); err != nil {
		errs = append(errs, fmt.Errorf("--latency: %w", err))
	}
	c.opts.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(c.port))
	if err := errors.Join(errs...); err != nil {
		fmt.Fprintln(stderr, "teleport-sim:", err)
		return c, errUsage
	}
	return c, nil
}

func parseTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither RFC 3339 nor YYYY-MM-DD", s)
	}
	return t, nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c, err := parse(args, stderr)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(c.out, 0o700); err != nil {
		return fmt.Errorf("create --out directory: %w", err)
	}
	ca, err := loadOrMakeCA(c.out, c.opts.ClusterName)
	if err != nil {
		return err
	}
	c.opts.CA = ca
	sim, err := teleportsim.Start(ctx, c.opts)
	if err != nil {
		return err
	}
	defer sim.Close()
	identity, err := sim.WriteIdentity(c.out, c.user, c.ttl)
	if err != nil {
		return err
	}
	if err := certs.WriteFile(filepath.Join(c.out, "addr"), []byte(sim.Addr()+"\n"), 0o644); err != nil {
		return err
	}

	controlAddr := "off"
	var control *http.Server
	controlDone := make(chan error, 1)
	if c.controlAddr != "" {
		lis, err := net.Listen("tcp", c.controlAddr)
		if err != nil {
			return fmt.Errorf("control endpoint: listen on %s: %w", c.controlAddr, err)
		}
		controlAddr = lis.Addr().String()
		if err := certs.WriteFile(filepath.Join(c.out, "control-addr"), []byte(controlAddr+"\n"), 0o644); err != nil {
			_ = lis.Close()
			return err
		}
		control = &http.Server{Handler: sim.ControlHandler(), ReadHeaderTimeout: 10 * time.Second}
		go func() { controlDone <- control.Serve(lis) }()
	}
	fmt.Fprintf(stdout, "teleport-sim: serving %d events, %d sessions on %s (control %s, identity %s)\n",
		sim.Stats().Events, len(sim.Sessions()), sim.Addr(), controlAddr, identity)

	select {
	case <-ctx.Done():
	case err := <-controlDone:
		return fmt.Errorf("control endpoint: %w", err)
	}
	if control != nil {
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = control.Shutdown(shutdown) // exiting anyway; open requests are cut
	}
	stats, err := json.Marshal(sim.Stats())
	if err != nil {
		return fmt.Errorf("final stats: %w", err)
	}
	fmt.Fprintf(stderr, "teleport-sim: stopped: %s\n", stats)
	return nil
}

// loadOrMakeCA reuses ca.crt and ca.key in dir, or makes and writes a CA
// when neither exists.
func loadOrMakeCA(dir, cluster string) (*certs.CA, error) {
	certFile, keyFile := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")
	certPEM, certErr := os.ReadFile(certFile)
	keyPEM, keyErr := os.ReadFile(keyFile)
	if errors.Is(certErr, os.ErrNotExist) && errors.Is(keyErr, os.ErrNotExist) {
		ca, err := teleportsim.NewCA(cluster)
		if err != nil {
			return nil, err
		}
		if err := certs.WriteFile(certFile, ca.CertPEM, 0o600); err != nil {
			return nil, err
		}
		if err := certs.WriteFile(keyFile, ca.KeyPEM, 0o600); err != nil {
			return nil, err
		}
		return ca, nil
	}
	if certErr != nil {
		return nil, fmt.Errorf("read CA certificate: %w", certErr)
	}
	if keyErr != nil {
		return nil, fmt.Errorf("read CA key: %w", keyErr)
	}
	block, _ := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("CA certificate %q: no PEM CERTIFICATE block", certFile)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("CA certificate %q: %w", certFile, err)
	}
	key, err := certs.ParseKeyPEM(keyPEM, nil)
	if err != nil {
		return nil, fmt.Errorf("CA key %q: %w", keyFile, err)
	}
	if pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("CA key %q does not match the certificate in %q", keyFile, certFile)
	}
	return &certs.CA{Cert: cert, Key: key, CertPEM: certPEM, KeyPEM: keyPEM}, nil
}
