package agent

// Backup and ConfirmBackup through the real channel (TLS on 127.0.0.1,
// yamux, gRPC), with the image provider on real files.

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"google.golang.org/grpc/codes"

	"github.com/cairnbackup/cairn/agent/snapshot"

	agentv1 "github.com/cairnbackup/cairn/api/agent/v1"
)

// pairedImageAgent runs a direct-mode agent protecting one image of size
// bytes (random and zero blocks), pairs an appliance with it, and returns
// the image's path and the appliance's client.
func pairedImageAgent(t *testing.T, size int, cfg Config) (string, []byte, agentv1.AgentServiceClient, *testAgent) {
	t.Helper()
	img := filepath.Join(t.TempDir(), "disk.img")
	data := make([]byte, size)
	rng := rand.New(rand.NewPCG(uint64(size), 3))
	for off := 0; off < size; off += agentv1.DefaultBlockSize {
		if rng.IntN(2) == 0 {
			for i := off; i < min(size, off+agentv1.DefaultBlockSize); i++ {
				data[i] = byte(rng.Uint32() % 7)
			}
		}
	}
	if err := os.WriteFile(img, data, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.Listen, cfg.HandshakeTimeout = "on", waitTimeout
	cfg.Volumes = append(cfg.Volumes, img)
	ag := run(t, cfg)
	app := newIdentity(t, "appliance")
	_, c := session(t, ag.addr, app)
	if _, err := c.Pair(ctxT(t), &agentv1.PairRequest{ApplianceFingerprint: app.Fingerprint().String(), AgentId: "srv-1"}); err != nil {
		t.Fatal(err)
	}
	return img, data, c, ag
}

// received is a Backup stream as the appliance sees it, applied to image.
type received struct {
	begin  *agentv1.VolumeBegin
	end    *agentv1.VolumeEnd
	blocks []uint64
	err    error
}

// receive runs a Backup and writes its blocks into image, checking every
// hash.
func receive(t *testing.T, c agentv1.AgentServiceClient, req *agentv1.BackupRequest, image []byte) received {
	t.Helper()
	dec, err := zstd.NewReader(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	var r received
	st, err := c.Backup(ctxT(t), req)
	if err != nil {
		return received{err: err}
	}
	bs := uint64(max(req.GetBlockSize(), agentv1.DefaultBlockSize))
	for {
		m, err := st.Recv()
		if err == io.EOF {
			return r
		}
		if err != nil {
			r.err = err
			return r
		}
		if m.GetBegin() != nil {
			r.begin = m.GetBegin()
		}
		data := m.GetData()
		for _, b := range m.GetBlocks() {
			stored := data[:b.GetStoredLength()]
			data = data[b.GetStoredLength():]
			raw := make([]byte, b.GetLength())
			switch b.GetEncoding() {
			case agentv1.Block_ENCODING_RAW:
				copy(raw, stored)
			case agentv1.Block_ENCODING_ZSTD:
				if raw, err = dec.DecodeAll(stored, nil); err != nil {
					t.Fatal(err)
				}
			}
			if h := agentv1.HashBlock(raw); !bytes.Equal(h[:], b.GetHash()) || len(raw) != int(b.GetLength()) {
				t.Fatalf("block %d: bad hash or length", b.GetIndex())
			}
			copy(image[b.GetIndex()*bs:], raw)
			r.blocks = append(r.blocks, b.GetIndex())
		}
		if m.GetEnd() != nil {
			r.end = m.GetEnd()
		}
	}
}

func TestBackupOverChannel(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "scripts.log")
	hook := filepath.Join(dir, "hook.sh")
	shellScript(t, hook, "#!/bin/sh\necho \"$CAIRN_PHASE $CAIRN_JOB_ID ${CAIRN_RESULT:-}\" >> "+log+"\n")
	img, data, c, ag := pairedImageAgent(t, 12<<20+4096, Config{PreScript: hook, PostScript: hook})
	ctx := ctxT(t)

	h, err := c.Hello(ctx, &agentv1.HelloRequest{ProtocolVersion: agentv1.ProtocolVersion})
	if err != nil || h.GetSnapshotProvider() != "image" {
		t.Errorf("Hello: provider %q, %v; want image", h.GetSnapshotProvider(), err)
	}
	vols, err := c.ListVolumes(ctx, &agentv1.ListVolumesRequest{})
	if err != nil || len(vols.GetVolumes()) != 1 || vols.GetVolumes()[0].GetId() != img ||
		vols.GetVolumes()[0].GetSizeBytes() != uint64(len(data)) || vols.GetVolumes()[0].GetFilesystem() != "image" {
		t.Fatalf("ListVolumes = %v, %v", vols, err)
	}

	appliance := make([]byte, len(data))
	r := receive(t, c, &agentv1.BackupRequest{JobId: "1", Volumes: []*agentv1.BackupVolume{{VolumeId: img}}}, appliance)
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.begin.GetIncremental() || r.begin.GetProvider() != "image" || !bytes.Equal(appliance, data) {
		t.Fatalf("full backup: begin %v; image reassembled: %v", r.begin, bytes.Equal(appliance, data))
	}
	m1 := r.end.GetManifest()
	resp, err := c.ConfirmBackup(ctx, &agentv1.ConfirmBackupRequest{JobId: "1",
		Volumes: []*agentv1.VolumeManifest{{VolumeId: img, Manifest: m1}}})
	if err != nil || len(resp.GetAdopted()) != 1 || resp.GetAdopted()[0] != img {
		t.Fatalf("ConfirmBackup = %v, %v", resp, err)
	}

	// Change three blocks; the incremental sends exactly those.
	f, _ := os.OpenFile(img, os.O_WRONLY, 0)
	for _, i := range []int64{0, 77, 192} {
		f.WriteAt(bytes.Repeat([]byte{byte(i + 1)}, 100), i*agentv1.DefaultBlockSize+10)
		copy(data[i*agentv1.DefaultBlockSize+10:], bytes.Repeat([]byte{byte(i + 1)}, 100))
	}
	f.Close()
	r = receive(t, c, &agentv1.BackupRequest{JobId: "2", Volumes: []*agentv1.BackupVolume{{VolumeId: img, BaseManifest: m1}}}, appliance)
	if r.err != nil {
		t.Fatal(r.err)
	}
	if !r.begin.GetIncremental() || len(r.blocks) != 3 || r.blocks[0] != 0 || r.blocks[1] != 77 || r.blocks[2] != 192 {
		t.Errorf("incremental: begin %v, blocks %v; want 0, 77, 192", r.begin, r.blocks)
	}
	if !bytes.Equal(appliance, data) {
		t.Error("image after the incremental differs")
	}
	resp, err = c.ConfirmBackup(ctx, &agentv1.ConfirmBackupRequest{JobId: "2",
		Volumes: []*agentv1.VolumeManifest{{VolumeId: img, Manifest: m1}}})
	if err != nil || len(resp.GetAdopted()) != 0 {
		t.Errorf("ConfirmBackup with the wrong manifest = %v, %v; want nothing adopted", resp, err)
	}
	ag.logs.Wait(t, "the refused confirmation in the log", msgIs("backup confirmation does not match this agent's pending state; baseline kept"))

	got, _ := os.ReadFile(log)
	if want := "pre 1 \npost 1 ok\npre 2 \npost 2 ok\n"; string(got) != want {
		t.Errorf("scripts ran:\n%s\nwant:\n%s", got, want)
	}
}

func TestBackupRefusesBadRequests(t *testing.T) {
	img, _, c, _ := pairedImageAgent(t, 1<<20, Config{})
	for name, tc := range map[string]struct {
		req  *agentv1.BackupRequest
		code codes.Code
		msg  string
	}{
		"unknown volume": {&agentv1.BackupRequest{JobId: "1", Volumes: []*agentv1.BackupVolume{{VolumeId: "/dev/sda"}}}, codes.InvalidArgument, `"/dev/sda"`},
		"block size":     {&agentv1.BackupRequest{JobId: "1", BlockSize: 5000, Volumes: []*agentv1.BackupVolume{{VolumeId: img}}}, codes.InvalidArgument, "block size 5000"},
		"no job":         {&agentv1.BackupRequest{Volumes: []*agentv1.BackupVolume{{VolumeId: img}}}, codes.InvalidArgument, "job"},
		"no volumes":     {&agentv1.BackupRequest{JobId: "1"}, codes.InvalidArgument, "volumes"},
		"twice":          {&agentv1.BackupRequest{JobId: "1", Volumes: []*agentv1.BackupVolume{{VolumeId: img}, {VolumeId: img}}}, codes.InvalidArgument, "twice"},
		"dirty beyond": {&agentv1.BackupRequest{JobId: "1", Volumes: []*agentv1.BackupVolume{{VolumeId: img,
			Dirty: []*agentv1.BlockHash{{Index: 16, Hash: make([]byte, 32)}}}}}, codes.InvalidArgument, "beyond"},
	} {
		r := receive(t, c, tc.req, make([]byte, 1<<20))
		wantCode(t, name, r.err, tc.code)
		if r.err == nil || !strings.Contains(r.err.Error(), tc.msg) {
			t.Errorf("%s: %v, want it to mention %s", name, r.err, tc.msg)
		}
	}
}

func TestBackupPreScriptFailure(t *testing.T) {
	dir := t.TempDir()
	pre, post, marker := filepath.Join(dir, "pre"), filepath.Join(dir, "post"), filepath.Join(dir, "post-ran")
	shellScript(t, pre, "#!/bin/sh\necho cannot flush the database >&2\nexit 4\n")
	shellScript(t, post, "#!/bin/sh\necho \"$CAIRN_RESULT\" > "+marker+"\n")
	img, _, c, ag := pairedImageAgent(t, 1<<20, Config{PreScript: pre, PostScript: post})
	r := receive(t, c, &agentv1.BackupRequest{JobId: "1", Volumes: []*agentv1.BackupVolume{{VolumeId: img}}}, make([]byte, 1<<20))
	wantCode(t, "Backup", r.err, codes.Aborted)
	if r.err == nil || !strings.Contains(r.err.Error(), "exit status 4; output: cannot flush the database") || r.begin != nil {
		t.Errorf("Backup: %v (begin %v); want the pre script's failure and output, nothing read", r.err, r.begin)
	}
	if b, err := os.ReadFile(marker); err != nil || string(b) != "failed\n" {
		t.Errorf("post script: %q, %v; want it run with CAIRN_RESULT=failed", b, err)
	}
	ag.logs.Wait(t, "the failure in the log", msgIs("backup failed"))
}

// TestBackupOneAtATimeAndCancel: a second Backup while one runs is
// refused; canceling the first stops it, runs the post script, and leaves
// the confirmed baseline as it was.
func TestBackupOneAtATimeAndCancel(t *testing.T) {
	dir := t.TempDir()
	post, marker := filepath.Join(dir, "post"), filepath.Join(dir, "post-ran")
	shellScript(t, post, "#!/bin/sh\necho \"$CAIRN_JOB_ID $CAIRN_RESULT\" >> "+marker+"\n")
	// 64 MiB: far more than the channel's windows hold, so the first
	// backup is still sending while the appliance does not read.
	img, data, c, ag := pairedImageAgent(t, 64<<20, Config{PostScript: post})
	appliance := make([]byte, len(data))
	r := receive(t, c, &agentv1.BackupRequest{JobId: "1", Volumes: []*agentv1.BackupVolume{{VolumeId: img}}}, appliance)
	if r.err != nil {
		t.Fatal(r.err)
	}
	if _, err := c.ConfirmBackup(ctxT(t), &agentv1.ConfirmBackupRequest{JobId: "1",
		Volumes: []*agentv1.VolumeManifest{{VolumeId: img, Manifest: r.end.GetManifest()}}}); err != nil {
		t.Fatal(err)
	}
	baseline, _, err := ag.backups.Baseline(img)
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(ctxT(t))
	st, err := c.Backup(ctx, &agentv1.BackupRequest{JobId: "2", Volumes: []*agentv1.BackupVolume{{VolumeId: img, Full: true}}})
	if err != nil {
		t.Fatal(err)
	}
	if m, err := st.Recv(); err != nil || m.GetBegin() == nil {
		t.Fatalf("first message: %v, %v", m, err)
	}
	second := receive(t, c, &agentv1.BackupRequest{JobId: "3", Volumes: []*agentv1.BackupVolume{{VolumeId: img}}}, appliance)
	wantCode(t, "second Backup", second.err, codes.FailedPrecondition)
	if second.err == nil || !strings.Contains(second.err.Error(), "a backup is already running") {
		t.Errorf("second Backup: %v", second.err)
	}
	cancel()
	ag.logs.Wait(t, "the canceled backup to end", msgIs("backup failed"))
	waitFor(t, "the post script of job 2", func() bool {
		b, _ := os.ReadFile(marker)
		return strings.Contains(string(b), "2 ok\n") || strings.Contains(string(b), "2 failed\n")
	})
	if b, _, err := ag.backups.Baseline(img); err != nil || b != baseline {
		t.Errorf("baseline after a canceled backup: %+v, %v; want %+v", b, err, baseline)
	}
	// The agent takes backups again, and job 2 cannot be confirmed.
	var last received
	waitFor(t, "a backup to be accepted again", func() bool {
		last = receive(t, c, &agentv1.BackupRequest{JobId: "4", Volumes: []*agentv1.BackupVolume{{VolumeId: img, BaseManifest: r.end.GetManifest()}}}, appliance)
		return !strings.Contains(errString(last.err), "already running")
	})
	if last.err != nil || !last.begin.GetIncremental() || len(last.blocks) != 0 {
		t.Errorf("backup after the canceled one: %v, begin %v, %d blocks", last.err, last.begin, len(last.blocks))
	}
	resp, err := c.ConfirmBackup(ctxT(t), &agentv1.ConfirmBackupRequest{JobId: "2",
		Volumes: []*agentv1.VolumeManifest{{VolumeId: img, Manifest: r.end.GetManifest()}}})
	if err != nil || len(resp.GetAdopted()) != 0 {
		t.Errorf("confirming the canceled job: %v, %v", resp, err)
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// TestMountedDeviceWithoutSnapshotRefused: a discovered volume that is not
// a logical volume is refused, with why and what to do, rather than read
// live.
func TestMountedDeviceWithoutSnapshotRefused(t *testing.T) {
	if platformProvider() == "vss" {
		t.Skip("Windows snapshots every volume with VSS")
	}
	a, err := New(Config{StateDir: t.TempDir(), Listen: "127.0.0.1:0"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var ran []string
	a.lvm.Run = func(_ context.Context, name string, args ...string) ([]byte, error) {
		ran = append(ran, name+" "+strings.Join(args, " "))
		return nil, &snapshot.CommandError{Cmd: name, Stderr: `"/dev/sda1": Invalid path for Logical Volume.`, Err: errors.New("exit status 5")}
	}
	err = a.backupVolume(ctxT(t), "1", &agentv1.BackupVolume{VolumeId: "/dev/sda1"}, agentv1.DefaultBlockSize, nil,
		func(*agentv1.BackupData) error { t.Fatal("sent data"); return nil })
	st := backupStatus(context.Background(), "/dev/sda1", err)
	wantCode(t, "backup of /dev/sda1", st, codes.FailedPrecondition)
	if !strings.Contains(errString(st), "no consistent snapshot available for /dev/sda1") ||
		!strings.Contains(errString(st), "Invalid path for Logical Volume") || len(ran) != 1 || !strings.HasPrefix(ran[0], "lvs ") {
		t.Errorf("error %v after %q", st, ran)
	}
}

// TestBackupTwoVolumes: volumes are read one after the other, each between
// its begin and end, in the order requested.
func TestBackupTwoVolumes(t *testing.T) {
	other := filepath.Join(t.TempDir(), "other.img")
	otherData := bytes.Repeat([]byte("second volume "), 100000)
	if err := os.WriteFile(other, otherData, 0o600); err != nil {
		t.Fatal(err)
	}
	img, data, c, _ := pairedImageAgent(t, 2<<20, Config{Volumes: []string{other}})
	st, err := c.Backup(ctxT(t), &agentv1.BackupRequest{JobId: "1", BlockSize: 4096,
		Volumes: []*agentv1.BackupVolume{{VolumeId: img}, {VolumeId: other}}})
	if err != nil {
		t.Fatal(err)
	}
	var events []string
	var last *agentv1.BackupProgress
	for {
		m, err := st.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if b := m.GetBegin(); b != nil {
			events = append(events, "begin "+b.GetVolumeId())
		}
		if e := m.GetEnd(); e != nil {
			events = append(events, "end "+e.GetVolumeId())
		}
		if m.GetProgress() != nil {
			last = m.GetProgress()
		}
	}
	want := []string{"begin " + img, "end " + img, "begin " + other, "end " + other}
	if strings.Join(events, "\n") != strings.Join(want, "\n") {
		t.Errorf("stream:\n%s\nwant:\n%s", strings.Join(events, "\n"), strings.Join(want, "\n"))
	}
	if total := uint64(len(data) + len(otherData)); last.GetBytesRead() != total || last.GetBytesTotal() != total {
		t.Errorf("last progress %v, want %d bytes read of %d", last, total, total)
	}
}

// shellScript writes an executable shell script.
func shellScript(t *testing.T, path, body string) {
	t.Helper()
	if runtime.GOOS == "windows" {
		t.Skip("the test scripts are shell scripts")
	}
	if err := os.WriteFile(path, []byte(body), 0o700); err != nil {
		t.Fatal(err)
	}
}
