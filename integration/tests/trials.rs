//! Crash and concurrency trials: `skiff copy` killed with SIGKILL at 25 points of a copy and of
//! a tag replacement; two copies into one repository at once; a copy racing `skiff rm` and
//! `skiff gc` of an image that shares its layers.
//!
//! The two images, `v1` and `v2`, share two layers (a base of 2,000 small files and 3 MiB of
//! libraries) and have two layers of their own each (2 MiB of binary with 300 small files, and
//! 1 MiB of data). Every check is against the real programs: `skiff fsck`, `cfsctl oci fsck`,
//! and `cfsctl oci compute-id` compared with that of an undisturbed copy.
//!
//! Why the repository locks make the concurrency trials pass: a copy holds composefs' shared
//! `flock` on the repository from the moment it opens the store to its exit; `skiff gc` takes
//! the exclusive lock, so it waits for running copies, and a copy that starts during a gc
//! waits for the gc before it looks at what is stored. Two copies both hold the shared lock and
//! write side by side: objects and stream names are created atomically, equal content gives
//! equal names, so neither fails.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use skiff_integration::crash::{
    Ended, Found, ImageNames, WatchedCopy, copy_command, holds_exclusive_flock, scratch_dir,
    tag_target, waits_for_flock,
};
use skiff_integration::faults::FlakyForwarder;
use skiff_integration::fixtures::{self, Compression, Layer, WrittenImage, dir, file};
use skiff_integration::registry::Registry;
use skiff_integration::tools::{cfsctl, run, skiff};

/// Small files of the shared base layer: enough that building the image's tree and EROFS
/// takes a while, so that kills land inside the publish.
const BASE_FILES: usize = 2_000;

/// The layers only `seed`'s version has: a binary with small files beside it, and data.
fn own_layers(seed: u64) -> [Layer; 2] {
    let mut app = Layer::default();
    app.add("usr/", dir())
        .add("usr/bin/", dir())
        .add("usr/bin/app", file(fixtures::noise(seed, 2 << 20)))
        .add("usr/share/", dir())
        .add("usr/share/app/", dir());
    for i in 0..300 {
        app.add(
            format!("usr/share/app/{i:03}.txt"),
            file(fixtures::text(
                seed * 1000 + i,
                200 + (i as usize * 31) % 3000,
            )),
        );
    }
    let mut data = Layer::default();
    data.add("var/", dir())
        .add("var/lib/", dir())
        .add("var/lib/app/", dir())
        .add("var/lib/app/data", file(fixtures::noise(seed + 1, 1 << 20)));
    [app, data]
}

/// `v1` and `v2`: the shared base and libraries, then each version's own layers.
fn app_images() -> (Vec<Layer>, Vec<Layer>) {
    let mut base = Layer::default();
    base.add("usr/", dir()).add("usr/share/", dir());
    for i in 0..BASE_FILES {
        if i % 250 == 0 {
            base.add(format!("usr/share/base{:02}/", i / 250), dir());
        }
        base.add(
            format!("usr/share/base{:02}/f{i:04}", i / 250),
            file(fixtures::text(i as u64, 100 + (i * 53) % 1900)),
        );
    }
    let mut lib = Layer::default();
    lib.add("usr/", dir())
        .add("usr/lib/", dir())
        .add("usr/lib/libbig.so", file(fixtures::noise(11, 3 << 20)));
    let shared = [base, lib];
    let v1 = shared.iter().cloned().chain(own_layers(100)).collect();
    let v2 = shared.into_iter().chain(own_layers(200)).collect();
    (v1, v2)
}

/// The two images in an OCI layout and in a registry, and the names they take in a store.
struct Images {
    _dir: tempfile::TempDir,
    layout: PathBuf,
    registry: Registry,
    v1: ImageNames,
    v2: ImageNames,
}

