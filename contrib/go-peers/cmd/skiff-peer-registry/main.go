// Command skiff-peer-registry serves go-containerregistry's registry with the
// OCI 1.1 referrers API on a loopback address, for skiff's delta-discovery tests.
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"

	"github.com/google/go-containerregistry/pkg/registry"
)

func main() {
	addr := flag.String("listen", "127.0.0.1:0", "address to listen on (loopback only)")
	dir := flag.String("disk", "", "directory for blobs (default: memory)")
	flag.Parse()
	host, _, err := net.SplitHostPort(*addr)
	if err != nil || !net.ParseIP(host).IsLoopback() {
		log.Fatalf("refusing to listen on %q: loopback addresses only", *addr)
	}
	l, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	opts := []registry.Option{registry.WithReferrersSupport(true)}
	if *dir != "" {
		opts = append(opts, registry.WithBlobHandler(registry.NewDiskBlobHandler(*dir)))
	}
	// The chosen address goes to stdout so that a test can wait for it.
	fmt.Println(l.Addr().String())
	os.Stdout.Sync()
	log.Fatal(http.Serve(l, registry.New(opts...)))
}
