//! `weft-proxy init`: the iptables redirect the injected init container
//! installs in a pod's network namespace.
//!
//! Two NAT chains, applied atomically with `iptables-restore` and safe to
//! apply again (the chains are rebuilt, the jumps into them added once):
//!
//! ```text
//! PREROUTING ─► WEFT_PROXY_INBOUND : skipped ports → RETURN, else REDIRECT → inbound port
//! OUTPUT     ─► WEFT_PROXY_OUTPUT  : proxy's uid → RETURN (no loops), loopback → RETURN,
//!                                    skipped ports / subnets → RETURN, else REDIRECT → outbound port
//! ```
//!
//! The proxy then finds each connection's real destination with
//! `SO_ORIGINAL_DST`.

use std::process::Command;

/// Chain for inbound redirection (from PREROUTING).
pub const INBOUND_CHAIN: &str = "WEFT_PROXY_INBOUND";
/// Chain for outbound redirection (from OUTPUT).
pub const OUTPUT_CHAIN: &str = "WEFT_PROXY_OUTPUT";

/// What to redirect, and what to leave alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitConfig {
    /// The proxy's inbound listener port.
    pub inbound_port: u16,
    /// The proxy's outbound listener port.
    pub outbound_port: u16,
    /// The uid the proxy runs as: its own connections are never redirected.
    pub proxy_uid: u32,
    /// Inbound destination ports not redirected (e.g. the admin port).
    pub skip_inbound_ports: Vec<PortRange>,
    /// Outbound destination ports not redirected.
    pub skip_outbound_ports: Vec<PortRange>,
    /// Outbound destination subnets not redirected (CIDR).
    pub skip_subnets: Vec<String>,
}

/// A port or an inclusive range of ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange(pub u16, pub u16);

/// Why the rules could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// A flag's value is unusable.
    #[error("invalid {flag} {value:?}: {reason}")]
    Invalid {
        /// The flag.
        flag: &'static str,
        /// Its value.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// iptables could not be run.
    #[error("cannot run {command}: {source} (is iptables installed, and are we root in the pod's network namespace?)")]
    Spawn {
        /// The command.
        command: String,
        /// The error.
        source: std::io::Error,
    },
    /// iptables refused the rules.
    #[error("{command} failed ({status}): {stderr}")]
    Failed {
        /// The command.
        command: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it printed.
        stderr: String,
    },
}

// === impl PortRange ===

impl PortRange {
    /// Parses `a,b,c-d` into ranges.
    pub fn parse_list(flag: &'static str, value: &str) -> Result<Vec<Self>, InitError> {
        let invalid = |reason: &str| InitError::Invalid {
            flag,
            value: value.to_string(),
            reason: reason.to_string(),
        };
        let port = |s: &str| {
            s.trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| invalid("expected ports 1-65535, e.g. 4191,9000-9010"))
        };
        value
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|item| match item.split_once('-') {
                Some((lo, hi)) => {
                    let (lo, hi) = (port(lo)?, port(hi)?);
                    if lo > hi {
                        return Err(invalid("a range is reversed"));
                    }
                    Ok(PortRange(lo, hi))
                }
                None => port(item).map(|p| PortRange(p, p)),
            })
            .collect()
    }

    fn to_iptables(self) -> String {
        if self.0 == self.1 {
            self.0.to_string()
        } else {
            format!("{}:{}", self.0, self.1)
        }
    }
}

// === impl InitConfig ===

impl InitConfig {
    /// The `iptables-restore` input that (re)builds both chains.
    pub fn ruleset(&self) -> String {
        let mut r = String::from("*nat\n");
        r.push_str(&format!(
            ":{INBOUND_CHAIN} - [0:0]\n:{OUTPUT_CHAIN} - [0:0]\n"
        ));
        for p in &self.skip_inbound_ports {
            r.push_str(&format!(
                "-A {INBOUND_CHAIN} -p tcp --dport {} -j RETURN\n",
                p.to_iptables()
            ));
        }
        r.push_str(&format!(
            "-A {INBOUND_CHAIN} -p tcp -j REDIRECT --to-ports {}\n",
            self.inbound_port
        ));
        r.push_str(&format!(
            "-A {OUTPUT_CHAIN} -m owner --uid-owner {} -j RETURN\n",
            self.proxy_uid
        ));
        r.push_str(&format!("-A {OUTPUT_CHAIN} -o lo -j RETURN\n"));
        for p in &self.skip_outbound_ports {
            r.push_str(&format!(
                "-A {OUTPUT_CHAIN} -p tcp --dport {} -j RETURN\n",
                p.to_iptables()
            ));
        }
        for net in &self.skip_subnets {
            r.push_str(&format!("-A {OUTPUT_CHAIN} -d {net} -j RETURN\n"));
        }
        r.push_str(&format!(
            "-A {OUTPUT_CHAIN} -p tcp -j REDIRECT --to-ports {}\n",
            self.outbound_port
        ));
        r.push_str("COMMIT\n");
        r
    }