impl Images {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let layout = dir.path().join("layout");
        let (v1, v2) = app_images();
        let write = |tag, layers: &[Layer]| -> WrittenImage {
            fixtures::write_oci_layout(&layout, tag, layers, Compression::Gzip).unwrap()
        };
        let (w1, w2) = (write("v1", &v1), write("v2", &v2));
        let registry = Registry::start_plain().unwrap();
        for tag in ["v1", "v2"] {
            registry
                .push(
                    &format!("oci:{}:{tag}", layout.display()),
                    &format!("app:{tag}"),
                )
                .unwrap();
        }
        Self {
            _dir: dir,
            layout,
            registry,
            v1: ImageNames::of(&w1),
            v2: ImageNames::of(&w2),
        }
    }

    fn upstream(&self) -> SocketAddr {
        self.registry.host().parse().unwrap()
    }

    fn names(&self, version: &str) -> &ImageNames {
        if version == "v1" { &self.v1 } else { &self.v2 }
    }

    /// `skiff copy` of `version` from the registry at `host` into `repo` as `tag`, fetching
    /// `jobs` layers at a time.
    fn copy_from_registry(host: &str, version: &str, repo: &Path, tag: &str, jobs: u32) -> Command {
        copy_command(&format!("docker://{host}/app:{version}"), repo, tag, jobs)
    }

    /// `skiff copy` of `version` from the OCI layout into `repo` as `tag`.
    fn copy_from_layout(&self, version: &str, repo: &Path, tag: &str) -> Command {
        let source = format!("oci:{}:{version}", self.layout.display());
        copy_command(&source, repo, tag, 2)
    }
}

fn compute_id(repo: &Path, tag: &str) -> String {
    run(cfsctl(repo).args(["oci", "compute-id", tag])).unwrap()
}

fn assert_fsck_clean(repo: &Path) {
    run(skiff().arg("fsck").arg(repo)).unwrap();
    run(cfsctl(repo).args(["oci", "fsck"])).unwrap();
}

fn assert_succeeded(ended: &Ended, what: &str) {
    assert!(ended.status.success(), "{what}: {}", ended.stderr);
}

fn copy_repo(from: &Path, to: &Path) {
    run(Command::new("cp").arg("-a").arg(from).arg(to)).unwrap();
}

/// Copies `version` undisturbed into `repo` as `tag` through a counting forwarder; returns the
/// bytes the copy received and the image's compute-id.
fn undisturbed(images: &Images, version: &str, repo: &Path, tag: &str) -> (u64, String) {
    let counter = FlakyForwarder::start_held(images.upstream(), u64::MAX).unwrap();
    let copy = Images::copy_from_registry(&counter.host(), version, repo, tag, 2);
    assert_succeeded(&WatchedCopy::spawn(copy).unwrap().wait().unwrap(), version);
    let names = images.names(version);
    assert_eq!(
        names.found_in(repo, tag),
        Found {
            layers: names.diff_ids.len(),
            config: true,
            manifest: true,
            tag: Some(names.manifest.clone()),
        },
        "the names the trials watch are the ones a copy makes"
    );
    assert_fsck_clean(repo);
    (counter.relayed(), compute_id(repo, tag))
}

/// Where a copy is killed.
#[derive(Debug, Clone, Copy)]
enum Point {
    /// Once the copy has received this many bytes from the registry: the forwarder holds
    /// every connection there, so the kill finds the copy stopped at that byte.
    Bytes(u64),
    /// At the `n`th `layer-done` event: `n` layers are named (more, if others end in the
    /// moment the kill takes); after the last, the publish (tree, EROFS, config, manifest,
    /// tag) begins.
    LayerDone(usize),
    /// When the config's splitstream is named: the EROFS is written and synced.
    ConfigNamed,
    /// When the manifest's splitstream is named: the tag is next.
    ManifestNamed,
    /// When the tag points at the new image.
    TagMoved,
    /// At the `published` event.
    Published,
}

/// A copy of `version` to the tag `app`, starting from an empty repository (`from: None`) or
/// from a copy of `from` (which holds `v1` as `app`: the copy replaces the tag).
struct Phase<'a> {
    images: &'a Images,
    version: &'static str,
    from: Option<&'a Path>,
    /// Layers fetched at once.
    jobs: u32,
    /// compute-id of the undisturbed result, and of the image the tag named before, if any.
    clean_id: String,
    previous: Option<(String, String)>,
}

/// What one kill found.
#[derive(Debug)]
struct Trial {
    point: Point,
    found: Found,
    killed: bool,
}

