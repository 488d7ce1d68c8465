package openzfs

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/cairnbackup/cairn/zfs"
)

// guardPool is a Pool whose "zfs" is a script that records that it ran, so
// that a test can check that a call was refused before any command.
func guardPool(t *testing.T) (*Pool, func() bool) {
	t.Helper()
	dir := t.TempDir()
	marker := filepath.Join(dir, "ran")
	script := filepath.Join(dir, "zfs")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho \"$@\" >> "+marker+"\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	p, err := newPool(Config{Root: zfs.MustDatasetName("tank/cairn"), ZFSPath: script})
	if err != nil {
		t.Fatal(err)
	}
	p.mountinfo = filepath.Join(dir, "no-mountinfo")
	return p, func() bool {
		_, err := os.Stat(marker)
		return err == nil
	}
}

func TestNamesOutsideRootRefused(t *testing.T) {
	ctx := context.Background()
	p, ran := guardPool(t)
	outside := []zfs.DatasetName{
		zfs.MustDatasetName("tank"),
		zfs.MustDatasetName("tank/cairn2"),
		zfs.MustDatasetName("tank/cairn2/agents/a"),
		zfs.MustDatasetName("other/cairn"),
		{},
	}
	for _, ds := range outside {
		snap, _ := zfs.MustDatasetName("tank/x").Snapshot("s")
		if !ds.IsZero() {
			snap, _ = ds.Snapshot("s")
		}
		calls := map[string]error{
			"CreateDataset":  p.CreateDataset(ctx, ds),
			"DestroyDataset": p.DestroyDataset(ctx, ds),
			"CreateImage":    p.CreateImage(ctx, ds, "vol", 1),
			"DestroySnap":    p.DestroySnapshot(ctx, snap),
			"Hold":           p.Hold(ctx, snap, "t"),
			"Release":        p.Release(ctx, snap, "t"),
			"Send":           p.Send(ctx, snap, "", io.Discard),
			"SendFromBM":     p.SendFromBookmark(ctx, snap, "b", io.Discard),
			"Bookmark":       p.Bookmark(ctx, snap, "b"),
			"DestroyBM":      p.DestroyBookmark(ctx, ds, "b"),
			"AbortReceive":   p.AbortReceive(ctx, ds),
		}
		_, calls["Dataset"] = p.Dataset(ctx, ds)
		_, calls["OpenImage"] = p.OpenImage(ctx, ds, "vol")
		_, calls["Images"] = p.Images(ctx, ds)
		_, calls["Snapshot"] = p.Snapshot(ctx, ds, "s")
		_, calls["Snapshots"] = p.Snapshots(ctx, ds)
		_, calls["SnapshotImages"] = p.SnapshotImages(ctx, snap)
		_, calls["OpenSnapshotImage"] = p.OpenSnapshotImage(ctx, snap, "vol")
		_, calls["Holds"] = p.Holds(ctx, snap)
		_, calls["Receive"] = p.Receive(ctx, ds, bytes.NewReader(nil))
		_, calls["ReceiveResumable"] = p.ReceiveResumable(ctx, ds, bytes.NewReader(nil))
		_, calls["ResumeToken"] = p.ResumeToken(ctx, ds)
		_, calls["Verify"] = p.Verify(ctx, snap)
		_, calls["Bookmarks"] = p.Bookmarks(ctx, ds)
		for call, err := range calls {
			if !errors.Is(err, zfs.ErrInvalidName) {
				t.Errorf("%s(%q): %v, want ErrInvalidName", call, ds, err)
			}
			var ze *zfs.Error
			if !errors.As(err, &ze) {
				t.Errorf("%s(%q): %T is not a *zfs.Error", call, ds, err)
			}
		}
	}
	if ran() {
		t.Fatal("a command ran for a name outside the root")
	}
}

func TestBadComponentsRefused(t *testing.T) {
	ctx := context.Background()
	p, ran := guardPool(t)
	ds := zfs.MustDatasetName("tank/cairn/agents/a")
	snap, _ := ds.Snapshot("s")
	for _, bad := range []string{"", "-o", "--", "..", "a/b", "a@b", "a#b", "a b", ".x", "x\ty"} {
		base := bad
		if base == "" {
			base = "a b" // "" is a full send
		}
		calls := map[string]error{
			"CreateImage": p.CreateImage(ctx, ds, bad, 1),
			"Hold":        p.Hold(ctx, snap, bad),
			"Release":     p.Release(ctx, snap, bad),
			"Send base":   p.Send(ctx, snap, base, io.Discard),
			"SendFromBM":  p.SendFromBookmark(ctx, snap, bad, io.Discard),
			"Bookmark":    p.Bookmark(ctx, snap, bad),
			"DestroyBM":   p.DestroyBookmark(ctx, ds, bad),
			"SendResume":  p.SendResume(ctx, bad, io.Discard),
		}
		_, calls["Snapshot"] = p.Snapshot(ctx, ds, bad)
		_, calls["OpenImage"] = p.OpenImage(ctx, ds, bad)
		_, calls["OpenSnapshotImage"] = p.OpenSnapshotImage(ctx, snap, bad)
		for call, err := range calls {
			if !errors.Is(err, zfs.ErrInvalidName) {
				t.Errorf("%s(%q): %v, want ErrInvalidName", call, bad, err)
			}
		}
	}
	if ran() {
		t.Fatal("a command ran for an invalid name")
	}
}

func TestRootRefused(t *testing.T) {
	ctx := context.Background()
	p, ran := guardPool(t)
	if err := p.DestroyDataset(ctx, p.Root()); !errors.Is(err, zfs.ErrBusy) {
		t.Fatalf("destroy root: %v", err)
	}
	if _, err := p.Receive(ctx, p.Root(), bytes.NewReader(nil)); !errors.Is(err, zfs.ErrBusy) {
		t.Fatalf("receive into root: %v", err)
	}
	if ran() {
		t.Fatal("a command ran")
	}
}

func TestClosedPool(t *testing.T) {
	ctx := context.Background()
	p, ran := guardPool(t)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); !errors.Is(err, zfs.ErrClosed) {
		t.Fatalf("second close: %v", err)
	}
	ds := zfs.MustDatasetName("tank/cairn/a")
	if err := p.CreateDataset(ctx, ds); !errors.Is(err, zfs.ErrClosed) {
		t.Fatalf("create on closed pool: %v", err)
	}
	if _, err := p.Datasets(ctx); !errors.Is(err, zfs.ErrClosed) {
		t.Fatalf("datasets on closed pool: %v", err)
	}
	if err := p.SendResume(ctx, "1-a-b-c", io.Discard); !errors.Is(err, zfs.ErrClosed) {
		t.Fatalf("send resume on closed pool: %v", err)
	}
	if ran() {
		t.Fatal("a command ran")
	}
}

func TestCanceledContextRunsNothing(t *testing.T) {
	p, ran := guardPool(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	ds := zfs.MustDatasetName("tank/cairn/a")
	if err := p.CreateDataset(ctx, ds); !errors.Is(err, context.Canceled) {
		t.Fatalf("create: %v", err)
	}
	snap, _ := ds.Snapshot("s")
	if err := p.Send(ctx, snap, "", io.Discard); !errors.Is(err, context.Canceled) {
		t.Fatalf("send: %v", err)
	}
	if ran() {
		t.Fatal("a command ran")
	}
}

func TestOpenWithoutRoot(t *testing.T) {
	if _, err := Open(context.Background(), Config{}); !errors.Is(err, zfs.ErrInvalidName) {
		t.Fatalf("open without root: %v", err)
	}
}
