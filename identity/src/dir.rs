//! The identity directory: where the CA material lives, with fixed names.
//!
//! ```text
//! DIR/ca.crt      trust anchor certificate(s), PEM      (0644; given to every proxy)
//! DIR/ca.key      trust anchor key, PEM                 (0600; only to mint issuers; may be kept offline)
//! DIR/issuer.crt  issuer CA certificate, PEM, signed by the anchor (0644)
//! DIR/issuer.key  issuer key, PEM                       (0600; the controller signs with it)
//! DIR/token.key   file-mode token secret, base64       (0600; file mode only)
//! ```

use crate::ca::{self, CaPem, Issuer};
use crate::token::TokenKey;
use crate::Error;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// File name of the trust anchor certificate(s).
pub const CA_CRT: &str = "ca.crt";
/// File name of the trust anchor key.
pub const CA_KEY: &str = "ca.key";
/// File name of the issuer certificate.
pub const ISSUER_CRT: &str = "issuer.crt";
/// File name of the issuer key.
pub const ISSUER_KEY: &str = "issuer.key";
/// File name of the file-mode token secret.
pub const TOKEN_KEY: &str = "token.key";

/// Mode of key files.
const KEY_MODE: u32 = 0o600;
/// Mode of certificate files.
const CERT_MODE: u32 = 0o644;

/// A directory laid out as described in the module docs.
#[derive(Clone, Debug)]
pub struct IdentityDir {
    root: PathBuf,
}

impl IdentityDir {
    /// The identity directory at `path` (nothing is read yet).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { root: path.into() }
    }

    /// The directory itself.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// `DIR/ca.crt`.
    pub fn ca_crt(&self) -> PathBuf {
        self.root.join(CA_CRT)
    }

    /// `DIR/ca.key`.
    pub fn ca_key(&self) -> PathBuf {
        self.root.join(CA_KEY)
    }

    /// `DIR/issuer.crt`.
    pub fn issuer_crt(&self) -> PathBuf {
        self.root.join(ISSUER_CRT)
    }

    /// `DIR/issuer.key`.
    pub fn issuer_key(&self) -> PathBuf {
        self.root.join(ISSUER_KEY)
    }

    /// `DIR/token.key`.
    pub fn token_key(&self) -> PathBuf {
        self.root.join(TOKEN_KEY)
    }

    /// Reads `ca.crt` and checks it holds at least one certificate.
    pub fn read_trust_anchors_pem(&self) -> Result<String, Error> {
        let path = self.ca_crt();
        let pem = read(&path)?;
        ca::parse_pem_certs(&pem).map_err(|e| Error::bad_file(&path, e))?;
        Ok(pem)
    }

    /// Loads and checks the issuer (`issuer.crt`, `issuer.key`, verified
    /// against `ca.crt`).
    pub fn load_issuer(&self) -> Result<Issuer, Error> {
        self.load_issuer_from(&self.read_issuer_files()?)
    }

    /// Reads the three files an issuer is made of, so a caller can tell
    /// whether they changed before paying for a reload.
    pub fn read_issuer_files(&self) -> Result<IssuerFiles, Error> {
        Ok(IssuerFiles {
            anchors_pem: read(&self.ca_crt())?,
            cert_pem: read(&self.issuer_crt())?,
            key_pem: read(&self.issuer_key())?,
        })
    }

    /// Builds an issuer from files read by [`read_issuer_files`](Self::read_issuer_files).
    pub fn load_issuer_from(&self, files: &IssuerFiles) -> Result<Issuer, Error> {
        ca::parse_pem_certs(&files.anchors_pem).map_err(|e| Error::bad_file(self.ca_crt(), e))?;
        ca::parse_pem_certs(&files.cert_pem).map_err(|e| Error::bad_file(self.issuer_crt(), e))?;
        Issuer::from_pem(&files.cert_pem, &files.key_pem, &files.anchors_pem).map_err(|e| {
            Error::bad_file(
                &self.root,
                format!("{ISSUER_CRT} + {ISSUER_KEY} against {CA_CRT}: {e}"),
            )
        })
    }

    /// Loads `token.key`.
    pub fn load_token_key(&self) -> Result<TokenKey, Error> {
        TokenKey::load(&self.token_key())
    }
}

/// The raw contents of `ca.crt`, `issuer.crt` and `issuer.key`.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuerFiles {
    /// `ca.crt`.
    pub anchors_pem: String,
    /// `issuer.crt`.
    pub cert_pem: String,
    /// `issuer.key`.
    pub key_pem: String,
}

impl std::fmt::Debug for IssuerFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IssuerFiles(..)")
    }
}

fn read(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(Error::io(path))
}

/// What `weft identity init` should make.
#[derive(Clone, Debug)]
pub struct InitOptions {
    /// Trust domain named in the CA subjects.
    pub trust_domain: String,
    /// Lifetime of a generated trust anchor.
    pub anchor_lifetime: Duration,
    /// Lifetime of the issuer (capped at the anchor's expiry).
    pub issuer_lifetime: Duration,
    /// Overwrite existing files.
    pub force: bool,
    /// Use this existing anchor (certificate PEM, key PEM) instead of
    /// generating one: "bring your own trust anchor".
    pub anchor: Option<(String, String)>,
}

