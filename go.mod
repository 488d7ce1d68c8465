module github.com/cairnbackup/cairn

go 1.24.0

require (
	github.com/klauspost/compress v1.18.2
	go.etcd.io/bbolt v1.4.3
	golang.org/x/sys v0.38.0
)
