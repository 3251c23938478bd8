# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_skiff_global_optspecs
    string join \n override-arch= override-os= override-variant= policy= insecure-policy debug command-timeout= h/help V/version
end

function __fish_skiff_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_skiff_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_skiff_using_subcommand
    set -l cmd (__fish_skiff_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c skiff -n "__fish_skiff_needs_command" -l override-arch -d 'Use ARCH instead of the machine\'s architecture when choosing an image' -r
complete -c skiff -n "__fish_skiff_needs_command" -l override-os -d 'Use OS instead of the machine\'s OS when choosing an image' -r
complete -c skiff -n "__fish_skiff_needs_command" -l override-variant -d 'Use VARIANT instead of the machine\'s architecture variant when choosing an image' -r
complete -c skiff -n "__fish_skiff_needs_command" -l policy -d 'Path to a signature policy file' -r -F
complete -c skiff -n "__fish_skiff_needs_command" -l command-timeout -d 'Give up on a command after this long (for example 90s, 5m, 1h)' -r
complete -c skiff -n "__fish_skiff_needs_command" -l insecure-policy -d 'Run without any policy check'
complete -c skiff -n "__fish_skiff_needs_command" -l debug -d 'Log debug messages'
complete -c skiff -n "__fish_skiff_needs_command" -s h -l help -d 'Print help'
complete -c skiff -n "__fish_skiff_needs_command" -s V -l version -d 'Print version'
complete -c skiff -n "__fish_skiff_needs_command" -f -a "copy" -d 'Copy an image into composefs storage (skiff copy [flags] SOURCE composefs:PATH:NAME), or out of it (skiff copy [flags] composefs:PATH:NAME DESTINATION)'
complete -c skiff -n "__fish_skiff_needs_command" -f -a "delta" -d 'oci-delta artifacts: skiff delta create OLD NEW DESTINATION'
complete -c skiff -n "__fish_skiff_needs_command" -f -a "init" -d 'Create a composefs repository (insecure mode, with a notice, where there is no fs-verity)'
complete -c skiff -n "__fish_skiff_needs_command" -f -a "images" -d 'List the images of a repository (default: $SKIFF_REPO, else ~/.var/lib/composefs)'
complete -c skiff -n "__fish_skiff_needs_command" -f -a "inspect" -d 'Show an image of a repository, as skopeo inspect does'
complete -c skiff -n "__fish_skiff_needs_command" -f -a "rm" -d 'Remove an image\'s tag; its data goes at the next gc'
complete -c skiff -n "__fish_skiff_needs_command" -f -a "gc" -d 'Remove what no tag reaches and report what was freed'
complete -c skiff -n "__fish_skiff_needs_command" -f -a "serve" -d 'Serve a repository over the OCI distribution API, so that skopeo, podman, crane and oras pull from and push to it'
complete -c skiff -n "__fish_skiff_needs_command" -f -a "podman" -d 'Serve the repository\'s layers to podman\'s pulls (an Additional Layer Store)'
complete -c skiff -n "__fish_skiff_needs_command" -f -a "sync" -d 'Mirror images between registries and OCI layouts with their indexes, referrers (deltas, signatures) and digests unchanged'
complete -c skiff -n "__fish_skiff_needs_command" -f -a "fsck" -d 'Check every object, stream, image and content index'
complete -c skiff -n "__fish_skiff_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c skiff -n "__fish_skiff_using_subcommand copy" -l src-creds -d 'Credentials for the source registry, USERNAME[:PASSWORD]' -r
complete -c skiff -n "__fish_skiff_using_subcommand copy" -l src-authfile -d 'Path of the authentication file for the source registry (overrides --authfile)' -r -F
complete -c skiff -n "__fish_skiff_using_subcommand copy" -l src-tls-verify -d 'Require HTTPS and verify certificates when talking to the source registry' -r -f -a "true\t''
false\t''"
complete -c skiff -n "__fish_skiff_using_subcommand copy" -l src-cert-dir -d 'Use certificates at PATH (*.crt, *.cert, *.key) to connect to the source registry' -r -F
complete -c skiff -n "__fish_skiff_using_subcommand copy" -l src-username -d 'User name for the source registry' -r
complete -c skiff -n "__fish_skiff_using_subcommand copy" -l src-password -d 'Password for the source registry' -r
complete -c skiff -n "__fish_skiff_using_subcommand copy" -l authfile -d 'Path of the authentication file (default: skopeo\'s lookup of auth.json)' -r -F
complete -c skiff -n "__fish_skiff_using_subcommand copy" -l retry-times -d 'Number of times to retry a failed layer fetch' -r
complete -c skiff -n "__fish_skiff_using_subcommand copy" -l digestfile -d 'Write the digest of the stored manifest to PATH' -r -F
complete -c skiff -n "__fish_skiff_using_subcommand copy" -s j -l jobs -d 'Layers fetched and imported at once (default: number of CPUs)' -r
complete -c skiff -n "__fish_skiff_using_subcommand copy" -l progress -d 'Progress output: bars on a terminal, plain lines otherwise, or one JSON object a line' -r -f -a "auto\t'Bars on a terminal, plain lines otherwise'
bars\t'Progress bars'
plain\t'One line per event'
json\t'One JSON object per line'"
complete -c skiff -n "__fish_skiff_using_subcommand copy" -l multi-arch -d 'Only `system` (the default: one image for this platform) applies to composefs storage' -r
complete -c skiff -n "__fish_skiff_using_subcommand copy" -l storage-root -d 'The graph root of containers-storage: sources (default: storage.conf\'s graphroot, else /var/lib/containers/storage); a [driver@root+runroot] in the reference wins' -r -F
complete -c skiff -n "__fish_skiff_using_subcommand copy" -l run-root -d 'The run root of containers-storage: sources (default: storage.conf\'s runroot)' -r -F
complete -c skiff -n "__fish_skiff_using_subcommand copy" -l dest-creds -d 'Credentials for the destination registry, USERNAME[:PASSWORD]' -r
complete -c skiff -n "__fish_skiff_using_subcommand copy" -l dest-authfile -d 'Path of the authentication file for the destination registry (overrides --authfile)' -r -F
complete -c skiff -n "__fish_skiff_using_subcommand copy" -l dest-tls-verify -d 'Require HTTPS and verify certificates when talking to the destination registry' -r -f -a "true\t''
false\t''"
complete -c skiff -n "__fish_skiff_using_subcommand copy" -l dest-cert-dir -d 'Use certificates at PATH (*.crt, *.cert, *.key) to connect to the destination registry' -r -F
complete -c skiff -n "__fish_skiff_using_subcommand copy" -l dest-compress-format -d 'How to compress layers whose original blob the store does not keep: gzip (default) or zstd. The manifest digest then changes' -r
complete -c skiff -n "__fish_skiff_using_subcommand copy" -l override-arch -d 'Use ARCH instead of the machine\'s architecture when choosing an image' -r
complete -c skiff -n "__fish_skiff_using_subcommand copy" -l override-os -d 'Use OS instead of the machine\'s OS when choosing an image' -r
complete -c skiff -n "__fish_skiff_using_subcommand copy" -l override-variant -d 'Use VARIANT instead of the machine\'s architecture variant when choosing an image' -r
complete -c skiff -n "__fish_skiff_using_subcommand copy" -l policy -d 'Path to a signature policy file' -r -F
complete -c skiff -n "__fish_skiff_using_subcommand copy" -l command-timeout -d 'Give up on a command after this long (for example 90s, 5m, 1h)' -r
complete -c skiff -n "__fish_skiff_using_subcommand copy" -l src-no-creds -d 'Access the source registry anonymously'
complete -c skiff -n "__fish_skiff_using_subcommand copy" -s q -l quiet -d 'Suppress output but errors'
complete -c skiff -n "__fish_skiff_using_subcommand copy" -l no-delta -d 'Do not look for oci-delta artifacts of the image in its registry'
complete -c skiff -n "__fish_skiff_using_subcommand copy" -l require-verity -d 'Refuse to create or write a repository without fs-verity'
complete -c skiff -n "__fish_skiff_using_subcommand copy" -l remove-signatures -d 'Accepted for skopeo compatibility: composefs storage keeps no signatures'
complete -c skiff -n "__fish_skiff_using_subcommand copy" -l keep-blobs -d 'Keep the original compressed blob of every layer (fetching whole the layers whose blob the store lacks), so that copying the image out keeps its manifest digest. Repositories made with `skiff init --keep-blobs` always do'
complete -c skiff -n "__fish_skiff_using_subcommand copy" -l expose -d 'Then make the image\'s layers available to podman\'s pulls, in the repository\'s layer store (set up by skiff podman enable)'
complete -c skiff -n "__fish_skiff_using_subcommand copy" -l dest-no-creds -d 'Access the destination registry anonymously'
complete -c skiff -n "__fish_skiff_using_subcommand copy" -l preserve-digests -d 'Refuse to copy out an image whose manifest digest would change (a layer without its kept original blob)'
complete -c skiff -n "__fish_skiff_using_subcommand copy" -l insecure-policy -d 'Run without any policy check'
complete -c skiff -n "__fish_skiff_using_subcommand copy" -l debug -d 'Log debug messages'
complete -c skiff -n "__fish_skiff_using_subcommand copy" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c skiff -n "__fish_skiff_using_subcommand delta; and not __fish_seen_subcommand_from create help" -l override-arch -d 'Use ARCH instead of the machine\'s architecture when choosing an image' -r
complete -c skiff -n "__fish_skiff_using_subcommand delta; and not __fish_seen_subcommand_from create help" -l override-os -d 'Use OS instead of the machine\'s OS when choosing an image' -r
complete -c skiff -n "__fish_skiff_using_subcommand delta; and not __fish_seen_subcommand_from create help" -l override-variant -d 'Use VARIANT instead of the machine\'s architecture variant when choosing an image' -r
complete -c skiff -n "__fish_skiff_using_subcommand delta; and not __fish_seen_subcommand_from create help" -l policy -d 'Path to a signature policy file' -r -F
complete -c skiff -n "__fish_skiff_using_subcommand delta; and not __fish_seen_subcommand_from create help" -l command-timeout -d 'Give up on a command after this long (for example 90s, 5m, 1h)' -r
complete -c skiff -n "__fish_skiff_using_subcommand delta; and not __fish_seen_subcommand_from create help" -l insecure-policy -d 'Run without any policy check'
complete -c skiff -n "__fish_skiff_using_subcommand delta; and not __fish_seen_subcommand_from create help" -l debug -d 'Log debug messages'
complete -c skiff -n "__fish_skiff_using_subcommand delta; and not __fish_seen_subcommand_from create help" -s h -l help -d 'Print help'
complete -c skiff -n "__fish_skiff_using_subcommand delta; and not __fish_seen_subcommand_from create help" -f -a "create" -d 'Make the delta that rebuilds NEW from OLD (apply it with skiff copy DELTA composefs:...)'
complete -c skiff -n "__fish_skiff_using_subcommand delta; and not __fish_seen_subcommand_from create help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c skiff -n "__fish_skiff_using_subcommand delta; and __fish_seen_subcommand_from create" -l binary-diff -d 'How changed files are diffed: bsdiff (tardf1), zstd (a zstd frame with the old file as dictionary, tardf2) or auto (per file the smaller of the two; tardf2)' -r
complete -c skiff -n "__fish_skiff_using_subcommand delta; and __fish_seen_subcommand_from create" -s j -l jobs -d 'Layers diffed at once (default: number of CPUs)' -r
complete -c skiff -n "__fish_skiff_using_subcommand delta; and __fish_seen_subcommand_from create" -l dest-creds -d 'Credentials for the destination registry, USERNAME[:PASSWORD]' -r
complete -c skiff -n "__fish_skiff_using_subcommand delta; and __fish_seen_subcommand_from create" -l dest-authfile -d 'Path of the authentication file for the destination registry (overrides --authfile)' -r -F
complete -c skiff -n "__fish_skiff_using_subcommand delta; and __fish_seen_subcommand_from create" -l dest-tls-verify -d 'Require HTTPS and verify certificates when talking to the destination registry' -r -f -a "true\t''
false\t''"
complete -c skiff -n "__fish_skiff_using_subcommand delta; and __fish_seen_subcommand_from create" -l dest-cert-dir -d 'Use certificates at PATH (*.crt, *.cert, *.key) to connect to the destination registry' -r -F
complete -c skiff -n "__fish_skiff_using_subcommand delta; and __fish_seen_subcommand_from create" -l src-creds -d 'Credentials for the source registry, USERNAME[:PASSWORD]' -r
complete -c skiff -n "__fish_skiff_using_subcommand delta; and __fish_seen_subcommand_from create" -l src-authfile -d 'Path of the authentication file for the source registry (overrides --authfile)' -r -F
complete -c skiff -n "__fish_skiff_using_subcommand delta; and __fish_seen_subcommand_from create" -l src-tls-verify -d 'Require HTTPS and verify certificates when talking to the source registry' -r -f -a "true\t''
false\t''"
complete -c skiff -n "__fish_skiff_using_subcommand delta; and __fish_seen_subcommand_from create" -l src-cert-dir -d 'Use certificates at PATH (*.crt, *.cert, *.key) to connect to the source registry' -r -F
complete -c skiff -n "__fish_skiff_using_subcommand delta; and __fish_seen_subcommand_from create" -l override-arch -d 'Use ARCH instead of the machine\'s architecture when choosing an image' -r
complete -c skiff -n "__fish_skiff_using_subcommand delta; and __fish_seen_subcommand_from create" -l override-os -d 'Use OS instead of the machine\'s OS when choosing an image' -r
complete -c skiff -n "__fish_skiff_using_subcommand delta; and __fish_seen_subcommand_from create" -l override-variant -d 'Use VARIANT instead of the machine\'s architecture variant when choosing an image' -r
complete -c skiff -n "__fish_skiff_using_subcommand delta; and __fish_seen_subcommand_from create" -l policy -d 'Path to a signature policy file' -r -F
complete -c skiff -n "__fish_skiff_using_subcommand delta; and __fish_seen_subcommand_from create" -l command-timeout -d 'Give up on a command after this long (for example 90s, 5m, 1h)' -r
complete -c skiff -n "__fish_skiff_using_subcommand delta; and __fish_seen_subcommand_from create" -l json -d 'Print the summary as JSON'
complete -c skiff -n "__fish_skiff_using_subcommand delta; and __fish_seen_subcommand_from create" -l dest-no-creds -d 'Access the destination registry anonymously'
complete -c skiff -n "__fish_skiff_using_subcommand delta; and __fish_seen_subcommand_from create" -l src-no-creds -d 'Access the source registry anonymously'
complete -c skiff -n "__fish_skiff_using_subcommand delta; and __fish_seen_subcommand_from create" -l insecure-policy -d 'Run without any policy check'
complete -c skiff -n "__fish_skiff_using_subcommand delta; and __fish_seen_subcommand_from create" -l debug -d 'Log debug messages'
complete -c skiff -n "__fish_skiff_using_subcommand delta; and __fish_seen_subcommand_from create" -s h -l help -d 'Print help'
complete -c skiff -n "__fish_skiff_using_subcommand delta; and __fish_seen_subcommand_from help" -f -a "create" -d 'Make the delta that rebuilds NEW from OLD (apply it with skiff copy DELTA composefs:...)'
complete -c skiff -n "__fish_skiff_using_subcommand delta; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c skiff -n "__fish_skiff_using_subcommand init" -l hash -d 'Object-name algorithm' -r -f -a "sha256\t''
sha512\t''"
complete -c skiff -n "__fish_skiff_using_subcommand init" -l override-arch -d 'Use ARCH instead of the machine\'s architecture when choosing an image' -r
complete -c skiff -n "__fish_skiff_using_subcommand init" -l override-os -d 'Use OS instead of the machine\'s OS when choosing an image' -r
complete -c skiff -n "__fish_skiff_using_subcommand init" -l override-variant -d 'Use VARIANT instead of the machine\'s architecture variant when choosing an image' -r
complete -c skiff -n "__fish_skiff_using_subcommand init" -l policy -d 'Path to a signature policy file' -r -F
complete -c skiff -n "__fish_skiff_using_subcommand init" -l command-timeout -d 'Give up on a command after this long (for example 90s, 5m, 1h)' -r
complete -c skiff -n "__fish_skiff_using_subcommand init" -l require-verity -d 'Refuse to create a repository without fs-verity'
complete -c skiff -n "__fish_skiff_using_subcommand init" -l keep-blobs -d 'Keep the original compressed blob of every layer pulled in full, so that images copied out keep their manifest digests (a setting of the repository, in skiff.json; also for an existing repository)'
complete -c skiff -n "__fish_skiff_using_subcommand init" -l insecure-policy -d 'Run without any policy check'
complete -c skiff -n "__fish_skiff_using_subcommand init" -l debug -d 'Log debug messages'
complete -c skiff -n "__fish_skiff_using_subcommand init" -s h -l help -d 'Print help'
complete -c skiff -n "__fish_skiff_using_subcommand images" -l override-arch -d 'Use ARCH instead of the machine\'s architecture when choosing an image' -r
complete -c skiff -n "__fish_skiff_using_subcommand images" -l override-os -d 'Use OS instead of the machine\'s OS when choosing an image' -r
complete -c skiff -n "__fish_skiff_using_subcommand images" -l override-variant -d 'Use VARIANT instead of the machine\'s architecture variant when choosing an image' -r
complete -c skiff -n "__fish_skiff_using_subcommand images" -l policy -d 'Path to a signature policy file' -r -F
complete -c skiff -n "__fish_skiff_using_subcommand images" -l command-timeout -d 'Give up on a command after this long (for example 90s, 5m, 1h)' -r
complete -c skiff -n "__fish_skiff_using_subcommand images" -l json -d 'Print JSON'
complete -c skiff -n "__fish_skiff_using_subcommand images" -l insecure-policy -d 'Run without any policy check'
complete -c skiff -n "__fish_skiff_using_subcommand images" -l debug -d 'Log debug messages'
complete -c skiff -n "__fish_skiff_using_subcommand images" -s h -l help -d 'Print help'
complete -c skiff -n "__fish_skiff_using_subcommand inspect" -l override-arch -d 'Use ARCH instead of the machine\'s architecture when choosing an image' -r
complete -c skiff -n "__fish_skiff_using_subcommand inspect" -l override-os -d 'Use OS instead of the machine\'s OS when choosing an image' -r
complete -c skiff -n "__fish_skiff_using_subcommand inspect" -l override-variant -d 'Use VARIANT instead of the machine\'s architecture variant when choosing an image' -r
complete -c skiff -n "__fish_skiff_using_subcommand inspect" -l policy -d 'Path to a signature policy file' -r -F
complete -c skiff -n "__fish_skiff_using_subcommand inspect" -l command-timeout -d 'Give up on a command after this long (for example 90s, 5m, 1h)' -r
complete -c skiff -n "__fish_skiff_using_subcommand inspect" -l raw -d 'Print the raw manifest (with --config: the raw config)'
complete -c skiff -n "__fish_skiff_using_subcommand inspect" -l config -d 'Print the image\'s config'
complete -c skiff -n "__fish_skiff_using_subcommand inspect" -l insecure-policy -d 'Run without any policy check'
complete -c skiff -n "__fish_skiff_using_subcommand inspect" -l debug -d 'Log debug messages'
complete -c skiff -n "__fish_skiff_using_subcommand inspect" -s h -l help -d 'Print help'
complete -c skiff -n "__fish_skiff_using_subcommand rm" -l override-arch -d 'Use ARCH instead of the machine\'s architecture when choosing an image' -r
complete -c skiff -n "__fish_skiff_using_subcommand rm" -l override-os -d 'Use OS instead of the machine\'s OS when choosing an image' -r
complete -c skiff -n "__fish_skiff_using_subcommand rm" -l override-variant -d 'Use VARIANT instead of the machine\'s architecture variant when choosing an image' -r
complete -c skiff -n "__fish_skiff_using_subcommand rm" -l policy -d 'Path to a signature policy file' -r -F
complete -c skiff -n "__fish_skiff_using_subcommand rm" -l command-timeout -d 'Give up on a command after this long (for example 90s, 5m, 1h)' -r
complete -c skiff -n "__fish_skiff_using_subcommand rm" -l insecure-policy -d 'Run without any policy check'
complete -c skiff -n "__fish_skiff_using_subcommand rm" -l debug -d 'Log debug messages'
complete -c skiff -n "__fish_skiff_using_subcommand rm" -s h -l help -d 'Print help'
complete -c skiff -n "__fish_skiff_using_subcommand gc" -l override-arch -d 'Use ARCH instead of the machine\'s architecture when choosing an image' -r
complete -c skiff -n "__fish_skiff_using_subcommand gc" -l override-os -d 'Use OS instead of the machine\'s OS when choosing an image' -r
complete -c skiff -n "__fish_skiff_using_subcommand gc" -l override-variant -d 'Use VARIANT instead of the machine\'s architecture variant when choosing an image' -r
complete -c skiff -n "__fish_skiff_using_subcommand gc" -l policy -d 'Path to a signature policy file' -r -F
complete -c skiff -n "__fish_skiff_using_subcommand gc" -l command-timeout -d 'Give up on a command after this long (for example 90s, 5m, 1h)' -r
complete -c skiff -n "__fish_skiff_using_subcommand gc" -l insecure-policy -d 'Run without any policy check'
complete -c skiff -n "__fish_skiff_using_subcommand gc" -l debug -d 'Log debug messages'
complete -c skiff -n "__fish_skiff_using_subcommand gc" -s h -l help -d 'Print help'
complete -c skiff -n "__fish_skiff_using_subcommand serve" -l listen -d 'Address and port to listen on (port 0: any free port, printed at start). Addresses other than loopback need --tls-cert, --tls-key and --htpasswd' -r
complete -c skiff -n "__fish_skiff_using_subcommand serve" -l tls-cert -d 'Serve HTTPS with this certificate (PEM)' -r -F
complete -c skiff -n "__fish_skiff_using_subcommand serve" -l tls-key -d 'The certificate\'s private key (PKCS#8 PEM)' -r -F
complete -c skiff -n "__fish_skiff_using_subcommand serve" -l htpasswd -d 'Require HTTP Basic authentication against this htpasswd file (bcrypt: htpasswd -B)' -r -F
complete -c skiff -n "__fish_skiff_using_subcommand serve" -s j -l jobs -d 'Layers imported, or compressed again, at once (default: the number of CPUs)' -r
complete -c skiff -n "__fish_skiff_using_subcommand serve" -l override-arch -d 'Use ARCH instead of the machine\'s architecture when choosing an image' -r
complete -c skiff -n "__fish_skiff_using_subcommand serve" -l override-os -d 'Use OS instead of the machine\'s OS when choosing an image' -r
complete -c skiff -n "__fish_skiff_using_subcommand serve" -l override-variant -d 'Use VARIANT instead of the machine\'s architecture variant when choosing an image' -r
complete -c skiff -n "__fish_skiff_using_subcommand serve" -l policy -d 'Path to a signature policy file' -r -F
complete -c skiff -n "__fish_skiff_using_subcommand serve" -l command-timeout -d 'Give up on a command after this long (for example 90s, 5m, 1h)' -r
complete -c skiff -n "__fish_skiff_using_subcommand serve" -l read-only -d 'Serve pulls only: every push, tag and delete is refused'
complete -c skiff -n "__fish_skiff_using_subcommand serve" -l insecure-policy -d 'Run without any policy check'
complete -c skiff -n "__fish_skiff_using_subcommand serve" -l debug -d 'Log debug messages'
complete -c skiff -n "__fish_skiff_using_subcommand serve" -s h -l help -d 'Print help'
complete -c skiff -n "__fish_skiff_using_subcommand podman; and not __fish_seen_subcommand_from enable expose status prune watch help" -l override-arch -d 'Use ARCH instead of the machine\'s architecture when choosing an image' -r
complete -c skiff -n "__fish_skiff_using_subcommand podman; and not __fish_seen_subcommand_from enable expose status prune watch help" -l override-os -d 'Use OS instead of the machine\'s OS when choosing an image' -r
complete -c skiff -n "__fish_skiff_using_subcommand podman; and not __fish_seen_subcommand_from enable expose status prune watch help" -l override-variant -d 'Use VARIANT instead of the machine\'s architecture variant when choosing an image' -r
complete -c skiff -n "__fish_skiff_using_subcommand podman; and not __fish_seen_subcommand_from enable expose status prune watch help" -l policy -d 'Path to a signature policy file' -r -F
complete -c skiff -n "__fish_skiff_using_subcommand podman; and not __fish_seen_subcommand_from enable expose status prune watch help" -l command-timeout -d 'Give up on a command after this long (for example 90s, 5m, 1h)' -r
complete -c skiff -n "__fish_skiff_using_subcommand podman; and not __fish_seen_subcommand_from enable expose status prune watch help" -l insecure-policy -d 'Run without any policy check'
complete -c skiff -n "__fish_skiff_using_subcommand podman; and not __fish_seen_subcommand_from enable expose status prune watch help" -l debug -d 'Log debug messages'
complete -c skiff -n "__fish_skiff_using_subcommand podman; and not __fish_seen_subcommand_from enable expose status prune watch help" -s h -l help -d 'Print help'
complete -c skiff -n "__fish_skiff_using_subcommand podman; and not __fish_seen_subcommand_from enable expose status prune watch help" -f -a "enable" -d 'Make a directory the Additional Layer Store of a repository and list it in podman\'s storage.conf'
complete -c skiff -n "__fish_skiff_using_subcommand podman; and not __fish_seen_subcommand_from enable expose status prune watch help" -f -a "expose" -d 'Make the layers of a stored image available to podman\'s pulls'
complete -c skiff -n "__fish_skiff_using_subcommand podman; and not __fish_seen_subcommand_from enable expose status prune watch help" -f -a "status" -d 'List the exposed layers, the stored images naming each and the podman layers using each'
complete -c skiff -n "__fish_skiff_using_subcommand podman; and not __fish_seen_subcommand_from enable expose status prune watch help" -f -a "prune" -d 'Withdraw the layers no stored image names and podman does not use (skiff gc does too)'
complete -c skiff -n "__fish_skiff_using_subcommand podman; and not __fish_seen_subcommand_from enable expose status prune watch help" -f -a "watch" -d 'Copy every image podman pulls into the repository as it is pulled, read from podman\'s store (until SIGTERM or SIGINT)'
complete -c skiff -n "__fish_skiff_using_subcommand podman; and not __fish_seen_subcommand_from enable expose status prune watch help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c skiff -n "__fish_skiff_using_subcommand podman; and __fish_seen_subcommand_from enable" -l dir -d 'The layer store directory' -r -F
complete -c skiff -n "__fish_skiff_using_subcommand podman; and __fish_seen_subcommand_from enable" -l storage-conf -d 'The storage.conf to edit (default: $CONTAINERS_STORAGE_CONF, else /etc/containers/storage.conf, started from the distribution\'s when missing)' -r -F
complete -c skiff -n "__fish_skiff_using_subcommand podman; and __fish_seen_subcommand_from enable" -l graphroot -d 'Podman graphroots whose layers may use the store (default: the storage.conf\'s graphroot, else /var/lib/containers/storage)' -r -F
complete -c skiff -n "__fish_skiff_using_subcommand podman; and __fish_seen_subcommand_from enable" -l override-arch -d 'Use ARCH instead of the machine\'s architecture when choosing an image' -r
complete -c skiff -n "__fish_skiff_using_subcommand podman; and __fish_seen_subcommand_from enable" -l override-os -d 'Use OS instead of the machine\'s OS when choosing an image' -r
complete -c skiff -n "__fish_skiff_using_subcommand podman; and __fish_seen_subcommand_from enable" -l override-variant -d 'Use VARIANT instead of the machine\'s architecture variant when choosing an image' -r
complete -c skiff -n "__fish_skiff_using_subcommand podman; and __fish_seen_subcommand_from enable" -l policy -d 'Path to a signature policy file' -r -F
complete -c skiff -n "__fish_skiff_using_subcommand podman; and __fish_seen_subcommand_from enable" -l command-timeout -d 'Give up on a command after this long (for example 90s, 5m, 1h)' -r
complete -c skiff -n "__fish_skiff_using_subcommand podman; and __fish_seen_subcommand_from enable" -l print -d 'Print the storage.conf line instead of editing the file'
complete -c skiff -n "__fish_skiff_using_subcommand podman; and __fish_seen_subcommand_from enable" -l insecure-policy -d 'Run without any policy check'
complete -c skiff -n "__fish_skiff_using_subcommand podman; and __fish_seen_subcommand_from enable" -l debug -d 'Log debug messages'
complete -c skiff -n "__fish_skiff_using_subcommand podman; and __fish_seen_subcommand_from enable" -s h -l help -d 'Print help'
complete -c skiff -n "__fish_skiff_using_subcommand podman; and __fish_seen_subcommand_from expose" -l override-arch -d 'Use ARCH instead of the machine\'s architecture when choosing an image' -r
complete -c skiff -n "__fish_skiff_using_subcommand podman; and __fish_seen_subcommand_from expose" -l override-os -d 'Use OS instead of the machine\'s OS when choosing an image' -r
complete -c skiff -n "__fish_skiff_using_subcommand podman; and __fish_seen_subcommand_from expose" -l override-variant -d 'Use VARIANT instead of the machine\'s architecture variant when choosing an image' -r
complete -c skiff -n "__fish_skiff_using_subcommand podman; and __fish_seen_subcommand_from expose" -l policy -d 'Path to a signature policy file' -r -F
complete -c skiff -n "__fish_skiff_using_subcommand podman; and __fish_seen_subcommand_from expose" -l command-timeout -d 'Give up on a command after this long (for example 90s, 5m, 1h)' -r
complete -c skiff -n "__fish_skiff_using_subcommand podman; and __fish_seen_subcommand_from expose" -l json -d 'Print JSON'
complete -c skiff -n "__fish_skiff_using_subcommand podman; and __fish_seen_subcommand_from expose" -l insecure-policy -d 'Run without any policy check'
complete -c skiff -n "__fish_skiff_using_subcommand podman; and __fish_seen_subcommand_from expose" -l debug -d 'Log debug messages'
complete -c skiff -n "__fish_skiff_using_subcommand podman; and __fish_seen_subcommand_from expose" -s h -l help -d 'Print help'
complete -c skiff -n "__fish_skiff_using_subcommand podman; and __fish_seen_subcommand_from status" -l override-arch -d 'Use ARCH instead of the machine\'s architecture when choosing an image' -r
complete -c skiff -n "__fish_skiff_using_subcommand podman; and __fish_seen_subcommand_from status" -l override-os -d 'Use OS instead of the machine\'s OS when choosing an image' -r
complete -c skiff -n "__fish_skiff_using_subcommand podman; and __fish_seen_subcommand_from status" -l override-variant -d 'Use VARIANT instead of the machine\'s architecture variant when choosing an image' -r
complete -c skiff -n "__fish_skiff_using_subcommand podman; and __fish_seen_subcommand_from status" -l policy -d 'Path to a signature policy file' -r -F
complete -c skiff -n "__fish_skiff_using_subcommand podman; and __fish_seen_subcommand_from status" -l command-timeout -d 'Give up on a command after this long (for example 90s, 5m, 1h)' -r
complete -c skiff -n "__fish_skiff_using_subcommand podman; and __fish_seen_subcommand_from status" -l json -d 'Print JSON'
complete -c skiff -n "__fish_skiff_using_subcommand podman; and __fish_seen_subcommand_from status" -l insecure-policy -d 'Run without any policy check'
complete -c skiff -n "__fish_skiff_using_subcommand podman; and __fish_seen_subcommand_from status" -l debug -d 'Log debug messages'
complete -c skiff -n "__fish_skiff_using_subcommand podman; and __fish_seen_subcommand_from status" -s h -l help -d 'Print help'
complete -c skiff -n "__fish_skiff_using_subcommand podman; and __fish_seen_subcommand_from prune" -l override-arch -d 'Use ARCH instead of the machine\'s architecture when choosing an image' -r
complete -c skiff -n "__fish_skiff_using_subcommand podman; and __fish_seen_subcommand_from prune" -l override-os -d 'Use OS instead of the machine\'s OS when choosing an image' -r
complete -c skiff -n "__fish_skiff_using_subcommand podman; and __fish_seen_subcommand_from prune" -l override-variant -d 'Use VARIANT instead of the machine\'s architecture variant when choosing an image' -r
complete -c skiff -n "__fish_skiff_using_subcommand podman; and __fish_seen_subcommand_from prune" -l policy -d 'Path to a signature policy file' -r -F
complete -c skiff -n "__fish_skiff_using_subcommand podman; and __fish_seen_subcommand_from prune" -l command-timeout -d 'Give up on a command after this long (for example 90s, 5m, 1h)' -r
complete -c skiff -n "__fish_skiff_using_subcommand podman; and __fish_seen_subcommand_from prune" -l insecure-policy -d 'Run without any policy check'
complete -c skiff -n "__fish_skiff_using_subcommand podman; and __fish_seen_subcommand_from prune" -l debug -d 'Log debug messages'
complete -c skiff -n "__fish_skiff_using_subcommand podman; and __fish_seen_subcommand_from prune" -s h -l help -d 'Print help'
complete -c skiff -n "__fish_skiff_using_subcommand podman; and __fish_seen_subcommand_from watch" -l storage-root -d 'The graph root of podman\'s store (default: storage.conf\'s graphroot, else /var/lib/containers/storage)' -r -F
complete -c skiff -n "__fish_skiff_using_subcommand podman; and __fish_seen_subcommand_from watch" -l queue -d 'Pulls waiting to be copied, at most; while the queue is full, podman\'s event log holds the rest' -r
complete -c skiff -n "__fish_skiff_using_subcommand podman; and __fish_seen_subcommand_from watch" -l podman -d 'The podman program whose events are followed' -r -F
complete -c skiff -n "__fish_skiff_using_subcommand podman; and __fish_seen_subcommand_from watch" -l override-arch -d 'Use ARCH instead of the machine\'s architecture when choosing an image' -r
complete -c skiff -n "__fish_skiff_using_subcommand podman; and __fish_seen_subcommand_from watch" -l override-os -d 'Use OS instead of the machine\'s OS when choosing an image' -r
complete -c skiff -n "__fish_skiff_using_subcommand podman; and __fish_seen_subcommand_from watch" -l override-variant -d 'Use VARIANT instead of the machine\'s architecture variant when choosing an image' -r
complete -c skiff -n "__fish_skiff_using_subcommand podman; and __fish_seen_subcommand_from watch" -l policy -d 'Path to a signature policy file' -r -F
complete -c skiff -n "__fish_skiff_using_subcommand podman; and __fish_seen_subcommand_from watch" -l command-timeout -d 'Give up on a command after this long (for example 90s, 5m, 1h)' -r
complete -c skiff -n "__fish_skiff_using_subcommand podman; and __fish_seen_subcommand_from watch" -l expose -d 'Also make each image\'s layers available to podman\'s pulls (skiff podman expose)'
complete -c skiff -n "__fish_skiff_using_subcommand podman; and __fish_seen_subcommand_from watch" -l insecure-policy -d 'Run without any policy check'
complete -c skiff -n "__fish_skiff_using_subcommand podman; and __fish_seen_subcommand_from watch" -l debug -d 'Log debug messages'
complete -c skiff -n "__fish_skiff_using_subcommand podman; and __fish_seen_subcommand_from watch" -s h -l help -d 'Print help'
complete -c skiff -n "__fish_skiff_using_subcommand podman; and __fish_seen_subcommand_from help" -f -a "enable" -d 'Make a directory the Additional Layer Store of a repository and list it in podman\'s storage.conf'
complete -c skiff -n "__fish_skiff_using_subcommand podman; and __fish_seen_subcommand_from help" -f -a "expose" -d 'Make the layers of a stored image available to podman\'s pulls'
complete -c skiff -n "__fish_skiff_using_subcommand podman; and __fish_seen_subcommand_from help" -f -a "status" -d 'List the exposed layers, the stored images naming each and the podman layers using each'
complete -c skiff -n "__fish_skiff_using_subcommand podman; and __fish_seen_subcommand_from help" -f -a "prune" -d 'Withdraw the layers no stored image names and podman does not use (skiff gc does too)'
complete -c skiff -n "__fish_skiff_using_subcommand podman; and __fish_seen_subcommand_from help" -f -a "watch" -d 'Copy every image podman pulls into the repository as it is pulled, read from podman\'s store (until SIGTERM or SIGINT)'
complete -c skiff -n "__fish_skiff_using_subcommand podman; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c skiff -n "__fish_skiff_using_subcommand sync" -l from-file -d 'Mirror every pair of this list: `SOURCE DESTINATION [key=value ...]` a line, `#` comments (options: referrers=, cosign=, force=, tag-regex=, platforms=, allow-digest-change=)' -r -F
complete -c skiff -n "__fish_skiff_using_subcommand sync" -l src -d '`yaml`: SOURCE is skopeo sync\'s YAML (images, images-by-tag-regex, credentials, tls-verify, cert-dir)' -r -f -a "yaml\t''"
complete -c skiff -n "__fish_skiff_using_subcommand sync" -l dest -d 'With --src yaml: whether DESTINATION is a registry namespace (docker, the default) or a directory of OCI layouts (oci)' -r -f -a "docker\t''
oci\t''"
complete -c skiff -n "__fish_skiff_using_subcommand sync" -l platform -d 'Keep only this platform of an index (OS/ARCH[/VARIANT]; repeat for more). The index written is a new one, with another digest: needs --allow-digest-change' -r
complete -c skiff -n "__fish_skiff_using_subcommand sync" -l retry-times -d 'Number of times to retry a failed request (network errors, HTTP 429, 502, 503, 504), after 1s, 2s, 4s...' -r
complete -c skiff -n "__fish_skiff_using_subcommand sync" -s j -l jobs -d 'Blobs copied at once' -r
complete -c skiff -n "__fish_skiff_using_subcommand sync" -l authfile -d 'Path of the authentication file (default: skopeo\'s lookup of auth.json)' -r -F
complete -c skiff -n "__fish_skiff_using_subcommand sync" -l src-creds -d 'Credentials for the source registry, USERNAME[:PASSWORD]' -r
complete -c skiff -n "__fish_skiff_using_subcommand sync" -l src-authfile -d 'Path of the authentication file for the source registry (overrides --authfile)' -r -F
complete -c skiff -n "__fish_skiff_using_subcommand sync" -l src-tls-verify -d 'Require HTTPS and verify certificates when talking to the source registry' -r -f -a "true\t''
false\t''"
complete -c skiff -n "__fish_skiff_using_subcommand sync" -l src-cert-dir -d 'Use certificates at PATH (*.crt, *.cert, *.key) to connect to the source registry' -r -F
complete -c skiff -n "__fish_skiff_using_subcommand sync" -l dest-creds -d 'Credentials for the destination registry, USERNAME[:PASSWORD]' -r
complete -c skiff -n "__fish_skiff_using_subcommand sync" -l dest-authfile -d 'Path of the authentication file for the destination registry (overrides --authfile)' -r -F
complete -c skiff -n "__fish_skiff_using_subcommand sync" -l dest-tls-verify -d 'Require HTTPS and verify certificates when talking to the destination registry' -r -f -a "true\t''
false\t''"
complete -c skiff -n "__fish_skiff_using_subcommand sync" -l dest-cert-dir -d 'Use certificates at PATH (*.crt, *.cert, *.key) to connect to the destination registry' -r -F
complete -c skiff -n "__fish_skiff_using_subcommand sync" -l override-arch -d 'Use ARCH instead of the machine\'s architecture when choosing an image' -r
complete -c skiff -n "__fish_skiff_using_subcommand sync" -l override-os -d 'Use OS instead of the machine\'s OS when choosing an image' -r
complete -c skiff -n "__fish_skiff_using_subcommand sync" -l override-variant -d 'Use VARIANT instead of the machine\'s architecture variant when choosing an image' -r
complete -c skiff -n "__fish_skiff_using_subcommand sync" -l policy -d 'Path to a signature policy file' -r -F
complete -c skiff -n "__fish_skiff_using_subcommand sync" -l command-timeout -d 'Give up on a command after this long (for example 90s, 5m, 1h)' -r
complete -c skiff -n "__fish_skiff_using_subcommand sync" -l no-referrers -d 'Do not copy referrers (deltas, signatures, SBOMs attached to the images)'
complete -c skiff -n "__fish_skiff_using_subcommand sync" -l cosign -d 'Also copy cosign\'s sha256-HEX.sig, .att and .sbom tags'
complete -c skiff -n "__fish_skiff_using_subcommand sync" -l force -d 'Move a destination tag that is at another digest than a source pinned by digest'
complete -c skiff -n "__fish_skiff_using_subcommand sync" -l allow-digest-change -d 'Let --platform write an index whose digest is not the source\'s'
complete -c skiff -n "__fish_skiff_using_subcommand sync" -l dry-run -d 'List what would be copied, and copy nothing'
complete -c skiff -n "__fish_skiff_using_subcommand sync" -l verify -d 'Afterwards, read every manifest and blob back from the destination and check its digest'
complete -c skiff -n "__fish_skiff_using_subcommand sync" -l keep-going -d 'Go on with the other images after one fails (then exit 1)'
complete -c skiff -n "__fish_skiff_using_subcommand sync" -l json -d 'Print one JSON object per line'
complete -c skiff -n "__fish_skiff_using_subcommand sync" -s q -l quiet -d 'Print only errors and the summary'
complete -c skiff -n "__fish_skiff_using_subcommand sync" -l src-no-creds -d 'Access the source registry anonymously'
complete -c skiff -n "__fish_skiff_using_subcommand sync" -l dest-no-creds -d 'Access the destination registry anonymously'
complete -c skiff -n "__fish_skiff_using_subcommand sync" -l insecure-policy -d 'Run without any policy check'
complete -c skiff -n "__fish_skiff_using_subcommand sync" -l debug -d 'Log debug messages'
complete -c skiff -n "__fish_skiff_using_subcommand sync" -s h -l help -d 'Print help'
complete -c skiff -n "__fish_skiff_using_subcommand fsck" -l override-arch -d 'Use ARCH instead of the machine\'s architecture when choosing an image' -r
complete -c skiff -n "__fish_skiff_using_subcommand fsck" -l override-os -d 'Use OS instead of the machine\'s OS when choosing an image' -r
complete -c skiff -n "__fish_skiff_using_subcommand fsck" -l override-variant -d 'Use VARIANT instead of the machine\'s architecture variant when choosing an image' -r
complete -c skiff -n "__fish_skiff_using_subcommand fsck" -l policy -d 'Path to a signature policy file' -r -F
complete -c skiff -n "__fish_skiff_using_subcommand fsck" -l command-timeout -d 'Give up on a command after this long (for example 90s, 5m, 1h)' -r
complete -c skiff -n "__fish_skiff_using_subcommand fsck" -l insecure-policy -d 'Run without any policy check'
complete -c skiff -n "__fish_skiff_using_subcommand fsck" -l debug -d 'Log debug messages'
complete -c skiff -n "__fish_skiff_using_subcommand fsck" -s h -l help -d 'Print help'
complete -c skiff -n "__fish_skiff_using_subcommand help; and not __fish_seen_subcommand_from copy delta init images inspect rm gc serve podman sync fsck help" -f -a "copy" -d 'Copy an image into composefs storage (skiff copy [flags] SOURCE composefs:PATH:NAME), or out of it (skiff copy [flags] composefs:PATH:NAME DESTINATION)'
complete -c skiff -n "__fish_skiff_using_subcommand help; and not __fish_seen_subcommand_from copy delta init images inspect rm gc serve podman sync fsck help" -f -a "delta" -d 'oci-delta artifacts: skiff delta create OLD NEW DESTINATION'
complete -c skiff -n "__fish_skiff_using_subcommand help; and not __fish_seen_subcommand_from copy delta init images inspect rm gc serve podman sync fsck help" -f -a "init" -d 'Create a composefs repository (insecure mode, with a notice, where there is no fs-verity)'
complete -c skiff -n "__fish_skiff_using_subcommand help; and not __fish_seen_subcommand_from copy delta init images inspect rm gc serve podman sync fsck help" -f -a "images" -d 'List the images of a repository (default: $SKIFF_REPO, else ~/.var/lib/composefs)'
complete -c skiff -n "__fish_skiff_using_subcommand help; and not __fish_seen_subcommand_from copy delta init images inspect rm gc serve podman sync fsck help" -f -a "inspect" -d 'Show an image of a repository, as skopeo inspect does'
complete -c skiff -n "__fish_skiff_using_subcommand help; and not __fish_seen_subcommand_from copy delta init images inspect rm gc serve podman sync fsck help" -f -a "rm" -d 'Remove an image\'s tag; its data goes at the next gc'
complete -c skiff -n "__fish_skiff_using_subcommand help; and not __fish_seen_subcommand_from copy delta init images inspect rm gc serve podman sync fsck help" -f -a "gc" -d 'Remove what no tag reaches and report what was freed'
complete -c skiff -n "__fish_skiff_using_subcommand help; and not __fish_seen_subcommand_from copy delta init images inspect rm gc serve podman sync fsck help" -f -a "serve" -d 'Serve a repository over the OCI distribution API, so that skopeo, podman, crane and oras pull from and push to it'
complete -c skiff -n "__fish_skiff_using_subcommand help; and not __fish_seen_subcommand_from copy delta init images inspect rm gc serve podman sync fsck help" -f -a "podman" -d 'Serve the repository\'s layers to podman\'s pulls (an Additional Layer Store)'
complete -c skiff -n "__fish_skiff_using_subcommand help; and not __fish_seen_subcommand_from copy delta init images inspect rm gc serve podman sync fsck help" -f -a "sync" -d 'Mirror images between registries and OCI layouts with their indexes, referrers (deltas, signatures) and digests unchanged'
complete -c skiff -n "__fish_skiff_using_subcommand help; and not __fish_seen_subcommand_from copy delta init images inspect rm gc serve podman sync fsck help" -f -a "fsck" -d 'Check every object, stream, image and content index'
complete -c skiff -n "__fish_skiff_using_subcommand help; and not __fish_seen_subcommand_from copy delta init images inspect rm gc serve podman sync fsck help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c skiff -n "__fish_skiff_using_subcommand help; and __fish_seen_subcommand_from delta" -f -a "create" -d 'Make the delta that rebuilds NEW from OLD (apply it with skiff copy DELTA composefs:...)'
complete -c skiff -n "__fish_skiff_using_subcommand help; and __fish_seen_subcommand_from podman" -f -a "enable" -d 'Make a directory the Additional Layer Store of a repository and list it in podman\'s storage.conf'
complete -c skiff -n "__fish_skiff_using_subcommand help; and __fish_seen_subcommand_from podman" -f -a "expose" -d 'Make the layers of a stored image available to podman\'s pulls'
complete -c skiff -n "__fish_skiff_using_subcommand help; and __fish_seen_subcommand_from podman" -f -a "status" -d 'List the exposed layers, the stored images naming each and the podman layers using each'
complete -c skiff -n "__fish_skiff_using_subcommand help; and __fish_seen_subcommand_from podman" -f -a "prune" -d 'Withdraw the layers no stored image names and podman does not use (skiff gc does too)'
complete -c skiff -n "__fish_skiff_using_subcommand help; and __fish_seen_subcommand_from podman" -f -a "watch" -d 'Copy every image podman pulls into the repository as it is pulled, read from podman\'s store (until SIGTERM or SIGINT)'
