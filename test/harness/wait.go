package harness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
)

// pollEvery is how often WaitFor checks its condition, and pollTimeout how
// long one check may take: a request to a server that is killed while it
// answers is never answered, and must not hold the wait to its deadline.
const pollEvery = 100 * time.Millisecond

var pollTimeout = 5 * time.Second

// WaitFor polls cond until it reports done or ctx ends; bound the wait with
// a deadline on ctx. Each call of cond gets pollTimeout at most. cond returns whether it is done and a short description
// of the state it saw, which the error quotes when the wait fails. An error
// from cond does not end the wait (a process may be restarting): it becomes
// the state, and WaitFor keeps polling. An error from cond that wraps
// ErrStopWaiting ends the wait at once.
func WaitFor(ctx context.Context, what string, cond func(ctx context.Context) (done bool, state string, err error)) error {
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	var state string
	for {
		cctx, cancel := context.WithTimeout(ctx, pollTimeout)
		done, s, err := cond(cctx)
		cancel()
		switch {
		case errors.Is(err, ErrStopWaiting):
			return fmt.Errorf("waiting for %s: %w", what, err)
		case err != nil:
			state = "error: " + err.Error()
		case done:
			return nil
		default:
			state = s
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w; last state: %s", what, ctx.Err(), state)
		case <-tick.C:
		}
	}
}

// ErrStopWaiting, wrapped in an error from a WaitFor condition, ends the
// wait with that error (a process died; waiting longer cannot help).
var ErrStopWaiting = errors.New("stop waiting")

// Alive returns an error wrapping ErrStopWaiting, with the end of its log,
// for the first of procs that has exited; nil when all run.
func Alive(procs ...*Proc) error {
	for _, p := range procs {
		if p == nil {
			continue
		}
		if exited, code := p.Exited(); exited {
			return fmt.Errorf("%w: %s exited (code %d)\n%s", ErrStopWaiting, p.Name, code, p.Tail(20))
		}
	}
	return nil
}

// Soak reports whether the long versions of the end-to-end tests were asked
// for (SOAK=1 in the environment).
func Soak() bool {
	v := strings.TrimSpace(os.Getenv("SOAK"))
	return v != "" && v != "0" && !strings.EqualFold(v, "false")
}
