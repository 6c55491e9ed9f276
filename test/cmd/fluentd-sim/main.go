// Command fluentd-sim runs the Fluentd in_http test double (test/fluentdsim)
// as a process, for `make demo`, benchmarks and end-to-end tests: HTTPS with
// client_cert_auth on --addr, in_forward over TLS on --forward-addr (with a
// shared key from --shared-key-file), counts and controls on --stats-addr,
// faults from flags. It prints one "ready" line with the URLs, and its
// counts on exit (SIGINT/SIGTERM).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/logging"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/version"
	"github.com/teleport-event-bus/teleport-event-bus/test/fluentdsim"
)

const program = "fluentd-sim"

// passphraseEnv can hold the server key's passphrase, to keep it out of ps.
const passphraseEnv = "FLUENTD_SIM_KEY_PASSPHRASE"

// sharedKeyEnv can hold in_forward's shared key.
const sharedKeyEnv = "FLUENTD_SIM_SHARED_KEY"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case errors.Is(err, flag.ErrHelp):
	case err != nil:
		fmt.Fprintf(os.Stderr, "%s: %v\n", program, err)
		os.Exit(1)
	}
}

// settings are the command's flags beyond fluentdsim.Options.
type settings struct {
	opts              fluentdsim.Options
	downAfter         time.Duration
	downFor           time.Duration
	debug, version    bool
	passphraseFile    string
	match, poisonList string
	sharedKeyFile     string
	users             string
}

func parseFlags(args []string, stderr io.Writer) (settings, error) {
	var s settings
	o := &s.opts
	fs := flag.NewFlagSet(program, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	fs.StringVar(&o.Addr, "addr", "127.0.0.1:8888", "in_http listen `address` (host:port; port 0 picks one)")
	fs.StringVar(&o.CAFile, "ca", "", "CA certificate `file` client certificates must chain to")
	fs.StringVar(&o.CertFile, "cert", "", "server certificate `file`")
	fs.StringVar(&o.KeyFile, "key", "", "server key `file` (PEM; may be encrypted PKCS#8)")
	fs.StringVar(&o.KeyPassphrase, "key-passphrase", "", "passphrase of the server key (or set "+passphraseEnv+")")
	fs.StringVar(&s.passphraseFile, "key-passphrase-file", "", "`file` holding the passphrase of the server key")
	fs.BoolVar(&o.PlainHTTP, "plain-http", false, "serve plain HTTP without TLS (no client_cert_auth)")
	fs.BoolVar(&o.StatusCreated, "status-created", false, "answer 201 on success, as Fluent Bit does")
	fs.StringVar(&s.match, "match", "", "comma-separated <match> `patterns` (e.g. 'test.log,session.*.log'); other tags are dropped with a warning; empty: all tags")
	fs.BoolVar(&o.KeepRecords, "keep-records", false, "keep full records (for GET /records)")
	fs.BoolVar(&o.KeepTimeKey, "keep-time-key", false, "keep `time` in the records in_http stores, as <parse> keep_time_key true does (default: taken out, as Fluentd's default)")
	fs.StringVar(&o.JSONLPath, "jsonl", "", "append each stored record to this JSONL `file`")
	fs.StringVar(&o.StatsAddr, "stats-addr", "127.0.0.1:0", "plain-HTTP stats and control `address`; empty: none")
	fs.Float64Var(&o.Faults.ErrorPercent, "error-rate", 0, "`percent` (0-100) of requests answered 500")
	fs.Float64Var(&o.Faults.DropPercent, "drop-rate", 0, "`percent` (0-100) of requests whose connection is closed without an answer")
	fs.DurationVar(&o.Faults.Latency, "latency", 0, "added before each answer, after storing")
	fs.BoolVar(&o.Faults.EmitFail, "emit-fail", false, "answer every request 500 (Fluentd cannot buffer)")
	fs.StringVar(&s.poisonList, "poison", "", "comma-separated `field=value` rules: records with that field value get 400")
	fs.StringVar(&o.ForwardAddr, "forward-addr", "", "also serve in_forward on this `address` (host:port; port 0 picks one); empty: off")
	fs.StringVar(&s.sharedKeyFile, "shared-key-file", "", "in_forward <security> shared_key from this `file` (first line), or set "+sharedKeyEnv+"; empty: no handshake")
	fs.StringVar(&o.SelfHostname, "self-hostname", "", "in_forward <security> self_hostname (default fluentd-sim)")
	fs.StringVar(&s.users, "users", "", "in_forward user_auth: comma-separated `user=password` pairs (needs a shared key)")
	fs.BoolVar(&o.Faults.NoAck, "no-ack", false, "in_forward: store messages but never send their ack")
	fs.DurationVar(&s.downAfter, "down-after", 0, "go down this long after start (needs -down-for)")
	fs.DurationVar(&s.downFor, "down-for", 0, "length of the down period (listener closed, then reopened on the same port)")
	fs.BoolVar(&s.debug, "debug", false, "log at debug level (TLS handshake failures)")
	fs.BoolVar(&s.version, "version", false, "print the version and exit")

	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(stderr, "Usage of %s: a Fluentd in_http test double.\n"+
				"Prints \"%s ready url=<in_http URL> stats=<stats URL>[ forward=<in_forward URL>]\" once listening, its counts on exit.\n"+
				"Stats endpoint: GET /stats, GET /ids?tag=T, GET /records?tag=T (with -keep-records),\n"+
				"GET|PUT /faults (JSON), POST /down?for=5s, POST /up, POST /reset.\n\n", program, program)
			fs.SetOutput(stderr)
			fs.PrintDefaults()
		}
		return s, err
	}
	if fs.NArg() > 0 {
		return s, fmt.Errorf("unexpected argument %q (all settings are flags; see -h)", fs.Arg(0))
	}
	if s.version {
		return s, nil
	}
	return s, s.check()
}

