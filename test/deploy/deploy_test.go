package deploy

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/teleport-event-bus/teleport-event-bus/test/harness"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// repoRoot is the module root, where deploy/ and docs/ are.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return root
}
