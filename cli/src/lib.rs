//! The `skiff` command as a library: the `skiff` binary runs it, and `skiff-gen-docs` writes the
//! man pages and shell completions from the same clap definition ([`command`]), so they list
//! exactly the flags the binary accepts.

pub mod cli;

pub use cli::command;
