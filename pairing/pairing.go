// Package pairing holds the six steps that take a machine the operator
// named to a protected agent (ARCHITECTURE.md, "Pairing, step by step"):
// Resolve, Connect, License, Inspect, Dataset, Settings. Each step returns a
// StepResult — ok, warning or failed, a detail, and a remedy the operator can
// act on — and can be run again on its own. The appliance supplies what the
// steps act on (its gateway, the activation client, the pool, the catalog)
// through small interfaces, so that this package stays a leaf.
//
// Subpackages: identity (keys, fingerprints, pinned TLS), token (agent and
// setup tokens), channel (the agent channel), resolve (the DNS step).
package pairing

import (
	"time"
)

// Step names, in the order they run.
const (
	StepResolve  = "resolve"
	StepConnect  = "connect"
	StepLicense  = "license"
	StepInspect  = "inspect"
	StepDataset  = "dataset"
	StepSettings = "settings"
)

// Steps lists the step names in order.
var Steps = []string{StepResolve, StepConnect, StepLicense, StepInspect, StepDataset, StepSettings}

// Status is a step's outcome.
type Status string

// Step statuses. A warning lets the pairing go on; a failure stops it until
// the step is retried.
const (
	StatusPending Status = "pending"
	StatusRunning Status = "running"
	StatusOK      Status = "ok"
	StatusWarning Status = "warning"
	StatusFailed  Status = "failed"
	StatusSkipped Status = "skipped"
)

// Done reports whether the status lets the next step run.
func (s Status) Done() bool { return s == StatusOK || s == StatusWarning || s == StatusSkipped }

// StepResult is what one run of a step found.
type StepResult struct {
	Step   string `json:"step"`
	Status Status `json:"status"`
	// Detail says what the step found, for the operator.
	Detail string `json:"detail"`
	// Remedy says what the operator can do about a warning or failure.
	Remedy string `json:"remedy,omitempty"`
	// Code is a stable identifier of the outcome, e.g. "nxdomain",
	// "no_seats", "writer_failed".
	Code string `json:"code,omitempty"`
	// Data is the step's structured findings (addresses, volumes,
	// writers, ...), JSON-encodable.
	Data     any       `json:"data,omitempty"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	Attempts int       `json:"attempts"`
}

func ok(step, detail string, data any) StepResult {
	return StepResult{Step: step, Status: StatusOK, Detail: detail, Data: data}
}

func warn(step, code, detail, remedy string, data any) StepResult {
	return StepResult{Step: step, Status: StatusWarning, Code: code, Detail: detail, Remedy: remedy, Data: data}
}

func fail(step, code, detail, remedy string, data any) StepResult {
	return StepResult{Step: step, Status: StatusFailed, Code: code, Detail: detail, Remedy: remedy, Data: data}
}
