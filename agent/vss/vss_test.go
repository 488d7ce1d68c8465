package vss

import (
	"fmt"
	"testing"
)

func TestClassification(t *testing.T) {
	// One row per VSS_WRITER_STATE code, in vss.h order.
	for _, tc := range []struct {
		code            int
		name            string
		text            string
		failed, waiting bool
	}{
		{StateUnknown, "VSS_WS_UNKNOWN", "Unknown", false, false},
		{StateStable, "VSS_WS_STABLE", "Stable", false, false},
		{StateWaitingForFreeze, "VSS_WS_WAITING_FOR_FREEZE", "Waiting for freeze", false, true},
		{StateWaitingForThaw, "VSS_WS_WAITING_FOR_THAW", "Frozen", false, true},
		{StateWaitingForPostSnapshot, "VSS_WS_WAITING_FOR_POST_SNAPSHOT", "Waiting for post shadow copy", false, true},
		{StateWaitingForBackupComplete, "VSS_WS_WAITING_FOR_BACKUP_COMPLETE", "Waiting for completion", false, true},
		{StateFailedAtIdentify, "VSS_WS_FAILED_AT_IDENTIFY", "Failed", true, false},
		{StateFailedAtPrepareBackup, "VSS_WS_FAILED_AT_PREPARE_BACKUP", "Failed", true, false},
		{StateFailedAtPrepareSnapshot, "VSS_WS_FAILED_AT_PREPARE_SNAPSHOT", "Failed", true, false},
		{StateFailedAtFreeze, "VSS_WS_FAILED_AT_FREEZE", "Failed", true, false},
		{StateFailedAtThaw, "VSS_WS_FAILED_AT_THAW", "Failed", true, false},
		{StateFailedAtPostSnapshot, "VSS_WS_FAILED_AT_POST_SNAPSHOT", "Failed", true, false},
		{StateFailedAtBackupComplete, "VSS_WS_FAILED_AT_BACKUP_COMPLETE", "Failed", true, false},
		{StateFailedAtPreRestore, "VSS_WS_FAILED_AT_PRE_RESTORE", "Failed", true, false},
		{StateFailedAtPostRestore, "VSS_WS_FAILED_AT_POST_RESTORE", "Failed", true, false},
		{StateFailedAtBackupShutdown, "VSS_WS_FAILED_AT_BACKUPSHUTDOWN", "Failed", true, false},
	} {
		for _, lastErr := range []string{LastErrorNone, LastErrorRetryable, LastErrorNonRetryable, LastErrorTimedOut, "anything else"} {
			w := Writer{Name: "W", StateCode: tc.code, State: tc.text, LastError: lastErr}
			healthy := tc.code == StateStable && lastErr == LastErrorNone
			if w.Failed() != tc.failed || w.Waiting() != tc.waiting || w.Healthy() != healthy {
				t.Errorf("code %d, last error %q: Failed %v Waiting %v Healthy %v, want %v %v %v",
					tc.code, lastErr, w.Failed(), w.Waiting(), w.Healthy(), tc.failed, tc.waiting, healthy)
			}
			if w.Failed() && (w.Waiting() || w.Healthy()) || w.Waiting() && w.Healthy() {
				t.Errorf("code %d: more than one class", tc.code)
			}
		}
		w := Writer{StateCode: tc.code}
		if w.StateName() != tc.name || StateNames[tc.code] != tc.name {
			t.Errorf("code %d: StateName %q, want %q", tc.code, w.StateName(), tc.name)
		}
		if got := StateText(tc.code); got != tc.text {
			t.Errorf("StateText(%d) = %q, want %q", tc.code, got, tc.text)
		}
	}
	if len(StateNames) != 16 {
		t.Errorf("%d state names, want 16", len(StateNames))
	}
	for _, code := range []int{-1, 16, 99} {
		w := Writer{StateCode: code, LastError: LastErrorNone}
		if w.Failed() || w.Waiting() || w.Healthy() {
			t.Errorf("code %d classified", code)
		}
		if got, want := w.StateName(), fmt.Sprintf("VSS_WS_%d", code); got != want {
			t.Errorf("StateName(%d) = %q, want %q", code, got, want)
		}
		if StateText(code) != "Unknown" {
			t.Errorf("StateText(%d) = %q", code, StateText(code))
		}
	}
}

func TestToolErrorNeedsElevation(t *testing.T) {
	for _, tc := range []struct {
		msg  string
		want bool
	}{
		{"You don't have the correct permissions to run this command.  Please run this utility from a command window that has elevated administrator privileges.", true},
		{"You don't have the correct permissions to run this command.", true}, // Windows Server 2003
		{"Unexpected failure: Access is denied.", true},
		{"A Volume Shadow Copy Service component encountered an unexpected error.\nCheck the Application event log for more information.", false},
		{"Unexpected failure, error code: 0x80042302.", false},
	} {
		e := &ToolError{Message: tc.msg}
		if e.NeedsElevation() != tc.want {
			t.Errorf("NeedsElevation(%q) = %v", tc.msg, !tc.want)
		}
		if e.Error() != "vssadmin: "+tc.msg {
			t.Errorf("Error() = %q", e.Error())
		}
	}
}
