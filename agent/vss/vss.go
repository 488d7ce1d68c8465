// Package vss reads the state of the Volume Shadow Copy Service (VSS)
// writers on a protected Windows machine, as printed by
// "vssadmin list writers", so the agent can report it to the appliance.
//
// Operators check the writers before a backup: a writer that failed (for
// example SqlServerWriter "[8] Failed") means the application data in the
// next recovery point will only be crash-consistent. On Windows, List runs
// the tool; everywhere, [Parse] turns its English output into [Writer]
// values, [Format] renders writers back in the same layout (for fixtures
// and fake providers), and [ToolError] carries the tool's own "Error:"
// output, such as the one printed when the agent is not running elevated.
//
// A writer's health is judged from its state code, the VSS_WRITER_STATE
// value in brackets on its "State:" line:
//
//   - [Writer.Failed]: codes 6-15, the VSS_WS_FAILED_AT_* states. The last
//     error does not make a writer failed.
//   - [Writer.Waiting]: codes 2-5, the VSS_WS_WAITING_FOR_* states; normal
//     while a backup runs, a stuck writer when none does.
//   - [Writer.Healthy]: code 1 (stable) and last error "No error". A stable
//     writer that still reports a last error (say "Timed out" after a
//     retried snapshot) is neither failed nor healthy: show it as a warning.
package vss

import "fmt"

// VSS_WRITER_STATE values (vss.h), as printed in brackets by vssadmin.
const (
	StateUnknown                  = 0
	StateStable                   = 1
	StateWaitingForFreeze         = 2
	StateWaitingForThaw           = 3
	StateWaitingForPostSnapshot   = 4
	StateWaitingForBackupComplete = 5
	StateFailedAtIdentify         = 6
	StateFailedAtPrepareBackup    = 7
	StateFailedAtPrepareSnapshot  = 8
	StateFailedAtFreeze           = 9
	StateFailedAtThaw             = 10
	StateFailedAtPostSnapshot     = 11
	StateFailedAtBackupComplete   = 12
	StateFailedAtPreRestore       = 13
	StateFailedAtPostRestore      = 14
	StateFailedAtBackupShutdown   = 15
)

// StateNames maps each VSS_WRITER_STATE code (the index) to its name in
// vss.h, for display. Parse accepts only codes that index this table.
var StateNames = [...]string{
	StateUnknown:                  "VSS_WS_UNKNOWN",
	StateStable:                   "VSS_WS_STABLE",
	StateWaitingForFreeze:         "VSS_WS_WAITING_FOR_FREEZE",
	StateWaitingForThaw:           "VSS_WS_WAITING_FOR_THAW",
	StateWaitingForPostSnapshot:   "VSS_WS_WAITING_FOR_POST_SNAPSHOT",
	StateWaitingForBackupComplete: "VSS_WS_WAITING_FOR_BACKUP_COMPLETE",
	StateFailedAtIdentify:         "VSS_WS_FAILED_AT_IDENTIFY",
	StateFailedAtPrepareBackup:    "VSS_WS_FAILED_AT_PREPARE_BACKUP",
	StateFailedAtPrepareSnapshot:  "VSS_WS_FAILED_AT_PREPARE_SNAPSHOT",
	StateFailedAtFreeze:           "VSS_WS_FAILED_AT_FREEZE",
	StateFailedAtThaw:             "VSS_WS_FAILED_AT_THAW",
	StateFailedAtPostSnapshot:     "VSS_WS_FAILED_AT_POST_SNAPSHOT",
	StateFailedAtBackupComplete:   "VSS_WS_FAILED_AT_BACKUP_COMPLETE",
	StateFailedAtPreRestore:       "VSS_WS_FAILED_AT_PRE_RESTORE",
	StateFailedAtPostRestore:      "VSS_WS_FAILED_AT_POST_RESTORE",
	StateFailedAtBackupShutdown:   "VSS_WS_FAILED_AT_BACKUPSHUTDOWN",
}

// StateText returns the text vssadmin prints after the bracketed code
// ("Stable", "Frozen", "Waiting for completion", "Failed", ...), from its
// English string table. Format uses it when a Writer's State is empty.
// Parse does not check the text against the code.
func StateText(code int) string {
	switch {
	case code == StateStable:
		return "Stable"
	case code == StateWaitingForFreeze:
		return "Waiting for freeze"
	case code == StateWaitingForThaw:
		return "Frozen"
	case code == StateWaitingForPostSnapshot:
		return "Waiting for post shadow copy"
	case code == StateWaitingForBackupComplete:
		return "Waiting for completion"
	case code >= StateFailedAtIdentify && code <= StateFailedAtBackupShutdown:
		return "Failed"
	default:
		return "Unknown"
	}
}

// Last errors vssadmin prints on a writer's "Last error:" line (it prints
// "Unexpected error" for any failure code it has no text for). Parse keeps
// any text verbatim.
const (
	LastErrorNone                   = "No error"
	LastErrorRetryable              = "Retryable error"
	LastErrorNonRetryable           = "Non-retryable error"
	LastErrorTimedOut               = "Timed out"
	LastErrorInconsistentShadowCopy = "Inconsistent shadow copy"
	LastErrorOutOfResources         = "Out of resources"
	LastErrorUnexpected             = "Unexpected error"
	LastErrorNotResponding          = "Not responding"
)

// Writer is one VSS writer as listed by "vssadmin list writers".
type Writer struct {
	// Name is the writer name without its quotes, e.g. "SqlServerWriter".
	Name string `json:"name"`
	// ID is the writer class id as printed, braces included.
	ID string `json:"id"`
	// InstanceID is the writer instance id as printed, braces included.
	InstanceID string `json:"instanceId"`
	// StateCode is the VSS_WRITER_STATE value, an index into StateNames.
	StateCode int `json:"stateCode"`
	// State is vssadmin's text for the state, e.g. "Stable" or "Failed".
	State string `json:"state"`
	// LastError is vssadmin's text for the writer's last error, verbatim,
	// e.g. "No error" or "Non-retryable error".
	LastError string `json:"lastError"`
}

// Failed reports whether the writer is in one of the VSS_WS_FAILED_AT_*
// states (codes 6-15). Backups taken while a writer is failed are not
// application-consistent for that writer's data.
func (w Writer) Failed() bool {
	return w.StateCode >= StateFailedAtIdentify && w.StateCode <= StateFailedAtBackupShutdown
}

// Waiting reports whether the writer is in one of the VSS_WS_WAITING_FOR_*
// states (codes 2-5), i.e. in the middle of a shadow copy sequence.
func (w Writer) Waiting() bool {
	return w.StateCode >= StateWaitingForFreeze && w.StateCode <= StateWaitingForBackupComplete
}

// Healthy reports whether the writer is stable (code 1) and its last error
// is "No error". A writer can be neither Healthy nor Failed: stable with a
// last error, waiting, or unknown (code 0).
func (w Writer) Healthy() bool {
	return w.StateCode == StateStable && w.LastError == LastErrorNone
}

// StateName returns the vss.h name of the writer's state code, such as
// "VSS_WS_FAILED_AT_PREPARE_SNAPSHOT", or "VSS_WS_<code>" for a code
// outside StateNames (which Parse never returns).
func (w Writer) StateName() string {
	if w.StateCode >= 0 && w.StateCode < len(StateNames) {
		return StateNames[w.StateCode]
	}
	return fmt.Sprintf("VSS_WS_%d", w.StateCode)
}
