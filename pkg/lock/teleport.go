package lock

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/gravitational/teleport/api/types"
	"github.com/gravitational/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/teleport-event-bus/teleport-event-bus/pkg/backoff"
	"github.com/teleport-event-bus/teleport-event-bus/pkg/teleport"
)

// Locker is the one Teleport call the watcher makes. *teleport.Client
// implements it; so does the api client.
type Locker interface {
	// UpsertLock creates or updates a lock.
	UpsertLock(ctx context.Context, lock types.Lock) error
}

// lockNamePrefix starts the name of every lock the watcher creates, so
// `tctl get locks` shows where they came from.
const lockNamePrefix = "teleport-event-bus-failed-logins-"

// PermissionCheckName is the name of the lock CheckPermission upserts, and
// PermissionCheckUser the user it targets: a user that should not exist.
const (
	PermissionCheckName = "teleport-event-bus-permission-check"
	PermissionCheckUser = "teleport-event-bus-permission-check"
)

// ErrNoLockPermission is wrapped by CheckPermission's error when Teleport
// refuses to create a lock.
var ErrNoLockPermission = errors.New("the Teleport role cannot create locks")

// callTimeout bounds one Teleport call.
const callTimeout = 15 * time.Second

// lockName is the deterministic name of the lock a window leads to: the
// same window, delivered again or seen by another watcher, always gives the
// same name, so upserting it again changes nothing.
func lockName(user, login string, w window) string {
	h := sha256.New()
	for _, s := range []string{user, login, strconv.FormatInt(w.Start.UnixNano(), 10), w.IDs[0]} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return lockNamePrefix + hex.EncodeToString(h.Sum(nil))[:24]
}

// newLock builds the lock for a window: it targets the user, and the login
// when the events named one; it expires lockFor after now, or never when
// lockFor is 0.
func newLock(name, user, login string, w window, period, lockFor time.Duration, now time.Time) (types.Lock, error) {
	msg := fmt.Sprintf("Locked by teleport-event-bus: %d failed logins within %s (from %s to %s)",
		len(w.IDs), period, w.Start.UTC().Format(time.RFC3339), w.End.UTC().Format(time.RFC3339))
	spec := types.LockSpecV2{
		Target:  types.LockTarget{User: user, Login: login},
		Message: msg,
	}
	if lockFor > 0 {
		exp := now.Add(lockFor).UTC()
		spec.Expires = &exp
	}
	l, err := types.NewLock(name, spec)
	if err != nil {
		return nil, fmt.Errorf("build lock %q for user %q: %w", name, user, err)
	}
	return l, nil
}

// CheckPermission finds out at start-up whether Teleport lets this identity
// create locks, by upserting a lock that is never in force: it targets
// PermissionCheckUser and expired at now, and Teleport's backend deletes it
// a minute later. A refusal is ErrNoLockPermission with what to change;
// transient errors are retried with backoff until ctx ends.
func CheckPermission(ctx context.Context, tp Locker, now time.Time) error {
	probe, err := types.NewLock(PermissionCheckName, types.LockSpecV2{
		Target:  types.LockTarget{User: PermissionCheckUser},
		Message: "teleport-event-bus start-up check of the lock permission; never in force",
		Expires: &now,
	})
	if err != nil {
		return fmt.Errorf("build permission check lock: %w", err)
	}
	probe.SetExpiry(now.Add(time.Minute))
	b := backoff.Backoff{Policy: backoff.Reconnect}
	for {
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		err = tp.UpsertLock(cctx, probe)
		cancel()
		switch {
		case err == nil:
			return nil
		case isAccessDenied(err):
			return fmt.Errorf("%w: lock.enabled is on, but Teleport refused a test lock (%v); "+
				"give the role of the teleport identity the rule resources [lock] verbs [create, update] "+
				"(configure --lock writes such a role), or turn lock.enabled off", ErrNoLockPermission, err)
		case ctx.Err() != nil:
			return fmt.Errorf("check the lock permission: %w (last error: %v)", ctx.Err(), err)
		case !teleport.IsTransient(err):
			return fmt.Errorf("check the lock permission with a test lock: %w", err)
		}
		if werr := b.Wait(ctx); werr != nil {
			return fmt.Errorf("check the lock permission: %w (last error: %v)", werr, err)
		}
	}
}

// isAccessDenied reports whether Teleport refused the call for lack of
// permission.
func isAccessDenied(err error) bool {
	return trace.IsAccessDenied(err) || errors.Is(err, teleport.ErrAccessDenied) ||
		status.Code(err) == codes.PermissionDenied
}
