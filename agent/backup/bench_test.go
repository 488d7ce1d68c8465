package backup

import (
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	agentv1 "github.com/cairnbackup/cairn/api/agent/v1"
)

// BenchmarkRead reads a 256 MiB image, half random and half zero blocks,
// through the pipeline without the network: a full read, then an
// incremental one after 5% of the blocks changed.
func BenchmarkRead(b *testing.B) {
	const size = 256 << 20
	path := filepath.Join(b.TempDir(), "disk.img")
	data := make([]byte, size)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < size; i += 2 * bs {
		for j := i; j < i+bs; j += 8 {
			v := rng.Uint64()
			for k := range 8 {
				data[j+k] = byte(v >> (8 * k))
			}
		}
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		b.Fatal(err)
	}
	s, err := NewStore(filepath.Join(b.TempDir(), "state"))
	if err != nil {
		b.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	var sent uint64
	send := func(m *agentv1.BackupData) error { sent += uint64(len(m.GetData())); return nil }
	read := func(b *testing.B, job string, base []byte) *agentv1.VolumeEnd {
		end, err := s.Backup(context.Background(), Request{JobID: job, BlockSize: bs, Source: f, Size: size, Send: send,
			Volume: &agentv1.BackupVolume{VolumeId: path, BaseManifest: base}})
		if err != nil {
			b.Fatal(err)
		}
		return end
	}
	b.Run("full", func(b *testing.B) {
		b.SetBytes(size)
		for i := 0; b.Loop(); i++ {
			read(b, "full", nil)
		}
	})
	end := read(b, "base", nil)
	if ok, err := s.Confirm("base", path, end.GetManifest()); !ok || err != nil {
		b.Fatal("confirm", err)
	}
	blocks := size / bs
	for range blocks / 20 {
		i := rng.IntN(blocks) * bs
		for j := i; j < i+bs; j++ {
			data[j] = byte(rng.Uint32())
		}
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		b.Fatal(err)
	}
	b.Run("incremental", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			sent = 0
			read(b, "incr", end.GetManifest())
		}
		b.ReportMetric(float64(sent)/(1<<20), "MiB-sent")
	})
}
