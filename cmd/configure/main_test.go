package main

import (
	"os"
	"testing"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/config"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/config/clitest"
)

func TestBinary(t *testing.T) {
	bin := clitest.Build(t, "configure")
	clitest.Binary(t, bin, "configure", config.Configure)

	t.Run("bad arguments", func(t *testing.T) {
		dir := t.TempDir()
		tests := []struct {
			args []string
			want string
		}{
			{nil, "configure: error: missing argument <out-dir>: usage: configure <out-dir> [teleport-addr [ca-name [server-name [client-name]]]]\n"},
			{[]string{"--length", "1024", dir}, "configure: error: flag --length: must be 2048 or 4096, got 1024\n"},
			{[]string{"--key-type", "dsa", dir}, "configure: error: flag --key-type: must be rsa or ecdsa, got \"dsa\"\n"},
		}
		for _, tt := range tests {
			_, errOut, code := clitest.Exec(t, bin, tt.args...)
			if code != 2 || errOut != tt.want {
				t.Errorf("%v: exit %d stderr %q; want 2 and %q", tt.args, code, errOut, tt.want)
			}
		}
		if entries, err := os.ReadDir(dir); err != nil || len(entries) != 0 {
			t.Errorf("files written despite bad arguments: %d (%v)", len(entries), err)
		}
	})
}
