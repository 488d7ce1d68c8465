package openzfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/cairnbackup/cairn/zfs"
)

// sendFlags are the flags of every zfs send: -L keeps records larger than
// 128 KiB whole, -c sends blocks compressed as they are stored, -e sends
// tiny blocks embedded in block pointers as such. The receiving side is
// another Cairn pool on OpenZFS 2.1 or later, which understands all three.
var sendFlags = []string{"-L", "-c", "-e"}

// receiveArgs are the options of every zfs receive.
//
// A received dataset is a replica: it must not change between receives,
// or zfs refuses the next incremental stream ("destination has been
// modified since most recent snapshot"). Merely reading its mounted files
// changes it (atime, which is on by default), so readonly=on. -F (roll
// back before receiving) would hide such changes instead, but it also
// overwrites an existing dataset with a full stream and destroys newer
// snapshots, so it is never used.
//
// The dataset stays mounted (no -u): its snapshots are read through
// <mountpoint>/.zfs/snapshot. Its mountpoint is inherited from its parent:
// -x mountpoint and -x canmount ignore those properties should a stream
// carry them (a stream made with zfs send -p could mount it anywhere).
func receiveArgs(resumable bool, ds zfs.DatasetName) []string {
	args := []string{"receive"}
	if resumable {
		args = append(args, "-s")
	}
	args = append(args, propertyArgs(map[string]string{"readonly": "on"})...)
	args = append(args, "-x", "canmount", "-x", "mountpoint")
	return append(args, "--", ds.String())
}

// Send writes zfs send [-i ds@base] ds@snap to w. It checks that both
// snapshots exist (ErrNotFound) before anything is written to w.
func (p *Pool) Send(ctx context.Context, snap zfs.SnapshotName, base string, w io.Writer) error {
	const op = "send"
	if err := p.checkSnap(op, snap); err != nil {
		return err
	}
	var from string
	if base != "" {
		b, err := snap.Dataset().Snapshot(base)
		if err != nil {
			return nameErr(op, snap.String(), fmt.Errorf("base: %w", err))
		}
		from = b.String()
	}
	return p.send(ctx, op, snap, from, w)
}

// SendFromBookmark writes an incremental stream of snap from bookmark, a
// bookmark of snap's dataset (made by Bookmark), to w. The receiving side
// must have the snapshot the bookmark was made from as its latest; the
// snapshot itself may be gone on this side, which is what bookmarks are
// for.
func (p *Pool) SendFromBookmark(ctx context.Context, snap zfs.SnapshotName, bookmark string, w io.Writer) error {
	const op = "send from bookmark"
	if err := p.checkSnap(op, snap); err != nil {
		return err
	}
	if err := zfs.ValidComponent(bookmark); err != nil {
		return nameErr(op, snap.String(), fmt.Errorf("bookmark: %w", err))
	}
	return p.send(ctx, op, snap, snap.Dataset().String()+"#"+bookmark, w)
}

// send runs zfs send of snap, incremental from from (a full snapshot or
// bookmark name) unless it is "".
func (p *Pool) send(ctx context.Context, op string, snap zfs.SnapshotName, from string, w io.Writer) error {
	// zfs send checks its arguments before writing, but say so in a way
	// that does not depend on it: list them first.
	check := []string{"list", "-H", "-o", "name", "-t", "snapshot,bookmark", "--", snap.String()}
	if from != "" {
		check = append(check, from)
	}
	if _, err := p.zfsOut(ctx, check...); err != nil {
		return opError(op, snap.String(), err)
	}
	args := append([]string{"send"}, sendFlags...)
	if from != "" {
		args = append(args, "-i", from)
	}
	args = append(args, "--", snap.String())
	return p.stream(ctx, op, snap.String(), args, w)
}

// stream runs a zfs send command with stdout to w.
func (p *Pool) stream(ctx context.Context, op, name string, args []string, w io.Writer) error {
	ew := &errWriter{w: w}
	_, err := p.run.run(ctx, command{args: args, stdout: ew, stream: true})
	if err != nil {
		if werr := ew.error(); werr != nil {
			return &zfs.Error{Op: op, Name: name, Err: fmt.Errorf("writing the stream: %w (%w)", werr, err)}
		}
		return opError(op, name, err)
	}
	return nil
}

// Receive runs zfs receive into ds (see receiveArgs for the options) and
// returns ds's newest snapshot, the one received. It receives without -s,
// so a stream that fails leaves ds as it was (and no dataset after a
// failed full stream). ErrExists for a full stream onto an existing
// dataset, ErrBusy if ds has the partial state of ReceiveResumable,
// ErrStream for anything else wrong with the stream. A received dataset
// is read-only.
func (p *Pool) Receive(ctx context.Context, ds zfs.DatasetName, r io.Reader) (zfs.SnapshotInfo, error) {
	return p.receive(ctx, "receive", ds, r, false)
}

