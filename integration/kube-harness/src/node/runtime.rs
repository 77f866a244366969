//! The node's container runtime: Debian's containerd (CRI plugin) with runc,
//! every path of it under the node's directory, and the clean-up that
//! leaves no container, shim, mount or cgroup behind.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::binaries::NodeBinaries;
use crate::error::{io_err, Error, Result};
use crate::node::network::{self, POD_CIDR, POD_GATEWAY};
use crate::process::Managed;

/// The containerd namespace the CRI plugin uses.
pub(crate) const K8S_NAMESPACE: &str = "k8s.io";
/// The sandbox ("pause") image every pod starts with; built by
/// `install/image.sh`.
pub(crate) const SANDBOX_IMAGE: &str = "localhost/weft/pause:0.1.0";
/// Parent cgroup of every container: containerd's CRI default when the
/// kubelet gives no pod cgroup (`--cgroups-per-qos=false`).
pub(crate) const CGROUP_PARENT: &str = "k8s.io";

/// Where containerd keeps things, under the node's directory.
#[derive(Clone, Debug)]
pub(crate) struct RuntimeDirs {
    pub(crate) config: PathBuf,
    pub(crate) root: PathBuf,
    pub(crate) state: PathBuf,
    pub(crate) socket: PathBuf,
    pub(crate) runc_root: PathBuf,
    pub(crate) cni_conf: PathBuf,
    pub(crate) cni_ipam: PathBuf,
}

impl RuntimeDirs {
    pub(crate) fn under(dir: &Path) -> Self {
        Self {
            config: dir.join("containerd.toml"),
            root: dir.join("containerd/root"),
            state: dir.join("containerd/state"),
            socket: dir.join("containerd/containerd.sock"),
            runc_root: dir.join("runc"),
            cni_conf: dir.join("cni/net.d"),
            cni_ipam: dir.join("cni/ipam"),
        }
    }
}

/// Writes containerd's and CNI's configuration.
pub(crate) fn write_config(dirs: &RuntimeDirs) -> Result<()> {
    for d in [&dirs.root, &dirs.state, &dirs.cni_conf, &dirs.cni_ipam] {
        std::fs::create_dir_all(d).map_err(io_err(d))?;
    }
    let p = |p: &Path| p.display().to_string();
    // restrict_oom_score_adj: these VMs refuse a negative oom_score_adj, and
    // without it every sandbox fails in runc ("can't get final child's PID
    // from pipe: EOF").
    let config = format!(
        r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.internal.v1.opt", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[metrics]
  address = ""

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox}"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_selinux = false
  max_container_log_line_size = 16384

[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
  SystemdCgroup = false
  Root = "{runc_root}"

[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = "{cni_conf}"
"#,
        root = p(&dirs.root),
        state = p(&dirs.state),
        socket = p(&dirs.socket),
        sandbox = SANDBOX_IMAGE,
        runc_root = p(&dirs.runc_root),
        cni_conf = p(&dirs.cni_conf),
    );
    std::fs::write(&dirs.config, config).map_err(io_err(&dirs.config))?;
    let cni = serde_json::json!({
        "cniVersion": "0.4.0",
        "name": "weft-node",
        "plugins": [{
            "type": "bridge",
            "bridge": network::BRIDGE,
            "isGateway": true,
            "ipMasq": false,
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{ "subnet": POD_CIDR, "gateway": POD_GATEWAY }]],
                "routes": [{ "dst": "0.0.0.0/0" }],
                "dataDir": p(&dirs.cni_ipam),
            },
        }],
    });
    let conflist = dirs.cni_conf.join("10-weft-node.conflist");
    std::fs::write(&conflist, serde_json::to_vec_pretty(&cni)?).map_err(io_err(&conflist))?;
    Ok(())
}