impl Phase<'_> {
    /// Kills the copy at `point` in a fresh repository `repo`; checks fsck, the tag, and that
    /// a rerun gives the undisturbed result.
    fn kill_at(&self, point: Point, repo: &Path) -> Trial {
        if let Some(from) = self.from {
            copy_repo(from, repo);
        }
        let names = self.images.names(self.version);
        let budget = match point {
            Point::Bytes(n) => n,
            _ => u64::MAX,
        };
        let held = FlakyForwarder::start_held(self.images.upstream(), budget).unwrap();
        let mut copy = WatchedCopy::spawn(Images::copy_from_registry(
            &held.host(),
            self.version,
            repo,
            "app",
            self.jobs,
        ))
        .unwrap();
        let reached = match point {
            Point::Bytes(n) => copy.wait_until(|| held.relayed() >= n),
            Point::LayerDone(n) => copy.wait_for_event(|_, seen| {
                seen.iter().filter(|e| e["event"] == "layer-done").count() == n
            }),
            Point::ConfigNamed => {
                let path = names.config_path(repo);
                copy.wait_until(|| path.symlink_metadata().is_ok())
            }
            Point::ManifestNamed => {
                let path = names.manifest_path(repo);
                copy.wait_until(|| path.symlink_metadata().is_ok())
            }
            Point::TagMoved => copy
                .wait_until(|| tag_target(repo, "app").as_deref() == Some(names.manifest.as_str())),
            Point::Published => copy.wait_for_event(|e, _| e["event"] == "published"),
        };
        let ended = copy.kill().unwrap();
        assert!(reached, "{point:?}: the copy ended first: {}", ended.stderr);
        let found = names.found_in(repo, "app");
        assert_fsck_clean(repo);
        // A tag names a whole image: the new one or, during a replacement, the old one.
        match &found.tag {
            Some(m) if *m == names.manifest => assert_eq!(compute_id(repo, "app"), self.clean_id),
            Some(m) => {
                let (manifest, id) = self.previous.as_ref().expect("no image before");
                assert_eq!(m, manifest, "{point:?}: the tag names an unknown image");
                assert_eq!(compute_id(repo, "app"), *id, "{point:?}: the old image");
            }
            None => assert!(self.previous.is_none(), "{point:?}: the old tag vanished"),
        }
        let host = self.images.registry.host();
        let rerun = Images::copy_from_registry(&host, self.version, repo, "app", self.jobs);
        assert_succeeded(&WatchedCopy::spawn(rerun).unwrap().wait().unwrap(), "rerun");
        assert_eq!(compute_id(repo, "app"), self.clean_id, "{point:?}: rerun");
        run(cfsctl(repo).args(["oci", "fsck"])).unwrap();
        std::fs::remove_dir_all(repo).unwrap();
        Trial {
            point,
            found,
            killed: ended.killed,
        }
    }

    /// Kills at each of `points`, each in a fresh repository below `dir`, [`WORKERS`] at a
    /// time.
    fn run(&self, points: &[Point], dir: &Path) -> Vec<Trial> {
        let next = std::sync::atomic::AtomicUsize::new(0);
        let mut trials: Vec<(usize, Trial)> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..WORKERS)
                .map(|_| {
                    s.spawn(|| {
                        let mut done = Vec::new();
                        loop {
                            let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            let Some(point) = points.get(i) else {
                                return done;
                            };
                            let repo = dir.join(format!("{}-{i}", self.version));
                            done.push((i, self.kill_at(*point, &repo)));
                        }
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().unwrap())
                .collect()
        });
        trials.sort_by_key(|(i, _)| *i);
        for (_, t) in &trials {
            eprintln!(
                "{} {:?}: {:?}, killed: {}",
                self.version, t.point, t.found, t.killed
            );
        }
        trials.into_iter().map(|(_, t)| t).collect()
    }
}

/// Kills run side by side: most of a trial is waiting for skiff, skopeo and cfsctl.
const WORKERS: usize = 3;

