//! Debian's podman 4.3.1, rootful, with storage, run directory and configuration of its own in
//! a temporary directory: the way the tests run it on this kind of machine (runc as the runtime,
//! cgroupfs as the cgroup manager, no default ulimits, no network, no registries searched for
//! short names). Nothing of the machine's own podman setup is read or written.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Result;

use crate::tools::require;

/// A private podman.
#[derive(Debug)]
pub struct Podman {
    program: PathBuf,
    root: PathBuf,
    containers_conf: PathBuf,
    registries_conf: PathBuf,
    storage_conf: PathBuf,
}

impl Podman {
    /// Sets up a podman whose state lives under `dir`.
    pub fn new(dir: &Path) -> Result<Self> {
        let program = require("podman");
        require("runc");
        let root = dir.join("storage");
        let runroot = dir.join("run");
        std::fs::create_dir_all(&root)?;
        std::fs::create_dir_all(&runroot)?;
        let containers_conf = dir.join("containers.conf");
        // Podman 4.3's default ulimits ask for more open files than a container here may
        // have; events go to a file of this podman's own (no journald in a test).
        std::fs::write(
            &containers_conf,
            format!(
                "[containers]\ndefault_ulimits = []\n\n[engine]\nruntime = \"runc\"\n\
                 cgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n\
                 events_logfile_path = \"{}\"\n",
                dir.join("events.log").display()
            ),
        )?;
        let registries_conf = dir.join("registries.conf");
        std::fs::write(&registries_conf, "unqualified-search-registries = []\n")?;
        let storage_conf = dir.join("storage.conf");
        std::fs::write(
            &storage_conf,
            format!(
                "[storage]\ndriver = \"overlay\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
                root.display(),
                runroot.display()
            ),
        )?;
        Ok(Self {
            program,
            root,
            containers_conf,
            registries_conf,
            storage_conf,
        })
    }

    /// Its graphroot.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The storage.conf it reads (`CONTAINERS_STORAGE_CONF`).
    pub fn storage_conf(&self) -> &Path {
        &self.storage_conf
    }

    /// Runs `podman ARGS…`, panicking with its output when it fails; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.command().args(args).output().expect("running podman");
        assert!(
            out.status.success(),
            "podman {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `podman run --rm --network none IMAGE /bin/sh -c SCRIPT`; returns its stdout.
    pub fn run_script(&self, image: &str, script: &str) -> String {
        self.ok(&[
            "run",
            "--rm",
            "--network",
            "none",
            image,
            "/bin/sh",
            "-c",
            script,
        ])
    }

    /// The environment that points podman (or a program that runs it) at this podman's
    /// configuration and storage.
    pub fn env(&self) -> [(&'static str, &Path); 3] {
        [
            ("CONTAINERS_CONF", &self.containers_conf),
            ("CONTAINERS_REGISTRIES_CONF", &self.registries_conf),
            ("CONTAINERS_STORAGE_CONF", &self.storage_conf),
        ]
    }

    /// `podman ARGS…` with this podman's storage and configuration.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.envs(self.env())
            // The storage.conf names the root, run root and driver: given on the command line,
            // they make podman drop the file's options, the Additional Layer Store among them.
            .args(["--runtime", "runc", "--cgroup-manager", "cgroupfs"]);
        cmd
    }
}

impl Drop for Podman {
    /// Removes the containers and images, which unmounts what podman mounted under its
    /// storage, so that the directory can go.
    fn drop(&mut self) {
        let _ = self.command().args(["rm", "--all", "--force"]).output();
        let _ = self
            .command()
            .args(["image", "rm", "--all", "--force"])
            .output();
    }
}
