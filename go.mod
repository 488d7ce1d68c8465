module github.com/cairnbackup/cairn

go 1.24.0

require (
	github.com/hashicorp/yamux v0.1.2
	github.com/klauspost/compress v1.18.2
	github.com/miekg/dns v1.1.72
	github.com/mxk/go-vss v1.2.1
	go.etcd.io/bbolt v1.4.3
	golang.org/x/sys v0.39.0
	google.golang.org/grpc v1.77.0
	google.golang.org/protobuf v1.36.11
)

require (
	github.com/go-ole/go-ole v1.3.0 // indirect
	golang.org/x/mod v0.31.0 // indirect
	golang.org/x/net v0.48.0 // indirect
	golang.org/x/sync v0.19.0 // indirect
	golang.org/x/text v0.32.0 // indirect
	golang.org/x/tools v0.40.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20251022142026-3a174f9686a8 // indirect
)