/// Kill points: `n - 1` byte counts evenly spread over `total`, then `then`.
fn points(total: u64, n: u64, then: &[Point]) -> Vec<Point> {
    (1..n)
        .map(|i| Point::Bytes(total * i / n))
        .chain(then.iter().copied())
        .collect()
}

/// 27 kill points. A copy of v1 into an empty repository (4 layers fetched, 2 at a time): 10
/// byte counts at 1/11 … 10/11 of what an undisturbed copy receives (manifest, config, blobs
/// and HTTP), the 1st to 4th `layer-done` events, and 3 publish steps. A copy of v2 onto the
/// tag `app` that holds v1 (the 2 shared layers are stored, 2 are fetched one at a time, so
/// that the first `layer-done` finds exactly one new layer): 4 byte counts at 1/5 … 4/5, both
/// `layer-done` events, and 4 publish steps including the moment the tag moves. The byte
/// points are exact (the forwarder holds the copy there); the other points are events and
/// names appearing in the repository, watched every 200 µs. Each kill is in a fresh
/// repository, so what it finds depends on that point only.
#[test]
fn kill_9_at_27_points_of_a_copy_and_of_a_tag_replacement() {
    let images = Images::new();
    let tmp = scratch_dir().unwrap();
    let with_v1 = tmp.path().join("with-v1");
    let (bytes_v1, id_v1) = undisturbed(&images, "v1", &with_v1, "app");
    let replaced = tmp.path().join("replaced");
    copy_repo(&with_v1, &replaced);
    let (bytes_v2, id_v2) = undisturbed(&images, "v2", &replaced, "app");

    use Point::*;
    let first = Phase {
        images: &images,
        version: "v1",
        from: None,
        jobs: 2,
        clean_id: id_v1.clone(),
        previous: None,
    };
    let then = [
        LayerDone(1),
        LayerDone(2),
        LayerDone(3),
        LayerDone(4),
        ConfigNamed,
        ManifestNamed,
        Published,
    ];
    let copy = first.run(&points(bytes_v1, 11, &then), tmp.path());
    let replacement = Phase {
        images: &images,
        version: "v2",
        from: Some(&with_v1),
        jobs: 1,
        clean_id: id_v2,
        previous: Some((images.v1.manifest.clone(), id_v1)),
    };
    let then = [
        LayerDone(1),
        LayerDone(2),
        ConfigNamed,
        ManifestNamed,
        TagMoved,
        Published,
    ];
    let replace = replacement.run(&points(bytes_v2, 5, &then), tmp.path());
    assert_eq!(copy.len() + replace.len(), 27);

    // The points were spread: kills found nothing stored, some layers, every layer without
    // a tag, and the tag; during the replacement, the old image tagged with none, some or
    // all new layers stored, and the new one tagged. Each count is one a point guarantees
    // (the first byte point, the `layer-done` events, `published`, the tag moving).
    let count = |trials: &[Trial], f: &dyn Fn(&Found) -> bool| {
        trials.iter().filter(|t| f(&t.found)).count()
    };
    let new_tag = |f: &Found, v: &ImageNames| f.tag.as_deref() == Some(v.manifest.as_str());
    let old_tag = |f: &Found| new_tag(f, &images.v1);
    assert!(count(&copy, &|f| f.layers == 0) >= 1);
    assert!(count(&copy, &|f| f.layers > 0 && f.layers < 4) >= 1);
    assert!(count(&copy, &|f| f.layers == 4 && f.tag.is_none()) >= 1);
    assert!(count(&copy, &|f| new_tag(f, &images.v1)) >= 1);
    assert!(count(&replace, &|f| f.layers == 2 && old_tag(f)) >= 1);
    assert!(count(&replace, &|f| f.layers == 3 && old_tag(f)) >= 1);
    assert!(count(&replace, &|f| f.layers == 4 && old_tag(f)) >= 1);
    assert!(count(&replace, &|f| new_tag(f, &images.v2)) >= 2);
    // Kills at byte counts and `layer-done` events came while the copy ran (after the
    // last step of the publish, the copy may have ended before the kill).
    for t in copy.iter().chain(&replace) {
        assert!(
            t.killed || !matches!(t.point, Bytes(_) | LayerDone(_)),
            "{t:?}"
        );
    }
}