/// Starts containerd in the node's network namespace and waits for its API.
pub(crate) async fn start(
    bins: &NodeBinaries,
    dirs: &RuntimeDirs,
    log: PathBuf,
    deadline: Instant,
) -> Result<Managed> {
    let containerd = Managed::spawn_in_netns(
        "containerd",
        &bins.containerd,
        &[
            "--config".to_owned(),
            dirs.config.display().to_string(),
            "--log-level".to_owned(),
            "info".to_owned(),
        ],
        log,
    )?;
    loop {
        if let Some(status) = containerd.exited() {
            return Err(containerd.not_ready(format!("exited with {status}")));
        }
        if dirs.socket.exists() && ctr(bins, dirs, &["version"]).is_ok() {
            return Ok(containerd);
        }
        if Instant::now() >= deadline {
            return Err(containerd.not_ready("its API did not answer in time"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Imports docker-archive image tarballs into the CRI namespace.
pub(crate) fn import_images(
    bins: &NodeBinaries,
    dirs: &RuntimeDirs,
    tars: &[PathBuf],
) -> Result<()> {
    for tar in tars {
        let path = tar.display().to_string();
        ctr(
            bins,
            dirs,
            &["images", "import", "--no-unpack=false", &path],
        )
        .map_err(|e| Error::Node(format!("importing {path}: {e}")))?;
    }
    Ok(())
}

/// Runs `ctr` against the node's containerd, in the CRI namespace.
pub(crate) fn ctr(bins: &NodeBinaries, dirs: &RuntimeDirs, args: &[&str]) -> Result<String> {
    let socket = dirs.socket.display().to_string();
    let out = Command::new(&bins.ctr)
        .args([
            "--address",
            &socket,
            "--namespace",
            K8S_NAMESPACE,
            "--timeout",
            "60s",
        ])
        .args(args)
        .output()
        .map_err(io_err(&bins.ctr))?;
    if !out.status.success() {
        return Err(Error::Node(format!(
            "ctr {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

// === clean-up ===

/// Kills every container of the node and the shims that ran them, and
/// removes the containers' cgroups. Works from the on-disk state only (runc's
/// state under the node's directory), so it also cleans up after a killed
/// harness.
pub(crate) fn kill_containers(runc: &Path, dirs: &RuntimeDirs) {
    let runc_ns_root = dirs.runc_root.join(K8S_NAMESPACE);
    let ids: Vec<String> = std::fs::read_dir(&runc_ns_root)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    // Everything in the containers' cgroups, whether runc still runs it or
    // not.
    for id in &ids {
        for dir in container_cgroups(id) {
            kill_cgroup_members(&dir);
        }
    }
    if runc_ns_root.is_dir() {
        let root = runc_ns_root.display().to_string();
        for id in &ids {
            let _ = Command::new(runc)
                .args(["--root", &root, "delete", "--force", id])
                .output();
        }
    }
    // The shims were started by our containerd with our socket's address.
    let needle = dirs.socket.display().to_string();
    for pid in pids_whose_cmdline_contains(&needle) {
        kill(pid);
    }
    for id in &ids {
        for dir in container_cgroups(id) {
            remove_dir_tree(&dir);
        }
    }
}

/// Removes the containers' parent cgroups once they are empty (another CRI
/// runtime on the machine may still use them: then they stay).
pub(crate) fn remove_cgroups() {
    for dir in cgroup_parents() {
        let _ = std::fs::remove_dir(dir);
    }
}

/// What is left of the node's containers: containers' cgroups and shims.
pub(crate) fn leftovers(dirs: &RuntimeDirs) -> Vec<String> {
    let mut found: Vec<String> = cgroup_parents()
        .into_iter()
        .flat_map(|parent| {
            std::fs::read_dir(parent)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
        })
        .map(|d| format!("cgroup {}", d.display()))
        .collect();
    let needle = dirs.socket.display().to_string();
    found.extend(
        pids_whose_cmdline_contains(&needle)
            .into_iter()
            .map(|p| format!("process {p} (a shim of the node's containerd)")),
    );
    found
}

/// Where runc puts containers with the cgroupfs driver and no pod cgroup
/// parent (`--cgroups-per-qos=false`): `/<CGROUP_PARENT>` in every
/// controller's hierarchy (cgroup v1), or in the unified one (v2).
fn cgroup_parents() -> Vec<PathBuf> {
    let base = Path::new("/sys/fs/cgroup");
    if base.join("cgroup.controllers").exists() {
        return vec![base.join(CGROUP_PARENT)];
    }
    std::fs::read_dir(base)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir() && !p.is_symlink())
                .map(|p| p.join(CGROUP_PARENT))
                .collect()
        })
        .unwrap_or_default()
}

fn container_cgroups(id: &str) -> Vec<PathBuf> {
    cgroup_parents()
        .into_iter()
        .map(|p| p.join(id))
        .filter(|p| p.is_dir())
        .collect()
}

fn kill_cgroup_members(cgroup: &Path) {
    for dir in walk_dirs(cgroup) {
        if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                kill(pid);
            }
        }
    }
}

/// `dir` and every directory below it, deepest first.
fn walk_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                out.extend(walk_dirs(&p));
            }
        }
    }
    if dir.is_dir() {
        out.push(dir.to_owned());
    }
    out
}

/// cgroup directories are removed with rmdir, children first; a cgroup
/// whose processes are still exiting is retried for a moment.
fn remove_dir_tree(dir: &Path) {
    for d in walk_dirs(dir) {
        for _ in 0..50 {
            match std::fs::remove_dir(&d) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

fn pids_whose_cmdline_contains(needle: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                String::from_utf8_lossy(&c)
                    .split('\0')
                    .any(|arg| arg.contains(needle))
            })
        })
        .collect()
}

fn kill(pid: i32) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
}

/// Unmounts everything mounted under `dir` (overlay root filesystems,
/// volumes, pod network namespaces), deepest first.
pub(crate) fn unmount_under(dir: &Path) {
    for _ in 0..3 {
        let mut mounts = mounts_under(dir);
        if mounts.is_empty() {
            return;
        }
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = rustix::mount::unmount(m.as_str(), rustix::mount::UnmountFlags::DETACH);
        }
    }
}

/// Mount points under `dir`, from /proc/self/mountinfo.
pub(crate) fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = dir.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|info| {
            info.lines()
                .filter_map(|l| l.split(' ').nth(4))
                .map(unescape_mount_path)
                .filter(|m| m == &prefix || m.starts_with(&format!("{prefix}/")))
                .collect()
        })
        .unwrap_or_default()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mount_path(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)))
            .and_then(|d| std::str::from_utf8(d).ok());
        if bytes[i] == b'\\' {
            if let Some(v) = octal.and_then(|d| u8::from_str_radix(d, 8).ok()) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_paths_are_unescaped() {
        assert_eq!(unescape_mount_path(r"/a\040b"), "/a b");
        assert_eq!(unescape_mount_path("/plain/path"), "/plain/path");
        assert_eq!(unescape_mount_path(r"/trailing\04"), r"/trailing\04");
    }
}
