module drmcr

go 1.26.0

require (
	github.com/checkpoint-restore/go-criu/v7 v7.2.0
	github.com/opencontainers/runtime-spec v1.2.1
	github.com/zeebo/xxh3 v1.1.0
	golang.org/x/sys v0.49.0
	google.golang.org/protobuf v1.36.12
	lukechampine.com/blake3 v1.4.1
)

require github.com/klauspost/cpuid/v2 v2.2.10 // indirect