impl Default for InitOptions {
    fn default() -> Self {
        Self {
            trust_domain: crate::DEFAULT_TRUST_DOMAIN.to_owned(),
            anchor_lifetime: ca::DEFAULT_ANCHOR_LIFETIME,
            issuer_lifetime: ca::DEFAULT_ISSUER_LIFETIME,
            force: false,
            anchor: None,
        }
    }
}

/// What `init` wrote.
#[derive(Clone, Debug)]
pub struct InitOutcome {
    /// Files written, in order.
    pub files: Vec<PathBuf>,
    /// The anchor's `notAfter`.
    pub anchor_not_after: SystemTime,
    /// The issuer's `notAfter`.
    pub issuer_not_after: SystemTime,
}

/// Writes a complete identity directory: anchor (generated or given),
/// issuer signed by it, and a token key. Refuses to overwrite any existing
/// file unless `opts.force`. Keys are written 0600, atomically (temporary
/// file + rename) so a running controller never reads half a file.
pub fn init(dir: &Path, opts: &InitOptions) -> Result<InitOutcome, Error> {
    crate::name::check_trust_domain(&opts.trust_domain)?;
    let id = IdentityDir::new(dir);
    let targets = [
        id.ca_crt(),
        id.ca_key(),
        id.issuer_crt(),
        id.issuer_key(),
        id.token_key(),
    ];
    if !opts.force {
        if let Some(existing) = targets.iter().find(|p| p.exists()) {
            return Err(Error::AlreadyExists {
                path: existing.clone(),
            });
        }
    }
    let anchor = match &opts.anchor {
        Some((cert_pem, key_pem)) => {
            let der = ca::parse_pem_certs(cert_pem)?
                .into_iter()
                .next()
                .ok_or(Error::Invalid {
                    what: "trust anchor certificate",
                    reason: "empty".into(),
                })?;
            let info = ca::describe_cert(&der)?;
            if !info.is_ca {
                return Err(Error::Invalid {
                    what: "trust anchor certificate",
                    reason: "not a CA (basicConstraints cA=false)".into(),
                });
            }
            CaPem {
                cert_pem: cert_pem.clone(),
                key_pem: key_pem.clone(),
                not_after: info.not_after,
            }
        }
        None => ca::generate_anchor(&opts.trust_domain, opts.anchor_lifetime)?,
    };
    let issuer = ca::generate_issuer(
        &anchor.cert_pem,
        &anchor.key_pem,
        &opts.trust_domain,
        opts.issuer_lifetime,
    )?;
    let (_, token_text) = TokenKey::generate()?;
    create_dir(dir)?;
    write_atomic(&targets[0], &anchor.cert_pem, CERT_MODE)?;
    write_atomic(&targets[1], &anchor.key_pem, KEY_MODE)?;
    write_atomic(&targets[3], &issuer.key_pem, KEY_MODE)?;
    write_atomic(&targets[2], &issuer.cert_pem, CERT_MODE)?;
    write_atomic(&targets[4], &token_text, KEY_MODE)?;
    Ok(InitOutcome {
        files: targets.to_vec(),
        anchor_not_after: anchor.not_after,
        issuer_not_after: issuer.not_after,
    })
}

/// Mints a new issuer from `ca.crt` + `ca.key` in `dir` and replaces
/// `issuer.crt`/`issuer.key` (atomically each); a running controller picks
/// it up within seconds. Returns the new issuer's `notAfter`.
pub fn rotate_issuer(
    dir: &Path,
    trust_domain: &str,
    lifetime: Duration,
) -> Result<SystemTime, Error> {
    let id = IdentityDir::new(dir);
    let anchor_cert = read(&id.ca_crt())?;
    let anchor_key = read(&id.ca_key())?;
    let issuer = ca::generate_issuer(&anchor_cert, &anchor_key, trust_domain, lifetime)?;
    write_issuer(&id, &issuer)?;
    Ok(issuer.not_after)
}

/// Writes an issuer's key and certificate into `dir` (key first, each
/// atomically). A controller polling in between sees a mismatched pair,
/// logs it and keeps the previous issuer until the pair is consistent.
pub fn write_issuer(dir: &IdentityDir, issuer: &CaPem) -> Result<(), Error> {
    write_atomic(&dir.issuer_key(), &issuer.key_pem, KEY_MODE)?;
    write_atomic(&dir.issuer_crt(), &issuer.cert_pem, CERT_MODE)
}

fn create_dir(dir: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(Error::io(dir))
}

/// Writes `contents` to `path` through a temporary file in the same
/// directory, with `mode`, then renames it into place.
pub(crate) fn write_atomic(path: &Path, contents: &str, mode: u32) -> Result<(), Error> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(contents.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(Error::io(path))
}
