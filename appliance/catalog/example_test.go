package catalog_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/cairnbackup/cairn/appliance/catalog"
)

func ExampleOpen() {
	dir, err := os.MkdirTemp("", "catalog-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	c, err := catalog.Open(filepath.Join(dir, "catalog.db"), catalog.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	ctx := context.Background()
	// The agent and its audit event are committed together or not at all.
	err = c.Update(ctx, func(tx *catalog.Tx) error {
		agent := catalog.Agent{
			ID:       "fileserver-01",
			Hostname: "fileserver-01.example.lan",
			Address:  "192.0.2.10:7070",
			Mode:     catalog.ModeDirect,
			Dataset:  "tank/cairn/agents/fileserver-01",
		}
		if err := tx.PutAgent(agent); err != nil {
			return err
		}
		return tx.Audit(catalog.AuditEvent{Actor: "admin", Action: "agent.add", Target: agent.ID})
	})
	if err != nil {
		log.Fatal(err)
	}

	err = c.View(ctx, func(tx *catalog.Tx) error {
		a, err := tx.Agent("fileserver-01")
		if err != nil {
			return err
		}
		events, err := tx.AuditLog(0, 10)
		if err != nil {
			return err
		}
		fmt.Println(a.ID, a.Hostname, a.Mode)
		fmt.Println(events[0].Seq, events[0].Action, events[0].Target)
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	// Output:
	// fileserver-01 fileserver-01.example.lan direct
	// 1 agent.add fileserver-01
}
