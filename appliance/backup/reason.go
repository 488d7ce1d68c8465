package backup

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"syscall"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cairnbackup/cairn/appliance/gateway"
)

// ErrStorageFull matches (errors.Is) the failures caused by the
// appliance's storage being full.
var ErrStorageFull = errors.New("appliance storage is full")

// Reason is the operator's account of why a job failed: the error's text,
// led by "appliance storage is full" when the pool ran out of space.
func Reason(err error) string {
	if err == nil {
		return ""
	}
	if storageFull(err) && !errors.Is(err, ErrStorageFull) {
		return ErrStorageFull.Error() + ": " + err.Error()
	}
	return err.Error()
}

// storageFull reports whether err comes from a full pool: ENOSPC (or
// EDQUOT) through any wrapping, or the zfs command's "out of space".
func storageFull(err error) bool {
	if errors.Is(err, ErrStorageFull) || errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return true
	}
	s := strings.ToLower(err.Error())
	return strings.Contains(s, "out of space") || strings.Contains(s, "no space left on device")
}

// storageErr wraps an error of the pool: ErrStorageFull when it is one.
func storageErr(what string, err error) error {
	if storageFull(err) {
		return fmt.Errorf("%w: %s: %w", ErrStorageFull, what, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// agentErr describes the failure of a call to the agent.
func agentErr(ctx context.Context, call string, err error) error {
	if errors.Is(err, gateway.ErrNotConnected) {
		return fmt.Errorf("agent not connected: %w", err)
	}
	if ctx.Err() != nil {
		return fmt.Errorf("canceled: %s: %w", call, ctx.Err())
	}
	st, ok := status.FromError(err)
	if !ok {
		return fmt.Errorf("%s: %w", call, err)
	}
	switch st.Code() {
	case codes.Unavailable, codes.Canceled:
		return fmt.Errorf("lost the connection to the agent during %s: %s: %w", call, st.Message(), err)
	case codes.DeadlineExceeded:
		return fmt.Errorf("the agent did not answer %s in time: %w", call, err)
	case codes.Unimplemented:
		return fmt.Errorf("the agent does not support %s (upgrade the agent): %w", call, err)
	}
	return fmt.Errorf("agent refused %s: %s (%s): %w", call, st.Message(), st.Code(), err)
}