/// Two copies into one repository at once, 10 rounds, each into a new repository that the two
/// copies create (so that both find nothing stored and import the shared layers, and the
/// creation is raced too). Copies take the repository's shared lock: both must succeed. In
/// even rounds both copies come from the registry, each through a forwarder that holds it at a
/// quarter of its bytes (it has planned; its first two layers, the largest, are in flight), and
/// then both go on at once: both import the shared layers side by side, every time. In odd
/// rounds they start together from the OCI layout and run free.
#[test]
fn two_copies_of_images_sharing_layers_into_one_repository_at_once() {
    let images = Images::new();
    let tmp = scratch_dir().unwrap();
    let (bytes, id_v1) = undisturbed(&images, "v1", &tmp.path().join("solo-v1"), "v1");
    let (_, id_v2) = undisturbed(&images, "v2", &tmp.path().join("solo-v2"), "v2");
    let mut both_imported = 0;
    for round in 0..10 {
        let repo = tmp.path().join(format!("round-{round}"));
        let held = round % 2 == 0;
        let gates = [(); 2].map(|()| FlakyForwarder::start_held(images.upstream(), bytes / 4));
        let gates = gates.map(Result::unwrap);
        let start = |version, gate: &FlakyForwarder| {
            let cmd = if held {
                Images::copy_from_registry(&gate.host(), version, &repo, version, 2)
            } else {
                images.copy_from_layout(version, &repo, version)
            };
            WatchedCopy::spawn(cmd).unwrap()
        };
        let (mut a, mut b) = (start("v1", &gates[0]), start("v2", &gates[1]));
        if held {
            assert!(a.wait_until(|| gates[0].relayed() >= bytes / 4));
            assert!(b.wait_until(|| gates[1].relayed() >= bytes / 4));
            gates.iter().for_each(FlakyForwarder::release);
        }
        let (a, b) = (a.wait().unwrap(), b.wait().unwrap());
        assert_succeeded(&a, &format!("round {round}: v1"));
        assert_succeeded(&b, &format!("round {round}: v2"));
        assert_fsck_clean(&repo);
        assert_eq!(compute_id(&repo, "v1"), id_v1, "round {round}");
        assert_eq!(compute_id(&repo, "v2"), id_v2, "round {round}");
        let skipped = |e: &Ended| e.summary().unwrap()["layers_skipped"].as_u64().unwrap();
        let raced = skipped(&a) == 0 && skipped(&b) == 0;
        eprintln!("round {round} (held: {held}): both imported the shared layers: {raced}");
        assert!(
            raced || !held,
            "round {round}: the held copies imported side by side"
        );
        both_imported += usize::from(raced);
        std::fs::remove_dir_all(&repo).unwrap();
    }
    eprintln!("both copies imported the shared layers in {both_imported} of 10 rounds");
}

/// When, in a round of the gc race, `skiff rm` + `skiff gc` start against the running copy.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Race {
    /// With the copy's start: the gc may run before the copy opens the store.
    AtStart,
    /// Just after the gc took the exclusive lock (seen in /proc/locks), or ended: the copy
    /// opens the store after the gc, and fetches the layers the gc removed.
    GcFirst,
    /// At the copy's `resolved` event: it holds the store, and plans next.
    AtResolved,
    /// While the copy, having skipped the shared layers, is held mid-fetch: the gc must wait
    /// for the copy's lock (seen in /proc/locks) until the copy is let go and finishes.
    WhileHeld,
}

/// A repository holding v1 as `v1`, and what a copy of v2 into it receives and gives.
struct GcRace {
    images: Images,
    with_v1: PathBuf,
    bytes_v2: u64,
    id_v2: String,
}

