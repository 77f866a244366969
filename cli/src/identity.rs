//! `weft identity`: make the mesh's CA material and file-mode tokens.
//!
//! `init` writes an identity directory (trust anchor, issuer, token key) for
//! `weft-controller --identity-dir`; `token` mints a token a proxy presents
//! when no Kubernetes API is there to vouch for it; `rotate-issuer` replaces
//! the issuer from the anchor kept in the directory. See `docs/identity.md`.

use anyhow::Context;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use weft_identity::{IdentityDir, InitOptions};

/// Flags of `weft identity`.
#[derive(Debug, clap::Args)]
#[command(
    about = "Manage mesh identity: CA material and file-mode tokens",
    long_about = "Manage mesh identity: the trust anchor and issuer the controller signs \
proxy certificates with, and the tokens proxies present in file mode.\n\n\
Typical laptop set-up:\n  \
weft identity init --out ./identity\n  \
weft-controller --identity-dir ./identity --identity-addr 127.0.0.1:8080\n  \
weft identity token --identity-dir ./identity --namespace default --serviceaccount web > web.token\n\n\
Give proxies ./identity/ca.crt as their trust anchors (WEFT_PROXY_TRUST_ANCHORS). See docs/identity.md."
)]
pub struct IdentityArgs {
    #[command(subcommand)]
    command: IdentityCommand,
}

#[derive(Debug, clap::Subcommand)]
enum IdentityCommand {
    /// Create a trust anchor, an issuer signed by it and a token key in DIR.
    #[command(long_about = "Create an identity directory:\n  \
ca.crt      trust anchor certificate (ECDSA P-256, long-lived); give it to every proxy\n  \
ca.key      trust anchor key; only needed to mint new issuers (keep it offline if you can)\n  \
issuer.crt  issuer CA certificate (pathlen 0), signed by the anchor\n  \
issuer.key  issuer key; the controller signs proxy certificates with it\n  \
token.key   secret that signs file-mode tokens\n\n\
Existing files are never overwritten unless --force is given. Key files are mode 0600.")]
    Init(InitArgs),
    /// Mint a file-mode token for a ServiceAccount, signed with DIR/token.key.
    #[command(
        long_about = "Mint a file-mode token for NAMESPACE/SERVICEACCOUNT, signed with \
the identity directory's token.key. A proxy presenting it (WEFT_PROXY_IDENTITY_TOKEN_FILE) gets \
certificates for SERVICEACCOUNT.NAMESPACE.serviceaccount.identity.weft.TRUST_DOMAIN from a \
controller in file mode. Prints the token on stdout, or writes it (mode 0600) with --out."
    )]
    Token(TokenArgs),
    /// Replace issuer.crt/issuer.key with a new issuer signed by DIR/ca.key.
    #[command(
        long_about = "Mint a new issuer from the trust anchor in DIR (ca.crt + ca.key) and \
replace issuer.crt and issuer.key. A running controller picks it up within seconds; certificates \
already issued stay valid because they chain to the same anchor."
    )]
    RotateIssuer(RotateArgs),
}

fn duration(s: &str) -> Result<Duration, String> {
    weft_identity::parse_duration(s).map_err(|e| e.to_string())
}

#[derive(Debug, clap::Args)]
struct InitArgs {
    /// Directory to write (created if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Trust domain named in the CA subjects.
    #[arg(long, default_value = weft_identity::DEFAULT_TRUST_DOMAIN, value_name = "DOMAIN")]
    trust_domain: String,
    /// Lifetime of the generated trust anchor (e.g. 87600h = 10 years).
    #[arg(long, default_value = "87600h", value_parser = duration, value_name = "DURATION")]
    anchor_lifetime: Duration,
    /// Lifetime of the issuer (capped at the anchor's expiry).
    #[arg(long, default_value = "8760h", value_parser = duration, value_name = "DURATION")]
    issuer_lifetime: Duration,
    /// Use this existing trust anchor certificate (PEM) instead of generating one.
    #[arg(long, value_name = "FILE", requires = "anchor_key")]
    anchor_cert: Option<PathBuf>,
    /// Key (PKCS#8 PEM) of --anchor-cert.
    #[arg(long, value_name = "FILE", requires = "anchor_cert")]
    anchor_key: Option<PathBuf>,
    /// Overwrite existing files.
    #[arg(long)]
    force: bool,
}

