// Package openzfs is Cairn's production storage: a zfs.Pool on real
// OpenZFS (2.1 or later, Linux), driven through the zfs command.
//
// Every dataset the pool touches is Config.Root or below it. Each dataset
// is a mounted ZFS file system; a volume image is a sparse regular file
// <mountpoint>/<image> in it, and a snapshot's image is read from
// <mountpoint>/.zfs/snapshot/<snap>/<image>. Recovery points are ZFS
// snapshots, holds are ZFS user holds, and Send and Receive are zfs send
// and zfs receive.
//
// Every zfs command goes through one runner (runner.go): it is killed when
// the context ends, metadata commands are bounded by Config.CommandTimeout,
// each command is logged at debug level with its duration, and a failure
// is a *CommandError whose stderr is mapped to the sentinel errors of
// package zfs in one table (stderrRules). Errors returned by Pool methods
// are *zfs.Error values; test them with errors.Is.
//
// Beyond zfs.Pool, *Pool offers what only OpenZFS can do: bookmarks and
// incremental sends from them, and resumable replication (ReceiveResumable,
// ResumeToken, SendResume, AbortReceive).
package openzfs