// check validates the flags and fills what they imply.
func (s *settings) check() error {
	o := &s.opts
	if o.KeyPassphrase == "" {
		o.KeyPassphrase = os.Getenv(passphraseEnv)
	}
	if s.passphraseFile != "" {
		b, err := os.ReadFile(s.passphraseFile)
		if err != nil {
			return fmt.Errorf("-key-passphrase-file: %w", err)
		}
		o.KeyPassphrase = strings.TrimRight(string(b), "\r\n")
	}
	if !o.PlainHTTP && (o.CAFile == "" || o.CertFile == "" || o.KeyFile == "") {
		return errors.New("-ca, -cert and -key are required (or -plain-http)")
	}
	o.SharedKey = os.Getenv(sharedKeyEnv)
	if s.sharedKeyFile != "" {
		b, err := os.ReadFile(s.sharedKeyFile)
		if err != nil {
			return fmt.Errorf("-shared-key-file: %w", err)
		}
		o.SharedKey = strings.TrimRight(strings.SplitN(string(b), "\n", 2)[0], "\r")
		if o.SharedKey == "" {
			return fmt.Errorf("-shared-key-file %q is empty", s.sharedKeyFile)
		}
	}
	for _, p := range splitList(s.users) {
		user, pass, ok := strings.Cut(p, "=")
		if !ok || user == "" {
			return fmt.Errorf("-users %q: want user=password", p)
		}
		if o.Users == nil {
			o.Users = map[string]string{}
		}
		o.Users[user] = pass
	}
	if len(o.Users) > 0 && o.SharedKey == "" {
		return errors.New("-users needs a shared key (-shared-key-file): in_forward checks users in the shared-key handshake")
	}
	if o.ForwardAddr == "" && (o.SharedKey != "" || o.Faults.NoAck) {
		return errors.New("-shared-key-file and -no-ack are for in_forward: set -forward-addr")
	}
	o.MatchTags = splitList(s.match)
	for _, p := range splitList(s.poisonList) {
		field, value, ok := strings.Cut(p, "=")
		if !ok || field == "" {
			return fmt.Errorf("-poison %q: want field=value", p)
		}
		o.Faults.Poison = append(o.Faults.Poison, fluentdsim.Poison{Field: field, Value: value})
	}
	if o.Faults.ErrorPercent < 0 || o.Faults.ErrorPercent > 100 {
		return fmt.Errorf("-error-rate %v: want a percent within 0-100", o.Faults.ErrorPercent)
	}
	if o.Faults.DropPercent < 0 || o.Faults.DropPercent > 100 {
		return fmt.Errorf("-drop-rate %v: want a percent within 0-100", o.Faults.DropPercent)
	}
	if o.Faults.Latency < 0 {
		return fmt.Errorf("-latency %v: must not be negative", o.Faults.Latency)
	}
	if s.downAfter < 0 || s.downFor < 0 {
		return errors.New("-down-after and -down-for must not be negative")
	}
	if (s.downAfter > 0) != (s.downFor > 0) {
		return errors.New("-down-after and -down-for go together")
	}
	return nil
}

func splitList(v string) []string {
	var out []string
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// run serves until ctx ends, then prints the counts.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	s, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	if s.version {
		fmt.Fprintln(stdout, version.String(program))
		return nil
	}
	s.opts.Logger = logging.New(stderr, s.debug).With().Str("program", program).Logger()
	srv, err := fluentdsim.Start(ctx, s.opts)
	if err != nil {
		return err
	}
	stats := srv.StatsURL()
	if stats == "" {
		stats = "none"
	}
	forward := ""
	if u := srv.ForwardURL(); u != "" {
		forward = " forward=" + u
	}
	fmt.Fprintf(stdout, "%s ready url=%s stats=%s%s\n", program, srv.URL(), stats, forward)

	var wg sync.WaitGroup
	if s.downAfter > 0 {
		wg.Go(func() {
			t := time.NewTimer(s.downAfter)
			defer t.Stop()
			select {
			case <-t.C:
				srv.Down(s.downFor)
			case <-ctx.Done():
			}
		})
	}
	<-srv.Done() // closed once ctx ends
	wg.Wait()
	fmt.Fprintf(stdout, "%s counts: %s\n", program, srv.Stats())
	if err := srv.Close(); err != nil {
		return err
	}
	return nil
}