impl GcRace {
    /// One round in a copy of `with_v1`: the copy of v2 as `v2`, and `skiff rm` of v1 then
    /// `skiff gc`, started as `race` says. Returns the layers the copy found stored.
    fn round(&self, round: usize, race: Race, repo: &Path) -> u64 {
        copy_repo(&self.with_v1, repo);
        let budget = if race == Race::WhileHeld {
            self.bytes_v2 / 2
        } else {
            u64::MAX
        };
        let gate = FlakyForwarder::start_held(self.images.upstream(), budget).unwrap();
        let start_copy = || {
            WatchedCopy::spawn(Images::copy_from_registry(
                &gate.host(),
                "v2",
                repo,
                "v2",
                2,
            ))
        };
        let start_gc = || {
            run(skiff().args(["rm", &format!("composefs:{}:v1", repo.display())])).unwrap();
            skiff().arg("gc").arg(repo).stdout(Stdio::piped()).spawn()
        };
        let (mut copy, mut gc) = if race == Race::GcFirst {
            let mut gc = start_gc().unwrap();
            while !holds_exclusive_flock(gc.id()) && gc.try_wait().unwrap().is_none() {
                std::thread::sleep(Duration::from_micros(200));
            }
            (start_copy().unwrap(), gc)
        } else {
            let mut copy = start_copy().unwrap();
            match race {
                Race::AtResolved => assert!(copy.wait_for_event(|e, _| e["event"] == "resolved")),
                Race::WhileHeld => assert!(copy.wait_until(|| gate.relayed() >= budget)),
                _ => {}
            }
            (copy, start_gc().unwrap())
        };
        if race == Race::WhileHeld {
            let pid = gc.id();
            assert!(copy.wait_until(|| waits_for_flock(pid) || gc.try_wait().unwrap().is_some()));
            assert!(
                waits_for_flock(pid),
                "round {round}: the gc waits for the copy"
            );
            gate.release();
        }
        let ended = copy.wait().unwrap();
        let gc = gc.wait_with_output().unwrap();
        assert_succeeded(&ended, &format!("round {round}: the copy"));
        assert!(gc.status.success(), "round {round}: gc");
        assert_eq!(tag_target(repo, "v1"), None);
        assert_fsck_clean(repo);
        assert_eq!(compute_id(repo, "v2"), self.id_v2, "round {round}");
        // The gc ran, after the rm: v1's own layers are gone, the shared ones kept by v2.
        assert_eq!(
            self.images.v1.found_in(repo, "v1").layers,
            2,
            "round {round}"
        );
        let skipped = ended.summary().unwrap()["layers_skipped"].as_u64().unwrap();
        eprintln!(
            "round {round} ({race:?}): the copy found {skipped} layers stored; {}",
            String::from_utf8_lossy(&gc.stdout).trim()
        );
        std::fs::remove_dir_all(repo).unwrap();
        skipped
    }
}

/// A copy of v2 racing `skiff rm` of v1 (which shares two layers with v2) and `skiff gc`, 10
/// rounds, each in a fresh copy of one repository holding v1. A gc waits for running copies
/// (its exclusive lock against their shared one); a copy that opens the store during a gc
/// waits for it and then fetches what the gc removed. Either way the copy succeeds, v2 is
/// whole, and v1's own layers are collected.
#[test]
fn a_copy_racing_rm_and_gc_of_an_image_sharing_its_layers() {
    let images = Images::new();
    let tmp = scratch_dir().unwrap();
    let with_v1 = tmp.path().join("with-v1");
    undisturbed(&images, "v1", &with_v1, "v1");
    let probe = tmp.path().join("probe");
    copy_repo(&with_v1, &probe);
    // What a copy of v2 receives when the shared layers are stored.
    let (bytes_v2, id_v2) = undisturbed(&images, "v2", &probe, "v2");
    let trial = GcRace {
        images,
        with_v1,
        bytes_v2,
        id_v2,
    };
    let races = [Race::AtStart; 3]
        .into_iter()
        .chain([Race::GcFirst; 2])
        .chain([Race::AtResolved; 2])
        .chain([Race::WhileHeld; 3]);
    let mut copy_first = 0;
    for (round, race) in races.enumerate() {
        let skipped = trial.round(round, race, &tmp.path().join(format!("round-{round}")));
        match race {
            Race::AtStart => {}
            Race::GcFirst => assert_eq!(skipped, 0, "round {round}: the gc came first"),
            _ => assert_eq!(skipped, 2, "round {round}: the copy came first"),
        }
        copy_first += usize::from(skipped == 2);
    }
    eprintln!("the copy found the shared layers stored (it came first) in {copy_first} of 10");
}
