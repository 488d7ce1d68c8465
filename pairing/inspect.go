package pairing

import (
	"context"
	"fmt"
	"sort"
	"strings"

	agentv1 "github.com/cairnbackup/cairn/api/agent/v1"
)

// InspectData is what the Inspect step found.
type InspectData struct {
	Volumes          []*agentv1.Volume `json:"volumes"`
	Writers          []*agentv1.Writer `json:"writers"`
	SnapshotProvider string            `json:"snapshot_provider"`
}

// Inspect lists the agent's volumes and VSS writers. Failed writers are a
// warning that names each writer, its state and last error, and the service
// to restart; writers stuck waiting are a warning too; a stable set is ok.
// An agent without volumes, or whose volumes cannot be listed, fails.
func Inspect(ctx context.Context, agent agentv1.AgentServiceClient) StepResult {
	vols, err := agent.ListVolumes(ctx, &agentv1.ListVolumesRequest{})
	if err != nil {
		return fail(StepInspect, "volumes_failed", "the agent could not list its volumes: "+err.Error(),
			"check the agent's log, then retry this step", nil)
	}
	ws, err := agent.ListWriters(ctx, &agentv1.ListWritersRequest{})
	if err != nil {
		return fail(StepInspect, "writers_failed", "the agent could not list its VSS writers: "+err.Error(),
			"check the agent's log, then retry this step", nil)
	}
	data := InspectData{Volumes: vols.GetVolumes(), Writers: ws.GetWriters(), SnapshotProvider: ws.GetSnapshotProvider()}
	if len(data.Volumes) == 0 {
		return fail(StepInspect, "no_volumes", "the agent reports no volumes to protect",
			"check that the agent runs with enough rights to see the disks, then retry", data)
	}
	if e := ws.GetError(); e != "" {
		return warn(StepInspect, "writers_unknown", "the VSS writers could not be listed: "+e,
			"run the agent service as LocalSystem or an administrator, then retry this step", data)
	}
	var failed, waiting []string
	var services []string
	seen := make(map[string]bool)
	for _, w := range data.Writers {
		switch {
		case w.GetStateCode() >= 6 && w.GetStateCode() <= 15:
			failed = append(failed, fmt.Sprintf("%s: [%d] %s, last error %q", w.GetName(), w.GetStateCode(), w.GetState(), w.GetLastError()))
			if svc := WriterService(w.GetName()); !seen[svc] {
				seen[svc] = true
				services = append(services, svc)
			}
		case w.GetStateCode() >= 2 && w.GetStateCode() <= 5:
			waiting = append(waiting, fmt.Sprintf("%s: [%d] %s", w.GetName(), w.GetStateCode(), w.GetState()))
		}
	}
	summary := fmt.Sprintf("%d volumes; snapshot provider %s; %d VSS writers", len(data.Volumes), data.SnapshotProvider, len(data.Writers))
	switch {
	case len(failed) > 0:
		sort.Strings(services)
		return warn(StepInspect, "writer_failed",
			fmt.Sprintf("%s, %d failed: %s. Backups will not be application-consistent for their data.", summary, len(failed), strings.Join(failed, "; ")),
			fmt.Sprintf("on the agent, restart %s (or reboot it), check with \"vssadmin list writers\" that the writers are stable, then retry this step",
				strings.Join(services, "; ")), data)
	case len(waiting) > 0:
		return warn(StepInspect, "writer_waiting",
			fmt.Sprintf("%s, %d waiting: %s", summary, len(waiting), strings.Join(waiting, "; ")),
			"if no backup is running on the machine, the writers are stuck: restart the Volume Shadow Copy service, then retry this step", data)
	}
	return ok(StepInspect, summary+", all stable", data)
}

// writerServices maps well-known VSS writers to the Windows service that
// hosts them: the one to restart when the writer has failed.
var writerServices = map[string]string{
	"SqlServerWriter":                    "SQL Server VSS Writer (SQLWriter)",
	"System Writer":                      "Cryptographic Services (CryptSvc)",
	"Registry Writer":                    "Volume Shadow Copy (VSS)",
	"COM+ REGDB Writer":                  "Volume Shadow Copy (VSS)",
	"Shadow Copy Optimization Writer":    "Volume Shadow Copy (VSS)",
	"ASR Writer":                         "Volume Shadow Copy (VSS)",
	"VSS Metadata Store Writer":          "Volume Shadow Copy (VSS)",
	"Microsoft Hyper-V VSS Writer":       "Hyper-V Virtual Machine Management (vmms)",
	"Microsoft Exchange Writer":          "Microsoft Exchange Information Store (MSExchangeIS)",
	"Microsoft Exchange Replica Writer":  "Microsoft Exchange Replication (MSExchangeRepl)",
	"WMI Writer":                         "Windows Management Instrumentation (Winmgmt)",
	"IIS Metabase Writer":                "IIS Admin Service (IISADMIN)",
	"IIS Config Writer":                  "Application Host Helper Service (AppHostSvc)",
	"NTDS":                               "Active Directory Domain Services (NTDS)",
	"DFS Replication service writer":     "DFS Replication (DFSR)",
	"BITS Writer":                        "Background Intelligent Transfer Service (BITS)",
	"Task Scheduler Writer":              "Task Scheduler (Schedule)",
	"FRS Writer":                         "File Replication (NtFrs)",
	"Cluster Database":                   "Cluster Service (ClusSvc)",
	"MSSearch Service Writer":            "Windows Search (WSearch)",
	"Dhcp Jet Writer":                    "DHCP Server (DHCPServer)",
	"Certificate Authority":              "Active Directory Certificate Services (CertSvc)",
	"Performance Counters Writer":        "Volume Shadow Copy (VSS)",
	"Microsoft Exchange Writer (Backup)": "Microsoft Exchange Information Store (MSExchangeIS)",
}

// WriterService names the Windows service that hosts a VSS writer, or says
// "the service that hosts" it for writers it does not know.
func WriterService(writer string) string {
	if s, ok := writerServices[writer]; ok {
		return s
	}
	return fmt.Sprintf("the service that hosts %q", writer)
}