// ReceiveResumable is Receive with zfs receive -s: when the stream breaks
// off, what arrived is kept, ResumeToken returns a token, and SendResume
// on the sending side with that token produces the rest of the stream, to
// be given to ReceiveResumable again. AbortReceive discards the partial
// state instead.
func (p *Pool) ReceiveResumable(ctx context.Context, ds zfs.DatasetName, r io.Reader) (zfs.SnapshotInfo, error) {
	return p.receive(ctx, "resumable receive", ds, r, true)
}

func (p *Pool) receive(ctx context.Context, op string, ds zfs.DatasetName, r io.Reader, resumable bool) (zfs.SnapshotInfo, error) {
	if err := p.check(op, ds); err != nil {
		return zfs.SnapshotInfo{}, err
	}
	if ds == p.root {
		// readonly=on there would make the whole pool read-only.
		return zfs.SnapshotInfo{}, &zfs.Error{Op: op, Name: ds.String(), Err: fmt.Errorf("%w: cannot receive into the pool's root", zfs.ErrBusy)}
	}
	er := &errReader{r: r}
	_, err := p.run.run(ctx, command{args: receiveArgs(resumable, ds), stdin: er, stream: true})
	if err != nil {
		if rerr := er.error(); rerr != nil {
			return zfs.SnapshotInfo{}, &zfs.Error{Op: op, Name: ds.String(), Err: fmt.Errorf("%w: reading the stream: %w (%w)", zfs.ErrStream, rerr, err)}
		}
		// Whatever zfs receive refuses that is not a name conflict or
		// in-progress state is a stream that does not apply.
		var extra error
		if !isSentinel(err, zfs.ErrExists) && !isSentinel(err, zfs.ErrBusy) {
			extra = zfs.ErrStream
		}
		return zfs.SnapshotInfo{}, opError(op, ds.String(), err, extra)
	}
	infos, err := p.listSnapshots(ctx, ds.String(), true)
	if err == nil && len(infos) == 0 {
		err = errors.New("no snapshot after receive")
	}
	if err != nil {
		return zfs.SnapshotInfo{}, opError(op, ds.String(), err)
	}
	return infos[len(infos)-1], nil
}

// ResumeToken returns ds's receive_resume_token: "" when ds has no
// partial state of an interrupted ReceiveResumable.
func (p *Pool) ResumeToken(ctx context.Context, ds zfs.DatasetName) (string, error) {
	const op = "resume token"
	if err := p.check(op, ds); err != nil {
		return "", err
	}
	out, err := p.zfsOut(ctx, "get", "-H", "-p", "-o", "property,value", "receive_resume_token", "--", ds.String())
	if err != nil {
		return "", opError(op, ds.String(), err)
	}
	props, err := parseProps(out)
	if err == nil {
		var vals []string
		if vals, err = needProps(props, "receive_resume_token"); err == nil {
			var tok string
			if tok, err = parseResumeToken(vals[0]); err == nil {
				return tok, nil
			}
		}
	}
	return "", &zfs.Error{Op: op, Name: ds.String(), Err: err}
}

// SendResume writes the rest of an interrupted stream to w: zfs send -t
// token, where token is what ResumeToken returned on the receiving side.
// The token must be well-formed and name a snapshot within Root
// (ErrInvalidName otherwise), which a dry run (zfs send -n -v -t) tells
// before anything is sent. ErrNotFound if that snapshot is gone.
func (p *Pool) SendResume(ctx context.Context, token string, w io.Writer) error {
	const op = "send resume"
	if p.closed.Load() {
		return &zfs.Error{Op: op, Err: zfs.ErrClosed}
	}
	tok, err := parseResumeToken(token)
	if err == nil && tok == "" {
		err = errors.New("empty resume token")
	}
	if err != nil {
		return &zfs.Error{Op: op, Err: fmt.Errorf("%w: %w", zfs.ErrInvalidName, err)}
	}
	res, err := p.run.run(ctx, command{args: []string{"send", "-n", "-v", "-t", tok}})
	if err != nil {
		return opError(op, "", err)
	}
	to := parseTokenContents(string(res.stdout) + "\n" + res.stderr)["toname"]
	snap, err := zfs.ParseSnapshotName(to)
	if err != nil {
		return &zfs.Error{Op: op, Name: to, Err: fmt.Errorf("resume token names no snapshot Cairn uses: %w", err)}
	}
	if err := p.checkSnap(op, snap); err != nil {
		return err
	}
	return p.stream(ctx, op, snap.String(), []string{"send", "-t", tok}, w)
}

