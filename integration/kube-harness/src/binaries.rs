//! Where the control plane's programs are.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Environment variable naming the directory with kube-apiserver,
/// kube-controller-manager and (optionally) kubectl.
pub const BIN_DIR_ENV: &str = "WEFT_KUBE_BIN_DIR";
/// Environment variable naming the etcd binary (default: `etcd` on `PATH`).
pub const ETCD_ENV: &str = "WEFT_ETCD";

/// The programs a control plane runs, found once per start.
#[derive(Clone, Debug)]
pub struct Binaries {
    /// kube-apiserver built by `integration/k8s/install.sh`.
    pub kube_apiserver: PathBuf,
    /// kube-controller-manager built by the same script.
    pub kube_controller_manager: PathBuf,
    /// etcd (Debian's `etcd-server`).
    pub etcd: PathBuf,
    /// kubectl: the version-matched one next to the server binaries, else
    /// the first on `PATH`; `None` when there is none.
    pub kubectl: Option<PathBuf>,
}

/// The programs of a real node: the Kubernetes ones from
/// `integration/k8s/install.sh`, the runtime from Debian's packages.
#[derive(Clone, Debug)]
pub struct NodeBinaries {
    /// kubelet.
    pub kubelet: PathBuf,
    /// kube-proxy (iptables mode).
    pub kube_proxy: PathBuf,
    /// kube-scheduler.
    pub kube_scheduler: PathBuf,
    /// containerd (Debian's `containerd`, with its CRI plugin).
    pub containerd: PathBuf,
    /// containerd's `ctr` (image import, clean-up).
    pub ctr: PathBuf,
    /// runc (Debian's `runc`).
    pub runc: PathBuf,
}

impl Binaries {
    /// Finds the binaries: `$WEFT_KUBE_BIN_DIR`, else the install script's
    /// cache (`${WEFT_CACHE_DIR:-$HOME/.cache/weft}/k8s/current/bin`); etcd
    /// from `$WEFT_ETCD` or `PATH`. A missing binary is an error that says how
    /// to get it.
    pub fn locate() -> Result<Self> {
        let kube_apiserver = in_bin_dir("kube-apiserver")?;
        let kube_controller_manager = in_bin_dir("kube-controller-manager")?;
        let etcd = match std::env::var_os(ETCD_ENV) {
            Some(p) => Some(PathBuf::from(p)).filter(|p| is_executable(p)),
            None => on_path("etcd"),
        }
        .ok_or_else(|| Error::MissingBinary {
            binary: "etcd",
            looked_in: format!("${ETCD_ENV}, PATH"),
            env: ETCD_ENV,
        })?;
        let kubectl = in_bin_dir("kubectl").ok().or_else(|| on_path("kubectl"));
        Ok(Self {
            kube_apiserver,
            kube_controller_manager,
            etcd,
            kubectl,
        })
    }
}

impl NodeBinaries {
    /// Finds the node's programs: the Kubernetes ones where
    /// [`Binaries::locate`] looks, containerd, ctr and runc on `PATH`. A
    /// missing one is an error that says which package or script brings it.
    pub fn locate() -> Result<Self> {
        let system = |name: &'static str, package: &'static str| -> Result<PathBuf> {
            on_path(name)
                .or_else(|| {
                    ["/usr/sbin", "/usr/bin", "/sbin"]
                        .iter()
                        .map(|d| Path::new(d).join(name))
                        .find(|p| is_executable(p))
                })
                .ok_or(Error::MissingBinary {
                    binary: name,
                    looked_in: format!("PATH (Debian package `{package}`)"),
                    env: "PATH",
                })
        };
        Ok(Self {
            kubelet: in_bin_dir("kubelet")?,
            kube_proxy: in_bin_dir("kube-proxy")?,
            kube_scheduler: in_bin_dir("kube-scheduler")?,
            containerd: system("containerd", "containerd")?,
            ctr: system("ctr", "containerd")?,
            runc: system("runc", "runc")?,
        })
    }
}

/// `name` in the install script's binary directory, or an error saying
/// where the harness looked.
fn in_bin_dir(name: &'static str) -> Result<PathBuf> {
    let dir = bin_dir();
    dir.as_ref()
        .map(|d| d.join(name))
        .filter(|p| is_executable(p))
        .ok_or_else(|| Error::MissingBinary {
            binary: name,
            looked_in: dir
                .as_ref()
                .map(|d| d.display().to_string())
                .unwrap_or_else(|| format!("${BIN_DIR_ENV} unset and no $HOME")),
            env: BIN_DIR_ENV,
        })
}

fn bin_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os(BIN_DIR_ENV).filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d));
    }
    let cache = std::env::var_os("WEFT_CACHE_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/weft")))?;
    Some(cache.join("k8s/current/bin"))
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
