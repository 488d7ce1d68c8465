package embedded_test

import (
	"bufio"
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/zfs"
	"github.com/cairnbackup/cairn/zfs/embedded"
)

// The storage benchmark of issue 2, run by `make bench`: on the embedded
// pool, write a 1 GiB image in 1 MiB sequential writes and snapshot; then
// rewrite 5% of it in random 64 KiB extents and snapshot. Each is compared
// with the same writes to a plain file (and fsync) in the same run. Data is
// random, so neither compression nor dedup helps the pool.
const (
	benchImage  = 1 << 30
	benchWrite  = 1 << 20
	benchExtent = 64 << 10
	benchChange = benchImage / 20
)

func BenchmarkPool(b *testing.B) {
	dir := b.TempDir()
	data := make([]byte, benchImage)
	src := rand.NewChaCha8([32]byte{1})
	src.Read(data)
	rng := rand.New(src)
	// Distinct 64 KiB-aligned extents covering 5% of the image.
	extents := rng.Perm(benchImage / benchExtent)[:benchChange/benchExtent]
	newData := make([]byte, benchChange)
	src.Read(newData)

	// Plain file: the same writes, then fsync.
	plainPath := filepath.Join(dir, "plain.img")
	plainFull := timeIt(b, func() {
		f, err := os.Create(plainPath)
		mustDo(b, err)
		for off := 0; off < benchImage; off += benchWrite {
			_, err := f.WriteAt(data[off:off+benchWrite], int64(off))
			mustDo(b, err)
		}
		mustDo(b, f.Sync())
		mustDo(b, f.Close())
	})
	plainIncr := timeIt(b, func() {
		f, err := os.OpenFile(plainPath, os.O_WRONLY, 0)
		mustDo(b, err)
		for i, e := range extents {
			_, err := f.WriteAt(newData[i*benchExtent:(i+1)*benchExtent], int64(e)*benchExtent)
			mustDo(b, err)
		}
		mustDo(b, f.Sync())
		mustDo(b, f.Close())
	})
	mustDo(b, os.Remove(plainPath))

	ctx := context.Background()
	p, err := embedded.Open(embedded.Config{Dir: filepath.Join(dir, "pool")})
	mustDo(b, err)
	defer p.Close()
	ds, _ := zfs.AgentDataset(p.Root(), "bench")
	mustDo(b, p.CreateDataset(ctx, ds))
	mustDo(b, p.CreateImage(ctx, ds, "vol", benchImage))
	img, err := p.OpenImage(ctx, ds, "vol")
	mustDo(b, err)
	defer img.Close()

	b.ResetTimer()
	w0, io0 := p.BytesWritten(), procWriteBytes(b)
	poolFull := timeIt(b, func() {
		for off := 0; off < benchImage; off += benchWrite {
			_, err := img.WriteAt(data[off:off+benchWrite], int64(off))
			mustDo(b, err)
		}
		_, err := p.Snapshot(ctx, ds, "full")
		mustDo(b, err)
	})
	w1, io1 := p.BytesWritten(), procWriteBytes(b)
	poolIncr := timeIt(b, func() {
		for i, e := range extents {
			_, err := img.WriteAt(newData[i*benchExtent:(i+1)*benchExtent], int64(e)*benchExtent)
			mustDo(b, err)
		}
		_, err := p.Snapshot(ctx, ds, "incr")
		mustDo(b, err)
	})
	w2, io2 := p.BytesWritten(), procWriteBytes(b)
	b.StopTimer()

	mbs := func(n int, d time.Duration) float64 { return float64(n) / 1e6 / d.Seconds() }
	fullRatio := plainFull.Seconds() / poolFull.Seconds()
	incrWritten := float64(w2-w1) / benchChange
	incrDisk := float64(io2-io1) / benchChange

	b.ReportMetric(mbs(benchImage, poolFull), "full-MB/s")
	b.ReportMetric(mbs(benchImage, plainFull), "plain-full-MB/s")
	b.ReportMetric(fullRatio, "full/plain")
	b.ReportMetric(float64(poolIncr.Milliseconds()), "incr-ms")
	b.ReportMetric(float64(plainIncr.Milliseconds()), "plain-incr-ms")
	b.ReportMetric(incrWritten, "incr-written/changed")
	b.ReportMetric(incrDisk, "incr-disk/changed")

	b.Logf("full write of 1 GiB + snapshot: pool %.0f MB/s, plain file %.0f MB/s: %.2f of plain (goal >= 0.60); pool wrote %d MiB (disk %d MiB)",
		mbs(benchImage, poolFull), mbs(benchImage, plainFull), fullRatio, (w1-w0)>>20, (io1-io0)>>20)
	b.Logf("incremental, 5%% in random 64 KiB extents + snapshot: pool %v, plain file %v; pool wrote %.3f x the changed bytes, disk %.3f x (goal <= 1.5)",
		poolIncr.Round(time.Millisecond), plainIncr.Round(time.Millisecond), incrWritten, incrDisk)
	if fullRatio < 0.60 {
		b.Errorf("full write reached %.2f of a plain file write; the goal is 0.60", fullRatio)
	}
	if incrWritten > 1.5 || incrDisk > 1.5 {
		b.Errorf("incremental wrote %.3f (disk %.3f) x the changed bytes; the goal is 1.5", incrWritten, incrDisk)
	}
}

func timeIt(b *testing.B, fn func()) time.Duration {
	b.Helper()
	start := time.Now()
	fn()
	return time.Since(start)
}

// procWriteBytes is the bytes this process caused to be written to storage
// (write_bytes in /proc/self/io).
func procWriteBytes(b *testing.B) int64 {
	b.Helper()
	f, err := os.Open("/proc/self/io")
	mustDo(b, err)
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "write_bytes: "); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			mustDo(b, err)
			return n
		}
	}
	b.Fatal("no write_bytes in /proc/self/io")
	return 0
}

func mustDo(b *testing.B, err error) {
	b.Helper()
	if err != nil {
		b.Fatal(err)
	}
}
