package config

// Command is one of the three programs; it selects which keys, flags and
// checks apply. One TOML file serves all three: a key that belongs to
// another command is accepted and ignored, only unknown keys are errors.
type Command int

// The three commands.
const (
	Ingest Command = iota
	Sink
	Configure
)

// String is the command's binary name.
func (c Command) String() string {
	switch c {
	case Ingest:
		return "ingest"
	case Sink:
		return "fluentd-sink"
	case Configure:
		return "configure"
	}
	return "unknown"
}

// cmdSet is a set of commands a key applies to.
type cmdSet uint8

const (
	forIngest    cmdSet = 1 << Ingest
	forSink      cmdSet = 1 << Sink
	forConfigure cmdSet = 1 << Configure
	forReaders          = forIngest | forSink
	forAll              = forIngest | forSink | forConfigure
)

func (s cmdSet) has(c Command) bool { return s&(1<<c) != 0 }

// names lists the commands in the set, for the reference.
func (s cmdSet) names() []string {
	var out []string
	for _, c := range []Command{Ingest, Sink, Configure} {
		if s.has(c) {
			out = append(out, c.String())
		}
	}
	return out
}
