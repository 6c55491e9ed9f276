package fluentdsim

import (
	"bufio"
	"bytes"
	"strings"
)

// KeepTimeKey reports whether a fluent.conf keeps `time` in the records
// in_http stores: `keep_time_key true` in the <parse> section of a
// <source> of @type http. Fluentd's default is false. Use it to set
// Options.KeepTimeKey from the configuration a test serves.
func KeepTimeKey(fluentConf []byte) bool {
	var inHTTP, inParse bool
	sc := bufio.NewScanner(bytes.NewReader(fluentConf))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = strings.TrimSpace(line[:i])
		}
		f := strings.Fields(line)
		switch {
		case len(f) == 0:
		case f[0] == "<source>":
			inHTTP = false
		case f[0] == "</source>":
			inHTTP, inParse = false, false
		case len(f) == 2 && f[0] == "@type" && !inParse:
			inHTTP = inHTTP || f[1] == "http"
		case f[0] == "<parse>":
			inParse = true
		case f[0] == "</parse>":
			inParse = false
		case inHTTP && inParse && len(f) == 2 && f[0] == "keep_time_key":
			return f[1] == "true"
		}
	}
	return false
}
