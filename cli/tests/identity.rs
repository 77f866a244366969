//! `weft identity` as a user runs it: the real binary, real files.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::os::unix::fs::PermissionsExt;
use std::process::Output;
use weft_test_support::command::{self, describe};

fn weft(args: &[&str]) -> Output {
    command::run(env!("CARGO_BIN_EXE_weft"), args).unwrap()
}

#[test]
fn init_then_token_then_rotate() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("id");
    let d = dir.to_str().unwrap();

    let out = weft(&["identity", "init", "--out", d]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ca.crt"));
    let id = weft_identity::IdentityDir::new(&dir);
    let issuer = id.load_issuer().unwrap();
    for key in [id.ca_key(), id.issuer_key(), id.token_key()] {
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", key.display());
    }

    // A second init refuses, names the file, and leaves it alone.
    let before = std::fs::read(id.issuer_crt()).unwrap();
    let out = weft(&["identity", "init", "--out", d]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already exists"),
        "{}",
        describe(&out)
    );
    assert_eq!(std::fs::read(id.issuer_crt()).unwrap(), before);

    // Tokens verify with the directory's key.
    let out = weft(&[
        "identity",
        "token",
        "--namespace",
        "emojivoto",
        "--serviceaccount",
        "web",
        "--identity-dir",
        d,
        "--ttl",
        "1h",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let token = String::from_utf8(out.stdout).unwrap();
    let key = id.load_token_key().unwrap();
    assert_eq!(
        weft_identity::verify_token(&key, &token).unwrap(),
        ("emojivoto".to_owned(), "web".to_owned())
    );
    let file = tmp.path().join("web.token");
    let out = weft(&[
        "identity",
        "token",
        "-n",
        "emojivoto",
        "--serviceaccount",
        "web",
        "--identity-dir",
        d,
        "--out",
        file.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let from_file = std::fs::read_to_string(&file).unwrap();
    weft_identity::verify_token(&key, &from_file).unwrap();

    // Invalid names are refused with exit 1.
    let out = weft(&[
        "identity",
        "token",
        "-n",
        "Bad_NS",
        "--serviceaccount",
        "web",
        "--identity-dir",
        d,
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));

    // Rotation replaces the issuer; it still chains to the anchor.
    let out = weft(&["identity", "rotate-issuer", "--identity-dir", d]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let rotated = id.load_issuer().unwrap();
    assert_ne!(rotated.chain()[0], issuer.chain()[0]);

    // Bring your own anchor.
    let anchor =
        weft_identity::generate_anchor("example.org", std::time::Duration::from_secs(86400))
            .unwrap();
    let (ac, ak) = (tmp.path().join("root.crt"), tmp.path().join("root.key"));
    std::fs::write(&ac, &anchor.cert_pem).unwrap();
    std::fs::write(&ak, &anchor.key_pem).unwrap();
    let byo = tmp.path().join("byo");
    let out = weft(&[
        "identity",
        "init",
        "--out",
        byo.to_str().unwrap(),
        "--trust-domain",
        "example.org",
        "--anchor-cert",
        ac.to_str().unwrap(),
        "--anchor-key",
        ak.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let byo = weft_identity::IdentityDir::new(&byo);
    assert_eq!(byo.read_trust_anchors_pem().unwrap(), anchor.cert_pem);
    byo.load_issuer().unwrap();

    // --force overwrites everything.
    let out = weft(&["identity", "init", "--out", d, "--force"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(weft_identity::verify_token(&id.load_token_key().unwrap(), &token).is_err());
}

#[test]
fn usage_errors_exit_2_and_help_is_useful() {
    for args in [
        &["identity"][..],
        &["identity", "init"],
        &["identity", "token", "--namespace", "ns"],
        &[
            "identity",
            "init",
            "--out",
            "/tmp/x",
            "--issuer-lifetime",
            "soon",
        ],
    ] {
        let out = weft(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", describe(&out));
    }
    let out = weft(&["identity", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for word in [
        "init",
        "token",
        "rotate-issuer",
        "weft-controller",
        "docs/identity.md",
    ] {
        assert!(help.contains(word), "help lacks {word}:\n{help}");
    }
    let out = weft(&["identity", "init", "--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    for word in [
        "ca.crt",
        "issuer.key",
        "token.key",
        "--force",
        "--trust-domain",
    ] {
        assert!(help.contains(word), "init help lacks {word}:\n{help}");
    }
}

#[test]
fn missing_token_key_is_a_clear_failure() {
    let tmp = tempfile::tempdir().unwrap();
    let out = weft(&[
        "identity",
        "token",
        "-n",
        "ns",
        "--serviceaccount",
        "sa",
        "--identity-dir",
        tmp.path().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("token.key"),
        "{}",
        describe(&out)
    );
}