// AbortReceive discards the partial state of an interrupted
// ReceiveResumable into ds (zfs receive -A): a partially received new
// dataset is destroyed, a dataset that received an incremental stream in
// part keeps its earlier snapshots. ErrNotFound if there is nothing to
// abort.
func (p *Pool) AbortReceive(ctx context.Context, ds zfs.DatasetName) error {
	const op = "abort receive"
	if err := p.check(op, ds); err != nil {
		return err
	}
	if _, err := p.zfsOut(ctx, "receive", "-A", "--", ds.String()); err != nil {
		return opError(op, ds.String(), err)
	}
	return nil
}

// BookmarkInfo describes a bookmark.
type BookmarkInfo struct {
	Dataset zfs.DatasetName
	Name    string // the part after '#'
	// Created and CreateTxg are those of the snapshot the bookmark was
	// made from.
	Created   time.Time
	CreateTxg uint64
}

// Bookmark makes bookmark ds#bookmark of snap (ds is snap's dataset): a
// record of the snapshot that costs no space and survives its destruction,
// enough to be the base of an incremental SendFromBookmark. ErrExists if a
// bookmark of that name exists.
func (p *Pool) Bookmark(ctx context.Context, snap zfs.SnapshotName, bookmark string) error {
	const op = "bookmark"
	if err := p.checkSnap(op, snap); err != nil {
		return err
	}
	if err := zfs.ValidComponent(bookmark); err != nil {
		return nameErr(op, snap.String(), fmt.Errorf("bookmark: %w", err))
	}
	if _, err := p.zfsOut(ctx, "bookmark", "--", snap.String(), snap.Dataset().String()+"#"+bookmark); err != nil {
		return opError(op, snap.String(), err)
	}
	return nil
}

// Bookmarks lists the bookmarks of ds in creation order.
func (p *Pool) Bookmarks(ctx context.Context, ds zfs.DatasetName) ([]BookmarkInfo, error) {
	const op = "list bookmarks"
	if err := p.check(op, ds); err != nil {
		return nil, err
	}
	out, err := p.zfsOut(ctx, "list", "-H", "-p", "-t", "bookmark", "-d", "1", "-s", "createtxg", "-o", "name,createtxg,creation", "--", ds.String())
	if err != nil {
		return nil, opError(op, ds.String(), err)
	}
	rows, err := parseSnapshotList(out)
	if err != nil {
		return nil, &zfs.Error{Op: op, Name: ds.String(), Err: fmt.Errorf("zfs list: %w", err)}
	}
	infos := []BookmarkInfo{}
	for _, r := range rows {
		d, b, ok := strings.Cut(r.name, "#")
		if !ok || d != ds.String() || zfs.ValidComponent(b) != nil {
			p.log.Warn("skipping bookmark with a name Cairn does not use", "name", r.name)
			continue
		}
		infos = append(infos, BookmarkInfo{Dataset: ds, Name: b, Created: time.Unix(r.created, 0), CreateTxg: r.txg})
	}
	return infos, nil
}

// DestroyBookmark destroys bookmark ds#bookmark; ErrNotFound if it does
// not exist.
func (p *Pool) DestroyBookmark(ctx context.Context, ds zfs.DatasetName, bookmark string) error {
	const op = "destroy bookmark"
	if err := p.check(op, ds); err != nil {
		return err
	}
	if err := zfs.ValidComponent(bookmark); err != nil {
		return nameErr(op, ds.String(), fmt.Errorf("bookmark: %w", err))
	}
	name := ds.String() + "#" + bookmark
	if _, err := p.zfsOut(ctx, "destroy", "--", name); err != nil {
		return opError(op, name, err)
	}
	return nil
}

// errWriter remembers the first error of w.
type errWriter struct {
	w   io.Writer
	mu  sync.Mutex
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	n, err := e.w.Write(p)
	if err != nil {
		e.mu.Lock()
		if e.err == nil {
			e.err = err
		}
		e.mu.Unlock()
	}
	return n, err
}

func (e *errWriter) error() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.err
}

// errReader remembers the first error of r other than io.EOF.
type errReader struct {
	r   io.Reader
	mu  sync.Mutex
	err error
}

func (e *errReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF {
		e.mu.Lock()
		if e.err == nil {
			e.err = err
		}
		e.mu.Unlock()
	}
	return n, err
}

func (e *errReader) error() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.err
}