    /// Installs the rules in the current network namespace.
    pub fn apply(&self) -> Result<(), InitError> {
        for net in &self.skip_subnets {
            validate_cidr(net)?;
        }
        run("iptables-restore", &["--noflush"], Some(&self.ruleset()))?;
        for (chain, from) in [(INBOUND_CHAIN, "PREROUTING"), (OUTPUT_CHAIN, "OUTPUT")] {
            let jump = ["-t", "nat", "-C", from, "-p", "tcp", "-j", chain];
            if run("iptables", &jump, None).is_err() {
                let add = ["-t", "nat", "-A", from, "-p", "tcp", "-j", chain];
                run("iptables", &add, None)?;
            }
        }
        Ok(())
    }
}

fn validate_cidr(net: &str) -> Result<(), InitError> {
    let invalid = |reason: &str| InitError::Invalid {
        flag: "--skip-subnets",
        value: net.to_string(),
        reason: reason.to_string(),
    };
    let (ip, len) = net
        .split_once('/')
        .ok_or_else(|| invalid("expected CIDR, e.g. 10.0.0.0/8"))?;
    let ip: std::net::IpAddr = ip.parse().map_err(|_| invalid("not an IP address"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    match len.parse::<u8>() {
        Ok(l) if l <= max => Ok(()),
        _ => Err(invalid("bad prefix length")),
    }
}

fn run(cmd: &str, args: &[&str], stdin: Option<&str>) -> Result<(), InitError> {
    use std::io::Write;
    let command = format!("{cmd} {}", args.join(" "));
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|source| InitError::Spawn {
            command: command.clone(),
            source,
        })?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes())
            .map_err(|source| InitError::Spawn {
                command: command.clone(),
                source,
            })?;
    }
    let out = child
        .wait_with_output()
        .map_err(|source| InitError::Spawn {
            command: command.clone(),
            source,
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(InitError::Failed {
            command,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruleset_skips_before_redirecting() {
        let cfg = InitConfig {
            inbound_port: 4143,
            outbound_port: 4140,
            proxy_uid: 2102,
            skip_inbound_ports: PortRange::parse_list("--skip-inbound-ports", "4191, 9000-9010")
                .unwrap(),
            skip_outbound_ports: PortRange::parse_list("--skip-outbound-ports", "443").unwrap(),
            skip_subnets: vec!["10.96.0.0/12".into()],
        };
        let r = cfg.ruleset();
        let lines: Vec<&str> = r.lines().collect();
        assert_eq!(lines[0], "*nat");
        assert!(r.contains("-A WEFT_PROXY_INBOUND -p tcp --dport 9000:9010 -j RETURN"));
        assert!(r.contains("-A WEFT_PROXY_OUTPUT -m owner --uid-owner 2102 -j RETURN"));
        assert!(r.contains("-A WEFT_PROXY_OUTPUT -d 10.96.0.0/12 -j RETURN"));
        // Every RETURN comes before the chain's REDIRECT.
        for chain in [INBOUND_CHAIN, OUTPUT_CHAIN] {
            let redirect = lines
                .iter()
                .position(|l| l.starts_with(&format!("-A {chain}")) && l.contains("REDIRECT"))
                .unwrap();
            let last_return = lines
                .iter()
                .rposition(|l| l.starts_with(&format!("-A {chain}")) && l.contains("RETURN"))
                .unwrap();
            assert!(last_return < redirect, "{chain}:\n{r}");
        }
        assert_eq!(lines.last(), Some(&"COMMIT"));
    }

    #[test]
    fn bad_flags_are_named() {
        let e = PortRange::parse_list("--skip-inbound-ports", "80,http").unwrap_err();
        assert!(e.to_string().contains("--skip-inbound-ports"), "{e}");
        assert!(PortRange::parse_list("--skip-outbound-ports", "9-1").is_err());
        assert!(validate_cidr("10.0.0.0").is_err());
        assert!(validate_cidr("10.0.0.0/33").is_err());
        assert!(validate_cidr("fd00::/8").is_ok());
    }
}
