// Command skiff-peer-copy copies an image with the current containers/image and
// containers/storage, as `skopeo copy` does, so that skiff's tests read layers
// written by the real zstd:chunked compressor. The module proxy does not serve
// skopeo itself; this is the same library call skopeo's copy makes.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"

	"go.podman.io/image/v5/copy"
	_ "go.podman.io/image/v5/docker"
	_ "go.podman.io/image/v5/oci/archive"
	_ "go.podman.io/image/v5/oci/layout"
	"go.podman.io/image/v5/pkg/compression"
	"go.podman.io/image/v5/signature"
	"go.podman.io/image/v5/transports"
	"go.podman.io/image/v5/types"
)

func parse(s string) (types.ImageReference, error) {
	name, rest, ok := strings.Cut(s, ":")
	if !ok {
		return nil, fmt.Errorf("%q: no transport", s)
	}
	t := transports.Get(name)
	if t == nil {
		return nil, fmt.Errorf("%q: unknown transport %q", s, name)
	}
	return t.ParseReference(rest)
}

func run() error {
	format := flag.String("dest-compress-format", "", "gzip, zstd or zstd:chunked")
	srcTLS := flag.Bool("src-tls-verify", true, "verify the source registry's TLS")
	destTLS := flag.Bool("dest-tls-verify", true, "verify the destination registry's TLS")
	flag.Parse()
	if flag.NArg() != 2 {
		return fmt.Errorf("usage: skiff-peer-copy [flags] SOURCE DESTINATION")
	}
	src, err := parse(flag.Arg(0))
	if err != nil {
		return err
	}
	dest, err := parse(flag.Arg(1))
	if err != nil {
		return err
	}
	srcCtx := &types.SystemContext{DockerInsecureSkipTLSVerify: types.NewOptionalBool(!*srcTLS)}
	destCtx := &types.SystemContext{DockerInsecureSkipTLSVerify: types.NewOptionalBool(!*destTLS)}
	if *format != "" {
		algo, err := compression.AlgorithmByName(*format)
		if err != nil {
			return err
		}
		destCtx.CompressionFormat = &algo
	}
	policy := &signature.Policy{Default: []signature.PolicyRequirement{signature.NewPRInsecureAcceptAnything()}}
	pc, err := signature.NewPolicyContext(policy)
	if err != nil {
		return err
	}
	defer pc.Destroy()
	_, err = copy.Image(context.Background(), pc, dest, src, &copy.Options{
		SourceCtx:      srcCtx,
		DestinationCtx: destCtx,
		ReportWriter:   os.Stderr,
		// As skopeo's --force-compression: every layer in the format asked for.
		ForceCompressionFormat: *format != "",
	})
	return err
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "skiff-peer-copy:", err)
		os.Exit(1)
	}
}
