//! Command-line programs run as a user runs them: the real binary, its
//! exit status and its output, for tests of the `weft` CLI.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Runs `bin` with `args` to completion and captures its output (stdin
/// is empty, as for a command run without input).
pub fn run(bin: impl AsRef<Path>, args: &[&str]) -> std::io::Result<Output> {
    Command::new(bin.as_ref()).args(args).output()
}

/// Like [`run`], with `input` written to the program's stdin (then
/// closed), for programs that read a file named `-` from stdin.
pub fn run_with_stdin(
    bin: impl AsRef<Path>,
    args: &[&str],
    input: &str,
) -> std::io::Result<Output> {
    let mut child = Command::new(bin.as_ref())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| std::io::Error::other("no stdin pipe"))?;
    // Written from another thread while the output is read, so a child
    // that prints before it has read everything cannot deadlock on full
    // pipes. A child may exit without reading its input (a usage error):
    // the broken pipe that follows is its answer, not the test's failure.
    let input = input.as_bytes().to_vec();
    let writer = std::thread::spawn(move || match stdin.write_all(&input) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    });
    let output = child.wait_with_output()?;
    writer
        .join()
        .map_err(|_| std::io::Error::other("stdin writer panicked"))??;
    Ok(output)
}

/// Exit status, stdout and stderr of a run, as one text for assertion
/// messages: a failed assertion on a run shows everything it said.
pub fn describe(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