#[derive(Debug, clap::Args)]
struct TokenArgs {
    /// Namespace of the ServiceAccount.
    #[arg(long, short = 'n', value_name = "NS")]
    namespace: String,
    /// The ServiceAccount the token speaks for.
    #[arg(long, value_name = "SA")]
    serviceaccount: String,
    /// Identity directory holding token.key.
    #[arg(long, value_name = "DIR")]
    identity_dir: PathBuf,
    /// How long the token is valid.
    #[arg(long, default_value = "8760h", value_parser = duration, value_name = "DURATION")]
    ttl: Duration,
    /// Write the token to FILE (mode 0600) instead of stdout.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct RotateArgs {
    /// Identity directory holding ca.crt and ca.key.
    #[arg(long, value_name = "DIR")]
    identity_dir: PathBuf,
    /// Trust domain named in the issuer's subject.
    #[arg(long, default_value = weft_identity::DEFAULT_TRUST_DOMAIN, value_name = "DOMAIN")]
    trust_domain: String,
    /// Lifetime of the new issuer (capped at the anchor's expiry).
    #[arg(long, default_value = "8760h", value_parser = duration, value_name = "DURATION")]
    issuer_lifetime: Duration,
}

/// Runs `weft identity ...`.
pub fn run(args: IdentityArgs) -> anyhow::Result<()> {
    match args.command {
        IdentityCommand::Init(a) => init(a),
        IdentityCommand::Token(a) => token(a),
        IdentityCommand::RotateIssuer(a) => rotate(a),
    }
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn when(t: SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

fn init(a: InitArgs) -> anyhow::Result<()> {
    let anchor = match (&a.anchor_cert, &a.anchor_key) {
        (Some(c), Some(k)) => Some((read(c)?, read(k)?)),
        _ => None,
    };
    let opts = InitOptions {
        trust_domain: a.trust_domain.clone(),
        anchor_lifetime: a.anchor_lifetime,
        issuer_lifetime: a.issuer_lifetime,
        force: a.force,
        anchor,
    };
    let out = weft_identity::init(&a.out, &opts)?;
    let dir = IdentityDir::new(&a.out);
    println!("wrote identity directory {}", a.out.display());
    println!(
        "  {}  trust anchor, valid until {}",
        dir.ca_crt().display(),
        when(out.anchor_not_after)
    );
    println!(
        "  {}  trust anchor key (only needed to mint issuers)",
        dir.ca_key().display()
    );
    println!(
        "  {}  issuer, valid until {}",
        dir.issuer_crt().display(),
        when(out.issuer_not_after)
    );
    println!("  {}  issuer key", dir.issuer_key().display());
    println!("  {}  file-mode token key", dir.token_key().display());
    println!(
        "controller identity: {}",
        weft_identity::controller_identity(&a.trust_domain)
    );
    Ok(())
}

fn token(a: TokenArgs) -> anyhow::Result<()> {
    let dir = IdentityDir::new(&a.identity_dir);
    let key = dir.load_token_key()?;
    let token = weft_identity::mint_token(&key, &a.namespace, &a.serviceaccount, a.ttl)?;
    match a.out {
        Some(path) => {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&path)
                .with_context(|| format!("writing {}", path.display()))?;
            writeln!(f, "{token}").with_context(|| format!("writing {}", path.display()))?;
            eprintln!(
                "wrote a token for {}/{} to {} (valid for {})",
                a.namespace,
                a.serviceaccount,
                path.display(),
                weft_identity::format_duration(a.ttl)
            );
        }
        None => println!("{token}"),
    }
    Ok(())
}

fn rotate(a: RotateArgs) -> anyhow::Result<()> {
    let not_after =
        weft_identity::rotate_issuer(&a.identity_dir, &a.trust_domain, a.issuer_lifetime)?;
    println!(
        "wrote a new issuer to {}, valid until {}",
        IdentityDir::new(&a.identity_dir).issuer_crt().display(),
        when(not_after)
    );
    Ok(())
}
