//! The operator image without docker (scripts/image.sh): the same cargo command as the
//! Dockerfile, the same contents (the static binary, CA certificates, uid 65532, nothing else),
//! and it runs under containerd with a read-only root filesystem. The containerd is private to the
//! test (its own root, state and socket in a temporary directory) and leaves nothing behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const REPOSITORY: &str = "ghcr.io/lineworks-operator/lineworks-operator";
/// The test's container ID and cgroup (removed at the end).
const CGROUP: &str = "lineworks-image-test";

/// The `cargo build …` command of a file, up to the end of the command.
fn cargo_command(text: &str) -> String {
    let start = text.find("cargo build").expect("a cargo build command");
    let rest = &text[start..];
    let end = rest.find(['\\', '&', '>', '\n']).unwrap_or(rest.len());
    rest[..end].split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn the_dockerfile_and_the_image_script_build_the_binary_the_same_way() {
    let dockerfile =
        std::fs::read_to_string(Path::new(ROOT).join("Dockerfile")).expect("Dockerfile");
    let script =
        std::fs::read_to_string(Path::new(ROOT).join("scripts/image.sh")).expect("image.sh");
    let docker = cargo_command(&dockerfile);
    assert_eq!(docker, cargo_command(&script));
    assert!(
        docker.contains("--target x86_64-unknown-linux-musl"),
        "{docker}"
    );
    assert!(docker.contains("--no-default-features"), "{docker}");
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.stderr(Stdio::inherit()).output().expect("runs");
    assert!(out.status.success(), "{cmd:?} failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A blob of the OCI layout by digest.
fn blob(layout: &Path, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    std::fs::read(layout.join("blobs/sha256").join(hex)).expect("blob")
}

/// A containerd of the test's own, stopped (and its mounts checked gone) on drop.
struct Containerd {
    dir: tempfile::TempDir,
    child: std::process::Child,
}

impl Containerd {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("dir");
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{0}/root\"\nstate = \"{0}/state\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = \"{0}/containerd.sock\"\n\
                 [ttrpc]\n  address = \"{0}/containerd.sock.ttrpc\"\n",
                dir.path().display()
            ),
        )
        .expect("config");
        let log = std::fs::File::create(dir.path().join("containerd.log")).expect("log");
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("containerd starts (scripts/node-deps.sh installs it)");
        let c = Self { dir, child };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !c
            .ctr()
            .args(["version"])
            .output()
            .is_ok_and(|o| o.status.success())
        {
            assert!(
                Instant::now() < deadline,
                "containerd did not answer: {}",
                c.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        c
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    fn ctr(&self) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address")
            .arg(self.socket())
            .args(["-n", "k8s.io"]);
        cmd
    }

    /// Imports an OCI archive as `base:<its tag>` (namespace k8s.io).
    fn import(&self, base: &str, archive: &Path) {
        run(self
            .ctr()
            .args(["images", "import", "--base-name", base])
            .arg(archive)
            .stdout(Stdio::null()));
    }

    /// Runs `command` in a container of `image` with a read-only root filesystem, in the test's
    /// cgroup, removed afterwards; returns its output.
    fn run_once(&self, image: &str, command: &[&str]) -> String {
        run(self
            .ctr()
            .args([
                "run",
                "--rm",
                "--read-only",
                "--cgroup",
                CGROUP,
                image,
                CGROUP,
            ])
            .args(command)
            .stdout(Stdio::piped()))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Mount points under `dir` (none may outlive the test).
fn mounts_under(dir: &Path) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4).map(str::to_string))
        .filter(|m| m.starts_with(&*dir.to_string_lossy()))
        .collect()
}

fn build(name: &str) -> PathBuf {
    lineworks_operator::demo::cluster::repo_script(name).expect("script runs")
}

#[test]
fn the_image_built_without_docker_holds_the_binary_alone_and_runs_under_containerd() {
    let archive = build("image.sh");
    let version = env!("CARGO_PKG_VERSION");

    // What the image is: one layer with exactly the Dockerfile's contents, run as 65532.
    let layout = tempfile::tempdir().expect("dir");
    run(Command::new("tar")
        .arg("-xf")
        .arg(&archive)
        .arg("-C")
        .arg(layout.path()));
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.path().join("index.json")).expect("index"))
            .expect("index.json");
    let entry = &index["manifests"][0];
    assert_eq!(
        entry["annotations"]["org.opencontainers.image.ref.name"],
        version
    );
    let manifest: Value = serde_json::from_slice(&blob(
        layout.path(),
        entry["digest"].as_str().expect("digest"),
    ))
    .expect("manifest");
    let config: Value = serde_json::from_slice(&blob(
        layout.path(),
        manifest["config"]["digest"].as_str().expect("config"),
    ))
    .expect("config");
    assert_eq!(config["config"]["User"], "65532:65532");
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/usr/local/bin/lineworks-operator"])
    );
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["controller"]));
    let layers = manifest["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 1, "one layer");
    let layer = layout.path().join("layer.tar.gz");
    std::fs::write(
        &layer,
        blob(layout.path(), layers[0]["digest"].as_str().expect("digest")),
    )
    .expect("layer");
    let listing = run(Command::new("tar")
        .arg("-tzf")
        .arg(&layer)
        .stdout(Stdio::piped()));
    let mut files: Vec<&str> = listing
        .lines()
        .map(|l| l.trim_start_matches("./"))
        .filter(|l| !l.is_empty() && *l != "." && !l.ends_with('/'))
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "etc/group",
            "etc/passwd",
            "etc/ssl/certs/ca-certificates.crt",
            "usr/local/bin/lineworks-operator"
        ],
        "the binary, CA certificates and the user; no shell, no package manager"
    );

    // It runs under containerd, as 65532, on a read-only root filesystem.
    let containerd = Containerd::start();
    containerd.import(REPOSITORY, &archive);
    let image = format!("{REPOSITORY}:{version}");
    let images = run(containerd
        .ctr()
        .args(["images", "ls", "-q"])
        .stdout(Stdio::piped()));
    assert!(images.lines().any(|l| l == image), "{images}");
    let crd = containerd.run_once(&image, &["/usr/local/bin/lineworks-operator", "crd"]);
    assert!(
        crd.contains("kind: CustomResourceDefinition"),
        "the static binary ran: {crd}\n{}",
        containerd.log()
    );
    // The pod sandbox image, from Kubernetes' own pause.c: a node needs no registry for it.
    let pause = build("pause-image.sh");
    containerd.import("localhost/lineworks-operator/pause", &pause);
    let tag = pause
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("pause-"))
        .and_then(|n| n.strip_suffix(".oci.tar"))
        .expect("pause-<tag>.oci.tar")
        .to_string();
    let said = containerd.run_once(
        &format!("localhost/lineworks-operator/pause:{tag}"),
        &["/pause", "-v"],
    );
    assert!(said.contains(&format!("v{tag}-lineworks")), "{said}");

    let root = containerd.dir.path().to_path_buf();
    drop(containerd);
    let left: Vec<String> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|p| std::fs::read(p.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&*root.to_string_lossy()) || c.contains(CGROUP))
        .collect();
    assert!(left.is_empty(), "processes left behind: {left:?}");
    for hierarchy in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        let _ = std::fs::remove_dir(hierarchy.path().join(CGROUP));
    }
    assert_eq!(
        mounts_under(&root),
        Vec::<String>::new(),
        "mounts left behind"
    );
}
