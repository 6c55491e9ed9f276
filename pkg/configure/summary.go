package configure

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/bus"
)

// printSummary tells the user what was written and what to run next. It
// never prints a passphrase: that lives in fluent.conf (and client.key.pass).
func printSummary(o Options, res Result) error {
	p := paths{dir: res.Dir, o: o}
	w := &errWriter{w: o.Out}
	w.printf("Wrote %d files to %s:\n", len(res.Files), res.Dir)
	for _, f := range res.Files {
		mode := "?"
		if fi, err := os.Stat(f); err == nil {
			mode = fmt.Sprintf("%04o", fi.Mode().Perm())
		}
		w.printf("  %s  %s\n", mode, filepath.Base(f))
	}
	source := "a generated passphrase"
	if res.PassphraseFromStdin {
		source = "the passphrase read from stdin"
	}
	w.printf("\n%s is encrypted with %s; fluent.conf holds it.\n", filepath.Base(p.serverKey()), source)
	if o.EncryptClientKey {
		w.printf("%s is encrypted; its passphrase is in %s.\n", filepath.Base(p.clientKey()), filepath.Base(p.clientPass()))
	}
	if o.Forward {
		w.printf("fluent.conf serves in_forward on port %d (TLS, client certificates, shared key); the key is in %s, which the TOML names.\n",
			DefaultForwardPort, SharedKeyFile)
	}
	w.printf(`
Next steps:
  1. Create the Teleport role, then its user (in this order; if Teleport
     refuses the role, stop there: see docs/troubleshooting.md):
       tctl create -f %[1]s
       tctl create -f %[7]s
  2. Sign the ingest's identity (renew it before it expires):
       tctl auth sign --format=file --user=%[2]s --out=%[3]s --ttl=%[4]s
  3. Start Fluentd (>= 1.12.4):
       fluentd -c %[5]s
  4. Start the ingest (embedded NATS server) and the sink. --start-time is
     the oldest event to export (here %[14]d days back), fixed by the first
     run; without it ingest reads from the moment it first starts. To read
     further back later: ingest backfill --config <toml> --start-time <earlier>.
       ingest --config %[6]s --start-time %[15]s
       fluentd-sink --config %[6]s

The embedded NATS server admits only the keys in %[13]s: ingest and the
sink use their own (%[8]s, %[9]s); other readers use %[10]s:
       nats --server nats://%[11]s --nkey %[12]s stream info TELEPORT_AUDIT
`, filepath.Join(res.Dir, RoleFile), RoleName, p.identity(), identityTTL(o), filepath.Join(res.Dir, FluentConfFile), filepath.Join(res.Dir, TOMLFile),
		filepath.Join(res.Dir, UserFile), NATSSeedFile(bus.RoleIngest), NATSSeedFile(bus.RoleSink), NATSSeedFile(bus.RoleReader), defaultNATSListen, p.file(NATSSeedFile(bus.RoleReader)), NATSUsersFile,
		startDays, suggestedStart(time.Now()))
	if o.Helm {
		w.printf(`
On Kubernetes instead of steps 3 and 4 (after step 2): create the Secrets
from these files, then install the chart:
       sh %[1]s
       helm install teleport-event-bus deploy/helm/teleport-event-bus -n %[2]s -f %[3]s
For a NATS cluster instead of the embedded server, %[4]s says how.
`, p.file(SecretsScriptFile), HelmNamespace, p.file(HelmValuesFile), p.file(NATSChartValuesFile))
	}
	return w.err
}

// startDays is how far back the start-time configure suggests lies.
const startDays = 30

// suggestedStart is the --start-time configure suggests: midnight UTC,
// startDays before now.
func suggestedStart(now time.Time) string {
	d := now.UTC().AddDate(0, 0, -startDays)
	return time.Date(d.Year(), d.Month(), d.Day(), 0, 0, 0, 0, time.UTC).Format(time.RFC3339)
}

// identityTTL is the --ttl suggested for `tctl auth sign`: the
// certificates' lifetime in hours, which Teleport caps at the role's
// max_session_ttl.
func identityTTL(o Options) string {
	return fmt.Sprintf("%dh", int(o.TTL.Hours()))
}

// errWriter keeps the first write error so the summary is one check.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) printf(format string, args ...any) {
	if e.err == nil {
		_, e.err = fmt.Fprintf(e.w, format, args...)
	}
}
